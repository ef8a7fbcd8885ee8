// Package gso is software generic segmentation offload: it cuts one large TCP
// segment (or UDP datagram, for UDP_L4 / USO) into MTU-sized frames with
// correct headers, the way the kernel's tcp_gso_segment and
// __udp_gso_segment do (net/ipv4/tcp_offload.c, net/ipv4/udp_offload.c,
// net/ipv4/af_inet.c inet_gso_segment, net/ipv6/ip6_offload.c), so an
// endpoint can write them in one batch. It also completes partial checksums
// (virtio NEEDS_CSUM). It is pure: no syscalls, no gVisor.
//
// # Input
//
// A packet is an IPv4 or IPv6 packet, optionally behind a 14-byte Ethernet
// header (Options.Ethernet), carrying TCP or UDP. IPv4 options and IPv6
// hop-by-hop and destination options headers are copied into every segment. Lengths are derived from the bytes and checked against the
// headers; a packet whose headers disagree with its length, or whose headers
// run past its end, is rejected with an error wrapping ErrMalformed, never
// trusted. The packet's own transport checksum is ignored (it is usually
// partial): every segment's checksum is computed afresh.
//
// # Output
//
// Segment copies each frame into a caller-supplied buffer. Split writes only
// the headers, into one caller-supplied block, and returns each segment as a
// header and a payload slice that aliases the packet: a batched writer
// (writev, sendmmsg) sends them without copying the payload. Neither
// allocates.
//
// Per segment i of n, with mss payload bytes (the last may be shorter):
//   - IPv4: total length, ID (original + i, unless Options.FixedID),
//     header checksum; IPv6: payload length;
//   - TCP: sequence number (original + i*mss); FIN and PSH only on the last
//     segment, CWR only on the first (tcp_gso_segment);
//   - UDP: length;
//   - the transport checksum in full, or with Options.PartialChecksum the
//     folded pseudo-header sum to be completed from Info.CsumStart, at
//     Info.CsumOffset (NEEDS_CSUM, for TX checksum offload).
package gso

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/csum"
)

var (
	// ErrMalformed wraps errors for packets whose headers are truncated or
	// inconsistent with their length, and for an MSS of zero: drop the
	// packet and count it. It is dataplane.ErrMalformed.
	ErrMalformed = dataplane.ErrMalformed
	// ErrNotSupported wraps errors for well-formed packets this package
	// does not segment (not TCP or UDP, VLAN tags, IPsec headers): send
	// them unsegmented or drop them. It is dataplane.ErrNotSupported.
	ErrNotSupported = dataplane.ErrNotSupported
	// ErrShortBuffer wraps errors for output space that is too small for
	// the segments: give more buffers and retry. It is io.ErrShortBuffer.
	ErrShortBuffer = io.ErrShortBuffer
)

// Header sizes and protocol numbers.
const (
	ethHdrLen = 14
	ipv4Len   = 20
	ipv6Len   = 40
	tcpMinLen = 20
	udpLen    = 8

	protoTCP = 6
	protoUDP = 17
)

// Options describe how to segment one packet.
type Options struct {
	// MSS is the payload bytes per segment (the virtio gso_size): TCP
	// payload for TCP, UDP payload for UDP. It must be positive.
	MSS int
	// Ethernet says the packet starts with a 14-byte Ethernet header,
	// which is copied into every segment.
	Ethernet bool
	// PartialChecksum leaves each segment's transport checksum partial
	// (the folded pseudo-header sum) for the kernel or the device to
	// complete (virtio NEEDS_CSUM); false computes it in full.
	PartialChecksum bool
	// FixedID gives every IPv4 segment the original's ID instead of
	// incrementing it: what the kernel does for SKB_GSO_TCP_FIXEDID, the
	// packets gro reports with Meta.FixedID.
	FixedID bool
}

// Info describes how a packet is segmented.
type Info struct {
	// V6 says the packet is IPv6.
	V6 bool
	// Proto is the transport protocol: 6 (TCP) or 17 (UDP).
	Proto uint8
	// L3 and L4 are the offsets of the IP and transport headers.
	L3, L4 int
	// HdrLen is the number of header bytes copied into every segment:
	// link, IP (with options or extension headers) and transport.
	HdrLen int
	// Payload is the number of payload bytes to spread over the segments.
	Payload int
	// Segments is the number of segments: Payload/MSS rounded up, and 1
	// for a packet without payload.
	Segments int
	// CsumStart and CsumOffset locate each segment's transport checksum:
	// the virtio_net_hdr csum_start and csum_offset for NEEDS_CSUM.
	CsumStart, CsumOffset int
}

