package dataplane

// The offload probe: before an endpoint trusts the kernel with an offload,
// it sends one frame that uses it on its own device and watches, with a
// second packet socket, what the kernel makes of it. This file is the pure
// part (the probe frames and the judgement of what was seen), testable
// anywhere; probe_linux.go sends and watches.
//
// Why: kernel regressions in TUN and vnet offloads have shipped (checksums
// left partial, GSO frames dropped or mis-segmented), and an endpoint that
// trusts a broken offload corrupts or loses every large segment while
// looking healthy. The probe turns off only the piece that misbehaves.
//
// The probe frames are harmless by construction: a locally administered
// destination MAC no device uses, documentation addresses (192.0.2.253 ->
// 192.0.2.254, 2001:db8::5c:fd -> 2001:db8::5c:fe), TTL and hop limit 1,
// TCP port 9 (discard). A peer that sees them drops them: another MAC (an
// L2 peer), an address it does not own with nowhere to forward (an L3 peer,
// TUN), and at worst an ICMP time-exceeded back to an address nobody owns.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sort"
	"time"

	"github.com/sluicenet/sluice/internal/csum"
)

// ProbeTest is one check of what the kernel does with an offloaded frame.
type ProbeTest uint8

const (
	// ProbePlain writes a fully checksummed TCP segment behind an empty
	// virtio_net_hdr: the header is accepted and the frame leaves as it
	// was.
	ProbePlain ProbeTest = iota
	// ProbeChecksum writes a TCP segment with a partial checksum and
	// NEEDS_CSUM: it must leave with the checksum completed, or still
	// flagged partial with the right seed (veth keeps it partial).
	ProbeChecksum
	// ProbeGSOTCPv4 and ProbeGSOTCPv6 write a TCP super-frame of three
	// segments: it must leave whole (GSO metadata intact) or segmented,
	// with every byte and checksum right.
	ProbeGSOTCPv4
	ProbeGSOTCPv6
	// ProbeUSO writes an IPv4 UDP_L4 super-datagram of three datagrams.
	ProbeUSO

	numProbeTests
)

var probeTestNames = [numProbeTests]string{"plain", "checksum", "gso-tcpv4", "gso-tcpv6", "uso"}

func (p ProbeTest) String() string {
	if p < numProbeTests {
		return probeTestNames[p]
	}
	return fmt.Sprintf("ProbeTest(%d)", uint8(p))
}

// Probe frame parameters.
var (
	// probeDstMAC is locally administered (bit 1 of the first byte) and
	// unicast: no vendor assigns it, so no device answers to it.
	probeDstMAC = [6]byte{0x0a, 0x73, 0x6c, 0x75, 0x69, 0x63}
	probeSrc4   = [4]byte{192, 0, 2, 253}
	probeDst4   = [4]byte{192, 0, 2, 254}
	probeSrc6   = [16]byte{0x20, 0x01, 0x0d, 0xb8, 13: 0x5c, 15: 0xfd}
	probeDst6   = [16]byte{0x20, 0x01, 0x0d, 0xb8, 13: 0x5c, 15: 0xfe}
)

const (
	probeDstPort = 9 // discard
	// probeGSOSize is the segment size of the super-frames: small enough
	// for any MTU an IPv6 link may have (1280) with headers.
	probeGSOSize = 1000
	// probePayload is the super-frames' payload: two full segments and a
	// short one, so that the last segment's length is checked too.
	probePayload = 2*probeGSOSize + probeGSOSize/2
	// probeSmallPayload is the payload of the single-segment tests.
	probeSmallPayload = 64
)

// probeFrame is one test's frame and what judging its observation needs.
type probeFrame struct {
	test     ProbeTest
	vnet     VnetHdr
	frame    []byte // link header (if any), IP, transport, payload
	payload  []byte // the payload, for comparison
	v6, udp  bool
	sport    uint16
	seq      uint32 // TCP sequence number of the first payload byte
	ethernet bool
}

