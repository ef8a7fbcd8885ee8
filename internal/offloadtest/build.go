// Package offloadtest builds Ethernet, IPv4, IPv6, TCP and UDP frames for the
// tests, fuzz seeds and benchmarks of the offload packages (gro, gso). It is
// plain encoding/binary, independent of the code under test, so that tests
// can check sluice's output against gVisor's header package without the
// builder sharing a bug with either. Addresses default to the documentation
// ranges 192.0.2.0/24 and 2001:db8::/32.
package offloadtest

import (
	"encoding/binary"

	"github.com/sluicenet/sluice/internal/csum"
)

// TCP flags.
const (
	FIN = 0x01
	SYN = 0x02
	RST = 0x04
	PSH = 0x08
	ACK = 0x10
	URG = 0x20
	ECE = 0x40
	CWR = 0x80
)

// IP protocol numbers.
const (
	ProtoTCP = 6
	ProtoUDP = 17
)

// Default addresses.
var (
	Src4   = [4]byte{192, 0, 2, 1}
	Dst4   = [4]byte{192, 0, 2, 2}
	Src6   = [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 1}
	Dst6   = [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 2}
	SrcMAC = [6]byte{0x02, 0, 0, 0, 0, 1}
	DstMAC = [6]byte{0x02, 0, 0, 0, 0, 2}
)

// Packet describes one frame. The zero value plus a payload is an IPv4 TCP
// ACK segment from 192.0.2.1:1000 to 192.0.2.2:2000 with TTL 64 and DF.
type Packet struct {
	Ethernet bool
	V6       bool
	// UDP makes a UDP datagram instead of a TCP segment.
	UDP bool

	Src4, Dst4 *[4]byte  // nil means the defaults
	Src6, Dst6 *[16]byte // nil means the defaults
	SrcPort    uint16    // 0 means 1000
	DstPort    uint16    // 0 means 2000

	// IPv4 fields.
	ID       uint16
	NoDF     bool
	TTL      uint8 // 0 means 64 (hop limit for IPv6)
	TOS      uint8 // traffic class for IPv6
	FlowLbl  uint32
	IPOpts   []byte // IPv4 options, a multiple of 4 bytes
	ExtHdrs  []byte // IPv6 extension headers, already chained; ExtProto is the first
	ExtProto uint8

	// TCP fields.
	Seq, Ack uint32
	Flags    uint8  // 0 means ACK
	Window   uint16 // 0 means 65535
	TCPOpts  []byte // a multiple of 4 bytes
	Urgent   uint16

	Payload []byte

	// BadL4Csum corrupts the transport checksum; PartialL4Csum stores the
	// pseudo-header sum instead (NEEDS_CSUM); NoL4Csum leaves it zero.
	BadL4Csum, PartialL4Csum, NoL4Csum bool
}

// Offsets of a built frame.
type Offsets struct {
	L3, L4, Payload int
}

// Build returns the frame p describes, with correct lengths and checksums.
func Build(p Packet) []byte {
	b, _ := BuildOffsets(p)
	return b
}

