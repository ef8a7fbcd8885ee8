package bridge

import (
	"encoding/binary"

	"github.com/sluicenet/sluice/internal/csum"
)

// Answers to a denied flow, built as the addressed peer would send them
// (its address and port as the source, the frame's destination MAC as the
// source MAC), so the sandbox's kernel matches them to its socket.
const (
	replyTTL = 64
	// icmpQuoteV4 bounds the original datagram an ICMP error quotes: RFC
	// 1812 section 4.3.2.3 lets a router quote as much as keeps the error
	// within 576 bytes (576 - 20 - 8).
	icmpQuoteV4 = 548
	// icmpQuoteV6 keeps an ICMPv6 error within the IPv6 minimum MTU, as
	// RFC 4443 section 2.4(c) asks (1280 - 40 - 8).
	icmpQuoteV6 = 1232

	icmpDestUnreach    = 3 // ICMP type, RFC 792
	icmpPortUnreach    = 3 // its code
	icmp6DestUnreach   = 1 // ICMPv6 type, RFC 4443
	icmp6PortUnreach   = 4 // its code
	ipv4DontFragment   = 0x4000
	ipv4HeaderLen      = 20
	ipv6HeaderLen      = 40
	tcpHeaderLen       = 20
	icmpErrorHeaderLen = 8
)

// refusal builds the answer to a frame of a denied flow: a RST for TCP (none
// for a RST, which is never answered, RFC 9293 section 3.10.7.1), an ICMP or
// ICMPv6 port unreachable for UDP. head holds the frame's headers (and for
// UDP as much of the datagram as was read); p is its parse. It returns nil
// when there is nothing to send.
func refusal(head []byte, p packetInfo) []byte {
	if p.kind != flowPacket {
		return nil
	}
	switch p.flow.Proto {
	case TCP:
		if p.tcpFlags&tcpRST != 0 {
			return nil
		}
		return tcpReset(head, p)
	case UDP:
		return portUnreachable(head, p)
	}
	return nil
}

// linkReply starts a reply frame: the original link header (VLAN tags
// included) with the MAC addresses swapped.
func linkReply(head []byte, p packetInfo, size int) []byte {
	out := make([]byte, p.l3, p.l3+size)
	copy(out, head[:p.l3])
	copy(out[0:6], head[6:12])
	copy(out[6:12], head[0:6])
	return out
}

// ipReply appends an IP header from the original destination to its source
// carrying plen bytes of protocol proto.
func ipReply(out, head []byte, p packetInfo, proto uint8, plen int) []byte {
	ip := head[p.l3:]
	if p.ipv6 {
		var h [ipv6HeaderLen]byte
		h[0] = 0x60
		binary.BigEndian.PutUint16(h[4:], uint16(plen))
		h[6] = proto
		h[7] = replyTTL
		copy(h[8:24], ip[24:40])
		copy(h[24:40], ip[8:24])
		return append(out, h[:]...)
	}
	var h [ipv4HeaderLen]byte
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(ipv4HeaderLen+plen))
	binary.BigEndian.PutUint16(h[6:], ipv4DontFragment)
	h[8] = replyTTL
	h[9] = proto
	copy(h[12:16], ip[16:20])
	copy(h[16:20], ip[12:16])
	binary.BigEndian.PutUint16(h[10:], csum.IPv4Header(h[:]))
	return append(out, h[:]...)
}

// transportChecksum returns the checksum of the transport segment seg of a
// reply whose IP header is ip.
func transportChecksum(ip []byte, ipv6 bool, proto uint8, seg []byte) uint16 {
	var pseudo uint16
	if ipv6 {
		pseudo = csum.PseudoV6(proto, ip[8:24], ip[24:40], uint32(len(seg)))
	} else {
		pseudo = csum.PseudoV4(proto, ip[12:16], ip[16:20], uint16(len(seg)))
	}
	return csum.Finish(csum.Sum(seg, pseudo))
}

// tcpReset builds the RST that refuses a TCP segment (RFC 9293 section
// 3.10.7.1, "If the state is CLOSED"): a segment with an ACK is answered
// with <SEQ=SEG.ACK><CTL=RST>, one without with
// <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>, where SYN and FIN count in
// SEG.LEN.
func tcpReset(head []byte, p packetInfo) []byte {
	in := head[p.l4:]
	var t [tcpHeaderLen]byte
	copy(t[0:2], in[2:4])
	copy(t[2:4], in[0:2])
	if p.tcpFlags&tcpACK != 0 {
		copy(t[4:8], in[8:12])
		t[13] = tcpRST
	} else {
		seglen := uint32(p.payload)
		if p.tcpFlags&tcpSYN != 0 {
			seglen++
		}
		if p.tcpFlags&tcpFIN != 0 {
			seglen++
		}
		binary.BigEndian.PutUint32(t[8:], binary.BigEndian.Uint32(in[4:])+seglen)
		t[13] = tcpRST | tcpACK
	}
	t[12] = (tcpHeaderLen / 4) << 4
	out := linkReply(head, p, ipv6HeaderLen+tcpHeaderLen)
	out = ipReply(out, head, p, protoTCP, tcpHeaderLen)
	ip := out[p.l3:]
	binary.BigEndian.PutUint16(t[16:], transportChecksum(ip, p.ipv6, protoTCP, t[:]))
	return append(out, t[:]...)
}

// portUnreachable builds the ICMP (RFC 792) or ICMPv6 (RFC 4443) port
// unreachable that refuses a UDP datagram, quoting the datagram from its IP
// header on, as much as head holds and the limits allow.
func portUnreachable(head []byte, p packetInfo) []byte {
	quote := head[p.l3:]
	// The IP header's length, not the frame's: a short frame padded to
	// the Ethernet minimum must not quote its padding.
	ipLen := p.payload + (p.l4 - p.l3) + 8
	quote = quote[:min(len(quote), ipLen)]
	limit, proto, typ, code := icmpQuoteV4, uint8(protoICMP), uint8(icmpDestUnreach), uint8(icmpPortUnreach)
	if p.ipv6 {
		limit, proto, typ, code = icmpQuoteV6, protoICMPv6, icmp6DestUnreach, icmp6PortUnreach
	}
	quote = quote[:min(len(quote), limit)]
	msg := make([]byte, icmpErrorHeaderLen+len(quote))
	msg[0], msg[1] = typ, code
	copy(msg[icmpErrorHeaderLen:], quote)
	out := linkReply(head, p, ipv6HeaderLen+len(msg))
	out = ipReply(out, head, p, proto, len(msg))
	if p.ipv6 {
		binary.BigEndian.PutUint16(msg[2:], transportChecksum(out[p.l3:], true, protoICMPv6, msg))
	} else {
		// ICMP's checksum has no pseudo-header.
		binary.BigEndian.PutUint16(msg[2:], csum.Finish(csum.Sum(msg, 0)))
	}
	return append(out, msg...)
}
