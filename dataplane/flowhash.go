package dataplane

import "encoding/binary"

// Ethernet types FlowHash understands.
const (
	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd
	etherTypeVLAN = 0x8100
	etherTypeQinQ = 0x88a8
)

// FlowHash returns a hash of frame's flow: the IP addresses, protocol and, for
// TCP and UDP, the ports. It is symmetric (both directions of a flow hash
// alike) so that a flow's inbound and outbound frames use the same channel.
// withEth says whether frame starts with an Ethernet header (as on AF_PACKET
// SOCK_RAW) or directly with the IP header (TUN). Frames it cannot parse hash
// to seed's mix of nothing, so they all go to one processor and keep their
// order.
func FlowHash(frame []byte, withEth bool, seed uint32) uint32 {
	b := frame
	if withEth {
		if len(b) < 14 {
			return mix(seed)
		}
		et := binary.BigEndian.Uint16(b[12:])
		b = b[14:]
		for (et == etherTypeVLAN || et == etherTypeQinQ) && len(b) >= 4 {
			et = binary.BigEndian.Uint16(b[2:])
			b = b[4:]
		}
		if et != etherTypeIPv4 && et != etherTypeIPv6 {
			return mix(seed ^ uint32(et))
		}
	}
	if len(b) < 1 {
		return mix(seed)
	}
	var a, c uint32
	var proto uint8
	var l4 []byte
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return mix(seed)
		}
		ihl := int(b[0]&0xf) * 4
		a = binary.BigEndian.Uint32(b[12:])
		c = binary.BigEndian.Uint32(b[16:])
		proto = b[9]
		// Fragments after the first carry no ports.
		if binary.BigEndian.Uint16(b[6:])&0x1fff == 0 && ihl >= 20 && len(b) >= ihl {
			l4 = b[ihl:]
		}
	case 6:
		if len(b) < 40 {
			return mix(seed)
		}
		for i := 8; i < 24; i += 4 {
			a ^= binary.BigEndian.Uint32(b[i:])
			c ^= binary.BigEndian.Uint32(b[i+16:])
		}
		proto = b[6]
		l4 = b[40:]
	default:
		return mix(seed)
	}
	var ports uint32
	if (proto == 6 || proto == 17) && len(l4) >= 4 {
		// Adding the two ports keeps the hash symmetric.
		ports = uint32(binary.BigEndian.Uint16(l4)) + uint32(binary.BigEndian.Uint16(l4[2:]))
	}
	// a+c and a^c are both symmetric in (a, c).
	return mix(seed ^ (a + c) ^ mix(a^c) ^ ports<<8 ^ uint32(proto))
}

// mix is the 32-bit finaliser of MurmurHash3: cheap, and every input bit
// affects every output bit, so hash%n spreads flows over n channels.
func mix(h uint32) uint32 {
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}