// buildProbeFrame builds test's frame. srcMAC is the device's address (used
// with ethernet), nonce makes the frame recognisable among other traffic.
func buildProbeFrame(test ProbeTest, ethernet bool, srcMAC [6]byte, nonce uint32) probeFrame {
	p := probeFrame{test: test, ethernet: ethernet}
	p.v6 = test == ProbeGSOTCPv6
	p.udp = test == ProbeUSO
	// Every test of one probe has its own source port.
	p.sport = uint16(0xc000 | (nonce+uint32(test)*0x101)&0x3fff)
	p.seq = nonce * 2654435761
	n := probeSmallPayload
	if test >= ProbeGSOTCPv4 {
		n = probePayload
	}
	p.payload = make([]byte, n)
	for i := range p.payload {
		x := uint32(i) + nonce
		p.payload[i] = byte(x*7 + x>>8 + uint32(test))
	}

	var b []byte
	l3 := 0
	if ethernet {
		b = append(b, probeDstMAC[:]...)
		b = append(b, srcMAC[:]...)
		if p.v6 {
			b = binary.BigEndian.AppendUint16(b, etherTypeIPv6)
		} else {
			b = binary.BigEndian.AppendUint16(b, etherTypeIPv4)
		}
		l3 = 14
	}
	proto := uint8(6)
	l4len := 20 + n
	if p.udp {
		proto, l4len = 17, 8+n
	}
	var pseudo uint16
	if p.v6 {
		b = binary.BigEndian.AppendUint32(b, 6<<28)
		b = binary.BigEndian.AppendUint16(b, uint16(l4len))
		b = append(b, proto, 1) // hop limit 1
		b = append(b, probeSrc6[:]...)
		b = append(b, probeDst6[:]...)
		pseudo = csum.PseudoV6(proto, probeSrc6[:], probeDst6[:], uint32(l4len))
	} else {
		b = append(b, 0x45, 0)
		b = binary.BigEndian.AppendUint16(b, uint16(20+l4len))
		b = binary.BigEndian.AppendUint16(b, uint16(nonce))
		b = binary.BigEndian.AppendUint16(b, 0x4000) // DF
		b = append(b, 1, proto, 0, 0)                // TTL 1
		b = append(b, probeSrc4[:]...)
		b = append(b, probeDst4[:]...)
		binary.BigEndian.PutUint16(b[l3+10:], csum.IPv4Header(b[l3:l3+20]))
		pseudo = csum.PseudoV4(proto, probeSrc4[:], probeDst4[:], uint16(l4len))
	}
	l4 := len(b)
	ckOff := 16
	if p.udp {
		ckOff = 6
		b = binary.BigEndian.AppendUint16(b, p.sport)
		b = binary.BigEndian.AppendUint16(b, probeDstPort)
		b = binary.BigEndian.AppendUint16(b, uint16(l4len))
		b = append(b, 0, 0)
	} else {
		b = binary.BigEndian.AppendUint16(b, p.sport)
		b = binary.BigEndian.AppendUint16(b, probeDstPort)
		b = binary.BigEndian.AppendUint32(b, p.seq)
		b = binary.BigEndian.AppendUint32(b, 0)
		b = append(b, 5<<4, 0x10) // ACK
		b = binary.BigEndian.AppendUint16(b, 65535)
		b = append(b, 0, 0, 0, 0)
	}
	b = append(b, p.payload...)
	p.frame = b

	if test == ProbePlain {
		binary.BigEndian.PutUint16(b[l4+ckOff:], csum.Finish(csum.Sum(b[l4:], pseudo)))
		return p
	}
	// Everything else leaves the checksum to the kernel: the field holds
	// the folded pseudo-header sum over the full transport length, as
	// tcp_v4_send_check does for CHECKSUM_PARTIAL (KERNEL-NOTES, the
	// virtio_net_hdr section).
	binary.BigEndian.PutUint16(b[l4+ckOff:], pseudo)
	p.vnet = VnetHdr{Flags: VnetFlagNeedsCsum, CsumStart: uint16(l4), CsumOffset: uint16(ckOff)}
	switch test {
	case ProbeGSOTCPv4:
		p.vnet.GSOType = VnetGSOTCPv4
	case ProbeGSOTCPv6:
		p.vnet.GSOType = VnetGSOTCPv6
	case ProbeUSO:
		p.vnet.GSOType = VnetGSOUDPL4
	}
	if p.vnet.GSOType != VnetGSONone {
		p.vnet.GSOSize = probeGSOSize
		p.vnet.HdrLen = uint16(l4 + ckOff + 2)
		if !p.udp {
			p.vnet.HdrLen = uint16(l4 + 20)
		}
	}
	return p
}

// ProbeObservation is one frame the watching socket saw.
type ProbeObservation struct {
	// Vnet is its virtio_net_hdr (the watcher reads with one).
	Vnet VnetHdr
	// Data is the frame, link header included when the device has one.
	Data []byte
}

// probeSegment is one observed piece of a probe frame's payload.
type probeSegment struct {
	off  int // payload offset (TCP: from the sequence number; UDP: arrival order)
	data []byte
}

// matches reports whether o is a frame of p (its addresses and ports), so
// that other traffic on the device is ignored.
func (p *probeFrame) matches(o []byte) bool {
	_, l4, ok := p.offsets(o)
	if !ok {
		return false
	}
	return binary.BigEndian.Uint16(o[l4:]) == p.sport && binary.BigEndian.Uint16(o[l4+2:]) == probeDstPort
}

