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

// Proto is the IP protocol of a Flow.
type Proto uint8

// Protocols of a Flow.
const (
	ICMP   Proto = protoICMP
	TCP    Proto = protoTCP
	UDP    Proto = protoUDP
	ICMPv6 Proto = protoICMPv6
)

// String returns the name the egress policy knows the protocol by: tcp and
// udp, which port rules match, and icmp, icmp6 or ip-N for the others,
// which only address rules match.
func (p Proto) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	case ICMP:
		return "icmp"
	case ICMPv6:
		return "icmp6"
	}
	return fmt.Sprintf("ip-%d", uint8(p))
}

// Flow is a flow as the sandbox opened it: Src is the sandbox's end, Dst
// the peer it addressed. TCP and UDP flows have ports; flows of other
// protocols (ICMP echo, GRE, SCTP...) are between addresses, with port 0.
type Flow struct {
	Proto Proto
	Src   netip.AddrPort
	Dst   netip.AddrPort
}

// Reverse returns the flow as seen from the other end.
func (f Flow) Reverse() Flow { return Flow{Proto: f.Proto, Src: f.Dst, Dst: f.Src} }

func (f Flow) String() string { return fmt.Sprintf("%v %v -> %v", f.Proto, f.Src, f.Dst) }

// packetKind is how the policy treats a frame.
type packetKind uint8

const (
	// notIP frames (ARP, anything not IPv4 or IPv6) pass: the sandbox
	// needs ARP to reach its router, and nothing else leaves the segment.
	notIP packetKind = iota
	// flowPacket is a packet of a Flow: TCP or UDP with ports, or another
	// protocol between two addresses (an ICMP echo request among them).
	flowPacket
	// control packets pass without a flow: ICMP errors and echo replies,
	// IPv6 neighbour discovery and MLD, which belong to flows or to the
	// link, and later fragments, whose first fragment was decided.
	control
	// unreadable packets claim TCP or UDP (or an IPv6 extension header
	// chain) that cannot be read from the frame's first buffer: the
	// policy cannot decide them, so they are dropped rather than let
	// through undecided (a tiny first fragment, RFC 1858, or a padded
	// header chain would otherwise slip past a deny).
	unreadable
	// echoRequest is an ICMP or ICMPv6 echo request: a flow going out,
	// unsolicited coming in.
	echoRequest
)

// packetInfo is what the bridge reads from a frame's headers.
type packetInfo struct {
	kind     packetKind
	flow     Flow       // valid for flowPacket and echoRequest
	src      netip.Addr // the IP source, when the IP header was read
	l3, l4   int        // offsets of the IP and transport headers in the frame
	ipv6     bool
	tcpFlags uint8
	// payload is the transport payload length (TCP/UDP), from the IP
	// header's lengths rather than the frame's.
	payload int
}

// hasFlow reports whether p belongs to a flow the policy decides.
func (p packetInfo) hasFlow() bool { return p.kind == flowPacket || p.kind == echoRequest }

// maxExtHeaders bounds the IPv6 extension headers parsePacket walks.
const maxExtHeaders = 8

// TCP flags.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// parsePacket reads an Ethernet frame's headers from its first bytes
// (head: the frame's first buffer, which holds the link, IP and transport
// headers of any ordinary packet). It never fails: what it cannot read it
// classifies (see packetKind).
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
		p.kind = unreadable
		if len(b) < 20 || b[0]>>4 != 4 {
			return p
		}
		ihl := int(b[0]&0xf) * 4
		total := int(binary.BigEndian.Uint16(b[2:]))
		if ihl < 20 || len(b) < ihl || total < ihl {
			return p
		}
		proto = b[9]
		src = netip.AddrFrom4([4]byte(b[12:16]))
		dst = netip.AddrFrom4([4]byte(b[16:20]))
		p.src = src
		if binary.BigEndian.Uint16(b[6:])&0x1fff != 0 {
			// A later fragment: no transport header.
			p.kind = control
			return p
		}
		p.l4 = off + ihl
		p.payload = total - ihl
	case etherTypeIPv6:
		p.kind = unreadable
		if len(b) < 40 || b[0]>>4 != 6 {
			return p
		}
		proto = b[6]
		src = netip.AddrFrom16([16]byte(b[8:24]))
		dst = netip.AddrFrom16([16]byte(b[24:40]))
		p.src = src
		p.ipv6 = true
		p.payload = int(binary.BigEndian.Uint16(b[4:]))
		l4 := off + 40
		for range maxExtHeaders {
			switch proto {
			case 0, 43, 60: // hop-by-hop, routing, destination options (RFC 8200 section 4)
				if len(head) < l4+8 {
					return p
				}
				n := (int(head[l4+1]) + 1) * 8
				proto = head[l4]
				l4 += n
				p.payload -= n
				continue
			case 44: // fragment
				if len(head) < l4+8 {
					return p
				}
				if binary.BigEndian.Uint16(head[l4+2:])&0xfff8 != 0 {
					p.kind = control
					return p
				}
				proto = head[l4]
				l4 += 8
				p.payload -= 8
				continue
			}
			break
		}
		if proto == 0 || proto == 43 || proto == 60 || proto == 44 || p.payload < 0 || l4 > len(head) {
			return p // a chain longer than maxExtHeaders, or past the frame
		}
		p.l4 = l4
	default:
		return p
	}
	p.kind = flowPacket
	p.flow = Flow{Proto: Proto(proto), Src: netip.AddrPortFrom(src, 0), Dst: netip.AddrPortFrom(dst, 0)}
	l4 := head[p.l4:]
	switch proto {
	case protoTCP:
		if len(l4) < 20 {
			p.kind = unreadable
			return p
		}
		doff := int(l4[12]>>4) * 4
		if doff < 20 || doff > p.payload {
			p.kind = unreadable
			return p
		}
		p.tcpFlags = l4[13]
		p.payload -= doff
	case protoUDP:
		if len(l4) < 8 || p.payload < 8 {
			p.kind = unreadable
			return p
		}
		p.payload -= 8
	case protoICMP, protoICMPv6:
		if len(l4) < 1 {
			p.kind = unreadable
			return p
		}
		switch {
		case proto == protoICMP && l4[0] == 8, proto == protoICMPv6 && l4[0] == 128:
			p.kind = echoRequest
		default:
			// Errors, echo replies, neighbour discovery, MLD.
			p.kind = control
		}
		return p
	default:
		return p
	}
	p.flow.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:]))
	p.flow.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:]))
	return p
}