// MaxFrameLen returns the length of the largest segment, to size buffers.
func (in Info) MaxFrameLen(mss int) int { return in.HdrLen + min(mss, max(in.Payload, 0)) }

// Inspect parses and checks pkt and reports how it would be segmented.
func Inspect(pkt []byte, o Options) (Info, error) {
	var in Info
	if o.MSS <= 0 {
		return in, fmt.Errorf("gso: MSS %d: must be positive: %w", o.MSS, ErrMalformed)
	}
	l3 := 0
	etherV6 := false
	if o.Ethernet {
		if len(pkt) < ethHdrLen {
			return in, fmt.Errorf("gso: %d-byte frame has no Ethernet header: %w", len(pkt), ErrMalformed)
		}
		switch et := binary.BigEndian.Uint16(pkt[12:]); et {
		case 0x0800:
		case 0x86dd:
			etherV6 = true
		default:
			return in, fmt.Errorf("gso: ethertype %#04x: %w", et, ErrNotSupported)
		}
		l3 = ethHdrLen
	}
	ip := pkt[l3:]
	if len(ip) == 0 {
		return in, fmt.Errorf("gso: no IP header: %w", ErrMalformed)
	}
	in.L3 = l3
	var l4 int // offset of the transport header in ip
	v := ip[0] >> 4
	if o.Ethernet && (v == 6) != etherV6 {
		return in, fmt.Errorf("gso: IP version %d behind ethertype %#04x: %w", v, binary.BigEndian.Uint16(pkt[12:]), ErrMalformed)
	}
	switch v {
	case 4:
		if len(ip) < ipv4Len {
			return in, fmt.Errorf("gso: %d-byte IPv4 header: %w", len(ip), ErrMalformed)
		}
		ihl := int(ip[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(ip[2:]))
		if ihl < ipv4Len || ihl > len(ip) {
			return in, fmt.Errorf("gso: IPv4 header length %d in a %d-byte packet: %w", ihl, len(ip), ErrMalformed)
		}
		if total != len(ip) {
			return in, fmt.Errorf("gso: IPv4 total length %d, packet has %d bytes: %w", total, len(ip), ErrMalformed)
		}
		if binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 {
			return in, fmt.Errorf("gso: IPv4 fragment: %w", ErrMalformed)
		}
		in.Proto = ip[9]
		l4 = ihl
	case 6:
		in.V6 = true
		if len(ip) < ipv6Len {
			return in, fmt.Errorf("gso: %d-byte IPv6 header: %w", len(ip), ErrMalformed)
		}
		plen := int(binary.BigEndian.Uint16(ip[4:]))
		if ipv6Len+plen != len(ip) {
			// A zero payload length (a jumbogram) lands here too.
			return in, fmt.Errorf("gso: IPv6 payload length %d, packet has %d bytes: %w", plen, len(ip)-ipv6Len, ErrMalformed)
		}
		next, off := ip[6], ipv6Len
	ext:
		for {
			switch next {
			case 0, 60:
				// Hop-by-hop and destination options: copied into
				// every segment (ipv6_gso_segment).
				if off+8 > len(ip) {
					return in, fmt.Errorf("gso: IPv6 extension header %d beyond the packet: %w", next, ErrMalformed)
				}
				n := (int(ip[off+1]) + 1) * 8
				if off+n > len(ip) {
					return in, fmt.Errorf("gso: IPv6 extension header %d of %d bytes beyond the packet: %w", next, n, ErrMalformed)
				}
				next, off = ip[off], off+n
			case 44:
				return in, fmt.Errorf("gso: IPv6 fragment: %w", ErrMalformed)
			case 43:
				// A routing header changes the address the
				// pseudo-header uses (RFC 8200 section 8.1).
				return in, fmt.Errorf("gso: IPv6 routing header: %w", ErrNotSupported)
			default:
				break ext
			}
		}
		in.Proto = next
		l4 = off
	default:
		return in, fmt.Errorf("gso: IP version %d: %w", v, ErrMalformed)
	}
	in.L4 = l3 + l4
	tp := ip[l4:]
	switch in.Proto {
	case protoTCP:
		if len(tp) < tcpMinLen {
			return in, fmt.Errorf("gso: %d-byte TCP header: %w", len(tp), ErrMalformed)
		}
		doff := int(tp[12]>>4) * 4
		if doff < tcpMinLen || doff > len(tp) {
			return in, fmt.Errorf("gso: TCP data offset %d in %d bytes: %w", doff, len(tp), ErrMalformed)
		}
		in.HdrLen = in.L4 + doff
		in.CsumOffset = 16
	case protoUDP:
		if len(tp) < udpLen {
			return in, fmt.Errorf("gso: %d-byte UDP header: %w", len(tp), ErrMalformed)
		}
		if n := int(binary.BigEndian.Uint16(tp[4:])); n != len(tp) {
			return in, fmt.Errorf("gso: UDP length %d, datagram has %d bytes: %w", n, len(tp), ErrMalformed)
		}
		in.HdrLen = in.L4 + udpLen
		in.CsumOffset = 6
	default:
		return in, fmt.Errorf("gso: IP protocol %d: %w", in.Proto, ErrNotSupported)
	}
	in.CsumStart = in.L4
	in.Payload = len(pkt) - in.HdrLen
	in.Segments = max(1, (in.Payload+o.MSS-1)/o.MSS)
	return in, nil
}

// Segment writes the segments of pkt into dst: frame i into dst[i], from
// its start, using its capacity (at least Info.MaxFrameLen bytes), and sets
// dst[i] to the frame's length. It returns the number of frames written; on
// an error it writes nothing.
func Segment(dst [][]byte, pkt []byte, o Options) (int, error) {
	in, err := Inspect(pkt, o)
	if err != nil {
		return 0, err
	}
	if len(dst) < in.Segments {
		return 0, fmt.Errorf("gso: %d segments, %d buffers: %w", in.Segments, len(dst), ErrShortBuffer)
	}
	for i := 0; i < in.Segments; i++ {
		if need := in.HdrLen + segLen(&in, i, o.MSS); cap(dst[i]) < need {
			return 0, fmt.Errorf("gso: buffer %d holds %d bytes, segment needs %d: %w", i, cap(dst[i]), need, ErrShortBuffer)
		}
	}
	for i := 0; i < in.Segments; i++ {
		pay := payloadOf(pkt, &in, i, o.MSS)
		d := dst[i][:in.HdrLen+len(pay)]
		copy(d, pkt[:in.HdrLen])
		copy(d[in.HdrLen:], pay)
		fix(d[:in.HdrLen], &in, i, pay, o)
		dst[i] = d
	}
	return in.Segments, nil
}

// Frame is one segment as Split returns it: its headers, then its payload.
type Frame struct {
	Header  []byte
	Payload []byte
}

// Split segments pkt without copying payload: it writes the headers of
// segment i into hdrs[i*Info.HdrLen:] and sets frames[i] to that header and
// a payload slice of pkt. hdrs must hold Info.Segments*Info.HdrLen bytes and
// frames Info.Segments entries. The frames alias hdrs and pkt. It returns
// the number of frames; on an error it writes nothing.
func Split(frames []Frame, hdrs []byte, pkt []byte, o Options) (int, error) {
	in, err := Inspect(pkt, o)
	if err != nil {
		return 0, err
	}
	if len(frames) < in.Segments {
		return 0, fmt.Errorf("gso: %d segments, room for %d frames: %w", in.Segments, len(frames), ErrShortBuffer)
	}
	if len(hdrs) < in.Segments*in.HdrLen {
		return 0, fmt.Errorf("gso: %d segments of %d header bytes, %d bytes of header space: %w",
			in.Segments, in.HdrLen, len(hdrs), ErrShortBuffer)
	}
	for i := 0; i < in.Segments; i++ {
		h := hdrs[i*in.HdrLen : (i+1)*in.HdrLen : (i+1)*in.HdrLen]
		copy(h, pkt[:in.HdrLen])
		pay := payloadOf(pkt, &in, i, o.MSS)
		fix(h, &in, i, pay, o)
		frames[i] = Frame{Header: h, Payload: pay}
	}
	return in.Segments, nil
}

func segLen(in *Info, i, mss int) int {
	return min(mss, in.Payload-i*mss)
}

func payloadOf(pkt []byte, in *Info, i, mss int) []byte {
	start := in.HdrLen + i*mss
	return pkt[start : start+segLen(in, i, mss)]
}

// fix rewrites the copied headers h of segment i, whose payload is pay.
func fix(h []byte, in *Info, i int, pay []byte, o Options) {
	ip := h[in.L3:]
	l4len := len(h) - in.L4 + len(pay)
	last := i == in.Segments-1
	var pseudo uint16
	if in.V6 {
		binary.BigEndian.PutUint16(ip[4:], uint16(len(h)-in.L3-ipv6Len+len(pay)))
		pseudo = csum.PseudoV6(in.Proto, ip[8:24], ip[24:40], uint32(l4len))
	} else {
		binary.BigEndian.PutUint16(ip[2:], uint16(len(h)-in.L3+len(pay)))
		if !o.FixedID {
			// inet_gso_segment: iph->id = htons(id++).
			binary.BigEndian.PutUint16(ip[4:], binary.BigEndian.Uint16(ip[4:])+uint16(i))
		}
		ip[10], ip[11] = 0, 0
		binary.BigEndian.PutUint16(ip[10:], csum.IPv4Header(ip[:in.L4-in.L3]))
		pseudo = csum.PseudoV4(in.Proto, ip[12:16], ip[16:20], uint16(l4len))
	}
	tp := h[in.L4:]
	if in.Proto == protoTCP {
		binary.BigEndian.PutUint32(tp[4:], binary.BigEndian.Uint32(tp[4:])+uint32(i*o.MSS))
		if !last {
			// tcp_gso_segment: th->fin = th->psh = 0 on all but the
			// last segment.
			tp[13] &^= 0x01 | 0x08
		}
		if i > 0 {
			// th->cwr &= ecn_cwr_mask: CWR stays on the first segment
			// (no AccECN).
			tp[13] &^= 0x80
		}
	} else {
		binary.BigEndian.PutUint16(tp[4:], uint16(l4len))
	}
	ck := tp[in.CsumOffset : in.CsumOffset+2]
	if o.PartialChecksum {
		binary.BigEndian.PutUint16(ck, pseudo)
		return
	}
	ck[0], ck[1] = 0, 0
	// The payload follows a header of even length (TCP: a multiple of 4,
	// UDP: 8), so its sum needs no byte swap.
	s := csum.Add(csum.Sum(tp, pseudo), csum.Sum(pay, 0))
	v := csum.Finish(s)
	if v == 0 && in.Proto == protoUDP {
		// RFC 768: a computed zero is sent as all ones; zero means no
		// checksum.
		v = 0xffff
	}
	binary.BigEndian.PutUint16(ck, v)
}

// CompleteChecksum completes a partial checksum in place, as the kernel's
// skb_checksum_help does for CHECKSUM_PARTIAL (virtio NEEDS_CSUM): the
// 16-bit field at csumStart+csumOffset holds the folded, non-inverted
// pseudo-header sum; the checksum over frame[csumStart:] replaces it. A
// result of zero is stored as 0xffff (CSUM_MANGLED_0), which means the same
// to TCP and is required by UDP. csumOffset must be even.
func CompleteChecksum(frame []byte, csumStart, csumOffset int) error {
	if csumStart < 0 || csumOffset < 0 || csumStart > len(frame) || csumOffset > len(frame)-csumStart-2 {
		return fmt.Errorf("gso: checksum at %d+%d beyond a %d-byte frame: %w", csumStart, csumOffset, len(frame), ErrMalformed)
	}
	if csumOffset%2 != 0 {
		// Every Internet-checksum field sits at an even offset from
		// its header (TCP 16, UDP 6, ICMP 2); at an odd one it is not a
		// 16-bit word of the sum and cannot be completed.
		return fmt.Errorf("gso: checksum offset %d is odd: %w", csumOffset, ErrMalformed)
	}
	v := csum.Finish(csum.Sum(frame[csumStart:], 0))
	if v == 0 {
		v = 0xffff
	}
	binary.BigEndian.PutUint16(frame[csumStart+csumOffset:], v)
	return nil
}