// offsets returns the IP and transport header offsets of o if o is an IP
// packet from the probe's source to its destination with the probe's
// protocol.
func (p *probeFrame) offsets(o []byte) (l3, l4 int, ok bool) {
	if p.ethernet {
		if len(o) < 14 {
			return 0, 0, false
		}
		l3 = 14
	}
	ip := o[l3:]
	proto := uint8(6)
	if p.udp {
		proto = 17
	}
	if p.v6 {
		if len(ip) < 40+8 || ip[0]>>4 != 6 || ip[6] != proto ||
			!bytes.Equal(ip[8:24], probeSrc6[:]) || !bytes.Equal(ip[24:40], probeDst6[:]) {
			return 0, 0, false
		}
		return l3, l3 + 40, true
	}
	if len(ip) < 20+8 || ip[0] != 0x45 || ip[9] != proto ||
		!bytes.Equal(ip[12:16], probeSrc4[:]) || !bytes.Equal(ip[16:20], probeDst4[:]) {
		return 0, 0, false
	}
	return l3, l3 + 20, true
}

// check judges one observed frame of p: IP lengths and header checksum,
// the transport checksum (completed first if still partial: a veth keeps
// CHECKSUM_PARTIAL all the way to its peer, which trusts it, so a partial
// checksum with the right seed is as good as a full one), and returns the
// payload piece it carries.
func (p *probeFrame) check(o ProbeObservation) (probeSegment, error) {
	l3, l4, ok := p.offsets(o.Data)
	if !ok {
		return probeSegment{}, fmt.Errorf("not a probe frame")
	}
	f := append([]byte(nil), o.Data...)
	ip := f[l3:]
	var l4len int
	if p.v6 {
		l4len = int(binary.BigEndian.Uint16(ip[4:]))
		if 40+l4len != len(ip) {
			return probeSegment{}, fmt.Errorf("IPv6 payload length %d in a %d-byte packet", l4len, len(ip))
		}
	} else {
		total := int(binary.BigEndian.Uint16(ip[2:]))
		if total != len(ip) {
			return probeSegment{}, fmt.Errorf("IPv4 total length %d in a %d-byte packet", total, len(ip))
		}
		if csum.Sum(ip[:20], 0) != 0xffff {
			return probeSegment{}, fmt.Errorf("IPv4 header checksum %#04x is wrong", binary.BigEndian.Uint16(ip[10:]))
		}
		l4len = total - 20
	}
	ckOff, hdr := 16, 20
	if p.udp {
		ckOff, hdr = 6, 8
		if n := int(binary.BigEndian.Uint16(f[l4+4:])); n != l4len {
			return probeSegment{}, fmt.Errorf("UDP length %d, datagram has %d bytes", n, l4len)
		}
	} else {
		hdr = int(f[l4+12]>>4) * 4
	}
	if l4len < hdr {
		return probeSegment{}, fmt.Errorf("%d-byte transport segment", l4len)
	}
	if o.Vnet.Flags&VnetFlagNeedsCsum != 0 {
		if int(o.Vnet.CsumStart) != l4 || int(o.Vnet.CsumOffset) != ckOff {
			return probeSegment{}, fmt.Errorf("partial checksum at %d+%d, the transport header is at %d (checksum +%d)",
				o.Vnet.CsumStart, o.Vnet.CsumOffset, l4, ckOff)
		}
		binary.BigEndian.PutUint16(f[l4+ckOff:], csum.Finish(csum.Sum(f[l4:], 0)))
	}
	proto := uint8(6)
	if p.udp {
		proto = 17
	}
	var pseudo uint16
	if p.v6 {
		pseudo = csum.PseudoV6(proto, ip[8:24], ip[24:40], uint32(l4len))
	} else {
		pseudo = csum.PseudoV4(proto, ip[12:16], ip[16:20], uint16(l4len))
	}
	if s := csum.Sum(f[l4:], pseudo); s != 0xffff {
		kind := "TCP"
		if p.udp {
			kind = "UDP"
		}
		return probeSegment{}, fmt.Errorf("%s checksum %#04x is wrong (partial: %t)", kind, binary.BigEndian.Uint16(o.Data[l4+ckOff:]),
			o.Vnet.Flags&VnetFlagNeedsCsum != 0)
	}
	seg := probeSegment{data: f[l4+hdr:]}
	if !p.udp {
		seg.off = int(binary.BigEndian.Uint32(f[l4+4:]) - p.seq)
	}
	return seg, nil
}

