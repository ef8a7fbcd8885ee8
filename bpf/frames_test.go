package bpf

import (
	"encoding/binary"
	"net/netip"
)

// Frame builders for program tests. Checksums are left zero: the programs
// never look at them. Addresses are from the documentation ranges.

var (
	testSrcMAC = []byte{0x02, 0, 0, 0, 0, 0x01}
	testDstMAC = []byte{0x02, 0, 0, 0, 0, 0x02}
)

func ethFrame(etype uint16, payload []byte) []byte {
	b := append(append([]byte{}, testDstMAC...), testSrcMAC...)
	b = binary.BigEndian.AppendUint16(b, etype)
	return append(b, payload...)
}

func tcpHdr(dport uint16) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], 40000)
	binary.BigEndian.PutUint16(b[2:], dport)
	b[12] = 5 << 4
	b[13] = 0x02 // SYN
	return b
}

func udpHdr(dport uint16, payload int) []byte {
	b := make([]byte, 8+payload)
	binary.BigEndian.PutUint16(b[0:], 40000)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(8+payload))
	return b
}

// ipv4Frame builds Ethernet+IPv4 with the given fragment offset field
// (in 8-byte units) around l4.
func ipv4Frame(proto uint8, dst netip.Addr, fragOff uint16, l4 []byte) []byte {
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(l4)))
	binary.BigEndian.PutUint16(h[6:], fragOff&0x1fff)
	h[8] = 64
	h[9] = proto
	src := netip.MustParseAddr("192.0.2.1").As4()
	copy(h[12:], src[:])
	d := dst.As4()
	copy(h[16:], d[:])
	return ethFrame(0x0800, append(h, l4...))
}

// ipv6Frame builds Ethernet+IPv6; ext is a chain of extension headers
// already encoded, first is the Next Header value of the fixed header.
func ipv6Frame(first uint8, dst netip.Addr, ext, l4 []byte) []byte {
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(ext)+len(l4)))
	h[6] = first
	h[7] = 64
	src := netip.MustParseAddr("2001:db8::1").As16()
	copy(h[8:], src[:])
	d := dst.As16()
	copy(h[24:], d[:])
	return ethFrame(0x86dd, append(append(h, ext...), l4...))
}

// hopByHop is an 8-byte Hop-by-Hop Options header (PadN only).
func hopByHop(next uint8) []byte { return []byte{next, 0, 1, 4, 0, 0, 0, 0} }

// fragHdr is an IPv6 Fragment header with the given offset (8-byte units).
func fragHdr(next uint8, off uint16) []byte {
	b := []byte{next, 0, 0, 0, 0, 0, 0, 1}
	binary.BigEndian.PutUint16(b[2:], off<<3)
	return b
}

func arpFrame() []byte { return ethFrame(0x0806, make([]byte, 28)) }
