package bridge

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Ethernet and IP constants this package parses and builds.
const (
	ethHeaderLen  = 14
	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd
	etherTypeVLAN = 0x8100
	etherTypeQinQ = 0x88a8

	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
)

// Direction says which way a frame crosses the bridge.
type Direction uint8

const (
	// Egress frames come from side A (the sandbox) and go to side B.
	Egress Direction = iota
	// Ingress frames come from side B (the uplink) and go to side A.
	Ingress
)

func (d Direction) String() string {
	if d == Egress {
		return "out"
	}
	return "in"
}

// Proto is a transport protocol the flow table tracks.
type Proto uint8

// Transport protocols of a Flow.
const (
	TCP Proto = protoTCP
	UDP Proto = protoUDP
)

func (p Proto) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return fmt.Sprintf("proto-%d", uint8(p))
}

// Flow is a TCP or UDP flow as the sandbox opened it: Src is the sandbox's
// end, Dst the peer it addressed.
type Flow struct {
	Proto Proto
	Src   netip.AddrPort
	Dst   netip.AddrPort
}

// Reverse returns the flow as seen from the other end.
func (f Flow) Reverse() Flow { return Flow{Proto: f.Proto, Src: f.Dst, Dst: f.Src} }

func (f Flow) String() string { return fmt.Sprintf("%v %v -> %v", f.Proto, f.Src, f.Dst) }

// packetInfo is what the bridge reads from a frame's headers.
type packetInfo struct {
	flow     Flow
	hasFlow  bool // a TCP or UDP packet with ports (not a later fragment)
	l3, l4   int  // offsets of the IP and transport headers in the frame
	ipv6     bool
	tcpFlags uint8
	// payload is the transport payload length (TCP/UDP), from the IP
	// header's lengths rather than the frame's.
	payload int
}

// TCP flags.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// parsePacket reads the flow of an Ethernet frame from its first bytes
// (head: at least the link, IP and transport headers when the frame has
// them). It never fails: a frame it cannot read (not IP, truncated, an IPv6
// extension header chain it does not walk) has no flow and is forwarded as
// is.
func parsePacket(head []byte) (p packetInfo) {
	if len(head) < ethHeaderLen {
		return p
	}
	et := binary.BigEndian.Uint16(head[12:])
	off := ethHeaderLen
	for (et == etherTypeVLAN || et == etherTypeQinQ) && len(head) >= off+4 {
		et = binary.BigEndian.Uint16(head[off+2:])
		off += 4
	}
	p.l3 = off
	b := head[off:]
	var proto uint8
	var src, dst netip.Addr
	switch et {
	case etherTypeIPv4:
		if len(b) < 20 || b[0]>>4 != 4 {
			return p
		}
		ihl := int(b[0]&0xf) * 4
		total := int(binary.BigEndian.Uint16(b[2:]))
		if ihl < 20 || len(b) < ihl || total < ihl {
			return p
		}
		// Fragments after the first carry no transport header.
		if binary.BigEndian.Uint16(b[6:])&0x1fff != 0 {
			return p
		}
		proto = b[9]
		src = netip.AddrFrom4([4]byte(b[12:16]))
		dst = netip.AddrFrom4([4]byte(b[16:20]))
		p.l4 = off + ihl
		p.payload = total - ihl
	case etherTypeIPv6:
		if len(b) < 40 || b[0]>>4 != 6 {
			return p
		}
		// Only a transport header right after the fixed header is
		// read; extension headers are rare in a sandbox's traffic and
		// such packets pass without a flow.
		proto = b[6]
		src = netip.AddrFrom16([16]byte(b[8:24]))
		dst = netip.AddrFrom16([16]byte(b[24:40]))
		p.l4 = off + 40
		p.ipv6 = true
		p.payload = int(binary.BigEndian.Uint16(b[4:]))
	default:
		return p
	}
	l4 := head[p.l4:]
	switch proto {
	case protoTCP:
		if len(l4) < 20 {
			return p
		}
		doff := int(l4[12]>>4) * 4
		if doff < 20 || doff > p.payload {
			return p
		}
		p.tcpFlags = l4[13]
		p.payload -= doff
	case protoUDP:
		if len(l4) < 8 || p.payload < 8 {
			return p
		}
		p.payload -= 8
	default:
		return p
	}
	p.flow = Flow{
		Proto: Proto(proto),
		Src:   netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:])),
		Dst:   netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:])),
	}
	p.hasFlow = true
	return p
}