// judge decides test p from everything observed of it: complete says the
// payload is all there (the watcher may stop waiting), err says what is
// wrong with it. Checks, in order: every frame is well formed with a right
// checksum; the pieces tile the payload exactly, with no gap, overlap or
// byte out of place; segments are no larger than gso_size unless a frame
// came whole with its GSO metadata.
func (p *probeFrame) judge(obs []ProbeObservation) (complete bool, err error) {
	var segs []probeSegment
	udpOff := 0
	for _, o := range obs {
		s, err := p.check(o)
		if err != nil {
			return true, err
		}
		if p.udp {
			s.off = udpOff
			udpOff += len(s.data)
		}
		if p.vnet.GSOType != VnetGSONone && len(s.data) > int(p.vnet.GSOSize) {
			// A frame carrying more than one segment's payload
			// must still be a super-frame, or the kernel sent a
			// frame larger than what was asked.
			if !o.Vnet.IsGSO() || int(o.Vnet.GSOSize) != int(p.vnet.GSOSize) {
				return true, fmt.Errorf("a %d-byte piece left without GSO metadata (gso_type %#x, gso_size %d), segment size %d",
					len(s.data), o.Vnet.GSOType, o.Vnet.GSOSize, p.vnet.GSOSize)
			}
		}
		segs = append(segs, s)
	}
	if len(segs) == 0 {
		return false, fmt.Errorf("the %d-byte %v frame was not seen leaving the device", len(p.frame), p.test)
	}
	sort.SliceStable(segs, func(i, j int) bool { return segs[i].off < segs[j].off })
	at := 0
	for _, s := range segs {
		if s.off != at {
			if s.off < at {
				return true, fmt.Errorf("payload bytes %d..%d seen twice", s.off, at)
			}
			return false, fmt.Errorf("payload bytes %d..%d missing", at, s.off)
		}
		if s.off+len(s.data) > len(p.payload) {
			return true, fmt.Errorf("payload bytes %d..%d beyond the %d sent", s.off, s.off+len(s.data), len(p.payload))
		}
		if i := firstDiff(s.data, p.payload[s.off:]); i >= 0 {
			return true, fmt.Errorf("payload byte %d is %#02x, sent %#02x", s.off+i, s.data[i], p.payload[s.off+i])
		}
		at += len(s.data)
	}
	if at != len(p.payload) {
		return false, fmt.Errorf("payload bytes %d..%d missing", at, len(p.payload))
	}
	return true, nil
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if i >= len(b) || a[i] != b[i] {
			return i
		}
	}
	return -1
}

// ProbeVerdict is the outcome of one ProbeTest.
type ProbeVerdict struct {
	Test ProbeTest
	// OK says the kernel did what the offload promises.
	OK bool
	// Reason says what went wrong, when not OK.
	Reason string
}

// ProbeResult is what ProbeOffloads found.
type ProbeResult struct {
	// Device and Driver name the device (Driver from ETHTOOL_GDRVINFO,
	// "tun" for a TUN descriptor).
	Device, Driver string
	// Skipped, when not empty, says why nothing was probed; Verdicts is
	// then empty.
	Skipped string
	// Verdicts has one entry per test asked for, in order.
	Verdicts []ProbeVerdict
}

// Verdict returns the verdict of test, if it ran.
func (r ProbeResult) Verdict(test ProbeTest) (ProbeVerdict, bool) {
	for _, v := range r.Verdicts {
		if v.Test == test {
			return v, true
		}
	}
	return ProbeVerdict{}, false
}

// DefaultProbeTimeout bounds how long ProbeOffloads waits for a frame that
// does not show up. A frame the kernel sends shows up on the watching socket
// within the sending system call (dev_queue_xmit_nit runs before the
// driver's transmit, netif_rx before the protocol handlers), so the wait
// only matters when something is lost: then it is the whole cost.
const DefaultProbeTimeout = 250 * time.Millisecond

// ProbeOptions describe one run of ProbeOffloads.
type ProbeOptions struct {
	// FD is the descriptor the probe frames are written to: an AF_PACKET
	// socket bound to the device, or a TUN descriptor. It is borrowed.
	// Frames written to a packet socket leave the device; frames written
	// to a TUN descriptor enter the kernel through it. Either way a packet
	// socket for every protocol on the device sees them, which is how the
	// probe watches what the kernel made of them.
	FD int
	// EthernetHeader says frames on FD start with an Ethernet header.
	EthernetHeader bool
	// VnetHdr says FD reads and writes a virtio_net_hdr. Without one there
	// is no offload to probe, and ProbeOffloads skips.
	VnetHdr bool
	// Tests are the checks to run.
	Tests []ProbeTest
	// Timeout bounds the wait for frames that do not come. Default
	// DefaultProbeTimeout.
	Timeout time.Duration
	// Fault, if set, sees each test's observed frames before they are
	// judged and returns what to judge instead: a test's way to simulate
	// a kernel that drops or corrupts offloaded frames.
	Fault func(test ProbeTest, observed []ProbeObservation) []ProbeObservation
}