// BuildOffsets is Build that also returns where each header starts.
func BuildOffsets(p Packet) ([]byte, Offsets) {
	var off Offsets
	var b []byte
	if p.Ethernet {
		b = append(b, DstMAC[:]...)
		b = append(b, SrcMAC[:]...)
		if p.V6 {
			b = binary.BigEndian.AppendUint16(b, 0x86dd)
		} else {
			b = binary.BigEndian.AppendUint16(b, 0x0800)
		}
	}
	off.L3 = len(b)
	proto := uint8(ProtoTCP)
	l4len := 20 + len(p.TCPOpts) + len(p.Payload)
	if p.UDP {
		proto = ProtoUDP
		l4len = 8 + len(p.Payload)
	}
	ttl := p.TTL
	if ttl == 0 {
		ttl = 64
	}
	var src, dst []byte
	if p.V6 {
		s, d := Src6, Dst6
		if p.Src6 != nil {
			s = *p.Src6
		}
		if p.Dst6 != nil {
			d = *p.Dst6
		}
		first := uint32(6)<<28 | uint32(p.TOS)<<20 | p.FlowLbl&0xfffff
		b = binary.BigEndian.AppendUint32(b, first)
		b = binary.BigEndian.AppendUint16(b, uint16(len(p.ExtHdrs)+l4len))
		next := proto
		if len(p.ExtHdrs) > 0 {
			next = p.ExtProto
		}
		b = append(b, next, ttl)
		b = append(b, s[:]...)
		b = append(b, d[:]...)
		b = append(b, p.ExtHdrs...)
		src, dst = b[off.L3+8:off.L3+24], b[off.L3+24:off.L3+40]
	} else {
		s, d := Src4, Dst4
		if p.Src4 != nil {
			s = *p.Src4
		}
		if p.Dst4 != nil {
			d = *p.Dst4
		}
		ihl := 20 + len(p.IPOpts)
		b = append(b, 0x40|byte(ihl/4), p.TOS)
		b = binary.BigEndian.AppendUint16(b, uint16(ihl+l4len))
		b = binary.BigEndian.AppendUint16(b, p.ID)
		var ff uint16
		if !p.NoDF {
			ff = 0x4000
		}
		b = binary.BigEndian.AppendUint16(b, ff)
		b = append(b, ttl, proto, 0, 0)
		b = append(b, s[:]...)
		b = append(b, d[:]...)
		b = append(b, p.IPOpts...)
		binary.BigEndian.PutUint16(b[off.L3+10:], csum.IPv4Header(b[off.L3:]))
		src, dst = b[off.L3+12:off.L3+16], b[off.L3+16:off.L3+20]
	}
	off.L4 = len(b)
	sport, dport := p.SrcPort, p.DstPort
	if sport == 0 {
		sport = 1000
	}
	if dport == 0 {
		dport = 2000
	}
	ckOff := 16
	if p.UDP {
		b = binary.BigEndian.AppendUint16(b, sport)
		b = binary.BigEndian.AppendUint16(b, dport)
		b = binary.BigEndian.AppendUint16(b, uint16(l4len))
		b = append(b, 0, 0)
		ckOff = 6
	} else {
		flags := p.Flags
		if flags == 0 {
			flags = ACK
		}
		win := p.Window
		if win == 0 {
			win = 65535
		}
		b = binary.BigEndian.AppendUint16(b, sport)
		b = binary.BigEndian.AppendUint16(b, dport)
		b = binary.BigEndian.AppendUint32(b, p.Seq)
		b = binary.BigEndian.AppendUint32(b, p.Ack)
		b = append(b, byte((20+len(p.TCPOpts))/4)<<4, flags)
		b = binary.BigEndian.AppendUint16(b, win)
		b = append(b, 0, 0)
		b = binary.BigEndian.AppendUint16(b, p.Urgent)
		b = append(b, p.TCPOpts...)
	}
	off.Payload = len(b)
	b = append(b, p.Payload...)

	var pseudo uint16
	if p.V6 {
		pseudo = csum.PseudoV6(proto, src, dst, uint32(l4len))
	} else {
		pseudo = csum.PseudoV4(proto, src, dst, uint16(l4len))
	}
	var ck uint16
	switch {
	case p.NoL4Csum:
	case p.PartialL4Csum:
		ck = pseudo
	default:
		ck = csum.Finish(csum.Sum(b[off.L4:], pseudo))
		if p.UDP && ck == 0 {
			ck = 0xffff
		}
		if p.BadL4Csum {
			ck ^= 0x5a5a
		}
	}
	binary.BigEndian.PutUint16(b[off.L4+ckOff:], ck)
	return b, off
}

// Payload returns n bytes of a recognisable pattern starting at stream
// offset from: byte i is the low byte of (from+i)*7+(from+i)>>8, so that
// misplaced or reordered bytes are detected.
func Payload(from, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		x := from + i
		b[i] = byte(x*7 + x>>8)
	}
	return b
}

// TimestampOption returns the 12-byte TCP option block NOP, NOP,
// Timestamps(val, ecr), as Linux sends it.
func TimestampOption(val, ecr uint32) []byte {
	b := []byte{1, 1, 8, 10}
	b = binary.BigEndian.AppendUint32(b, val)
	return binary.BigEndian.AppendUint32(b, ecr)
}
