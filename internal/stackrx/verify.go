package stackrx

import (
	"encoding/binary"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/csum"
)

// verdict is what verifyFrame concluded about a frame's checksums.
type verdict uint8

const (
	// verified: the IPv4 header checksum (if any) and the TCP or UDP
	// checksum are right.
	verified verdict = iota
	// badChecksum: one of them is wrong: drop the frame.
	badChecksum
	// notVerified: nothing this receiver can check (not TCP or UDP, whose
	// checksums the stack verifies itself whatever the capability: ICMP,
	// IGMP, ARP), or nothing it can check per frame (IP fragments, whose
	// transport checksum covers the whole datagram; IPv6 routing and
	// other extension headers; VLAN tags), or headers too broken to find
	// the checksum (the stack's own length checks still drop those).
	notVerified
)

// headMax is how much of a frame verifyFrame gathers to parse headers: an
// Ethernet header, a VLAN tag, a 60-byte IPv4 header or an IPv6 header with
// room for hop-by-hop and destination options, and 8 bytes of transport
// header to reach a UDP checksum.
const headMax = 256

// verifyFrame checks the checksums of the frame held in bufs (length bytes
// in all), behind an Ethernet header when eth is set. It reads the frame
// once, in place, across buffers.
func verifyFrame(bufs []dataplane.Buffer, length int, eth bool) verdict {
	var head [headMax]byte
	h := gather(head[:min(length, headMax)], bufs)
	l3 := 0
	if eth {
		if len(h) < 14 {
			return notVerified
		}
		switch binary.BigEndian.Uint16(h[12:]) {
		case 0x0800, 0x86dd:
		default:
			return notVerified
		}
		l3 = 14
	}
	if len(h) <= l3 {
		return notVerified
	}
	ip := h[l3:]
	var (
		l4, l4len int
		proto     uint8
		pseudo    func(l4len int) uint16
	)
	switch ip[0] >> 4 {
	case 4:
		if len(ip) < 20 {
			return notVerified
		}
		ihl := int(ip[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(ip[2:]))
		if ihl < 20 || ihl > len(ip) || total < ihl || l3+total > length {
			return notVerified
		}
		// The receiver takes the IPv4 header checksum over too: the
		// capability that lets the stack skip transport checksums
		// makes it skip this one as well (ipv4 parseAndValidate).
		if csum.Sum(ip[:ihl], 0) != 0xffff {
			return badChecksum
		}
		if binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 {
			return notVerified // a fragment
		}
		proto, l4, l4len = ip[9], l3+ihl, total-ihl
		src, dst := ip[12:16], ip[16:20]
		pseudo = func(n int) uint16 { return csum.PseudoV4(proto, src, dst, uint16(n)) }
	case 6:
		if len(ip) < 40 {
			return notVerified
		}
		plen := int(binary.BigEndian.Uint16(ip[4:]))
		if plen == 0 || l3+40+plen > length {
			return notVerified // a jumbogram, or truncated
		}
		next, off := ip[6], 40
		for next == 0 || next == 60 {
			// Hop-by-hop and destination options change nothing in
			// the pseudo-header; walk them.
			if off+8 > len(ip) {
				return notVerified
			}
			n := (int(ip[off+1]) + 1) * 8
			next, off = ip[off], off+n
			if off > 40+plen {
				return notVerified
			}
		}
		proto, l4, l4len = next, l3+off, 40+plen-off
		src, dst := ip[8:24], ip[24:40]
		pseudo = func(n int) uint16 { return csum.PseudoV6(proto, src, dst, uint32(n)) }
	default:
		return notVerified
	}
	switch proto {
	case 6:
		if l4len < 20 {
			return notVerified
		}
	case 17:
		if l4len < 8 || l4+8 > len(h) {
			return notVerified
		}
		if binary.BigEndian.Uint16(h[l4+6:]) == 0 {
			if ip[0]>>4 == 4 {
				return verified // RFC 768: no checksum was computed
			}
			return badChecksum // RFC 8200 section 8.1: mandatory over IPv6
		}
	default:
		return notVerified
	}
	if sumChain(bufs, l4, l4len, pseudo(l4len)) != 0xffff {
		return badChecksum
	}
	return verified
}

// gather copies the start of the frame in bufs into dst and returns it.
func gather(dst []byte, bufs []dataplane.Buffer) []byte {
	n := 0
	for _, b := range bufs {
		if n == len(dst) {
			break
		}
		n += copy(dst[n:], b.Data)
	}
	return dst[:n]
}

// sumChain returns the one's complement sum of n bytes of the frame in bufs
// from offset from, added to initial, as if the bytes were contiguous.
func sumChain(bufs []dataplane.Buffer, from, n int, initial uint16) uint16 {
	s := initial
	pos := 0 // bytes summed so far, whose parity places the next piece
	for _, b := range bufs {
		d := b.Data
		if from >= len(d) {
			from -= len(d)
			continue
		}
		d = d[from:]
		from = 0
		if len(d) > n-pos {
			d = d[:n-pos]
		}
		s = csum.Add(s, csum.AtOffset(csum.Sum(d, 0), pos))
		pos += len(d)
		if pos == n {
			break
		}
	}
	return s
}
