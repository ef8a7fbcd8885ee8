package dataplane

import (
	"encoding/binary"
	"errors"
	"testing"
)

// ipFrame returns a frame of n bytes (at least 54) that looks like an IPv4
// or IPv6 packet of protocol proto as far as ValidateFrame reads, behind an
// Ethernet header when eth is set.
func ipFrame(n int, eth bool, version, proto uint8) []byte {
	f := make([]byte, n)
	l3 := 0
	if eth {
		l3 = 14
		et := uint16(0x0800)
		if version == 6 {
			et = 0x86dd
		}
		binary.BigEndian.PutUint16(f[12:], et)
	}
	f[l3] = version << 4
	if version == 4 {
		f[l3] |= 5
		f[l3+9] = proto
	} else {
		f[l3+6] = proto
	}
	return f
}

func TestVnetHdrValidateFrame(t *testing.T) {
	tcp4 := VnetHdr{Flags: VnetFlagNeedsCsum, GSOType: VnetGSOTCPv4, HdrLen: 66, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}
	tcp6 := VnetHdr{Flags: VnetFlagNeedsCsum, GSOType: VnetGSOTCPv6, HdrLen: 86, GSOSize: 1428, CsumStart: 54, CsumOffset: 16}
	uso := VnetHdr{Flags: VnetFlagNeedsCsum, GSOType: VnetGSOUDPL4, HdrLen: 42, GSOSize: 1000, CsumStart: 34, CsumOffset: 6}
	tun4 := tcp4
	tun4.CsumStart, tun4.HdrLen = 20, 52
	for _, tc := range []struct {
		name  string
		h     VnetHdr
		frame []byte
		eth   bool
		ok    bool
	}{
		{"plain frame, no header fields", VnetHdr{}, ipFrame(60, true, 4, 17), true, true},
		{"plain non-IP frame", VnetHdr{}, make([]byte, 60), true, true},
		{"tcpv4 super-frame", tcp4, ipFrame(30000, true, 4, 6), true, true},
		{"tcpv6 super-frame", tcp6, ipFrame(30000, true, 6, 6), true, true},
		{"tcpv6 behind an extension header", tcp6, ipFrame(30000, true, 6, 0), true, true},
		{"udp_l4 super-datagram", uso, ipFrame(10042, true, 4, 17), true, true},
		{"tcpv4 on a tun", tun4, ipFrame(30000, false, 4, 6), false, true},
		{"data valid only", VnetHdr{Flags: VnetFlagDataValid}, ipFrame(60, true, 4, 6), true, true},
		{"tcpv4 type on an ipv6 packet", tcp4, ipFrame(30000, true, 6, 6), true, false},
		{"tcpv6 type on an ipv4 packet", tcp6, ipFrame(30000, true, 4, 6), true, false},
		{"tcpv4 type on udp", tcp4, ipFrame(30000, true, 4, 17), true, false},
		{"udp_l4 type on tcp", uso, ipFrame(30000, true, 4, 6), true, false},
		{"gso on a non-IP frame", tcp4, make([]byte, 30000), true, false},
		{"64 KiB segments in a 100-byte frame", VnetHdr{GSOType: VnetGSOTCPv4, GSOSize: 65535, HdrLen: 54}, ipFrame(100, true, 4, 6), true, false},
		{"segment as long as the frame", VnetHdr{GSOType: VnetGSOTCPv4, GSOSize: 100, HdrLen: 54}, ipFrame(100, true, 4, 6), true, false},
		{"gso_size 0", VnetHdr{GSOType: VnetGSOTCPv4, HdrLen: 54}, ipFrame(3000, true, 4, 6), true, false},
		{"hdr_len beyond the frame", VnetHdr{GSOType: VnetGSOTCPv4, GSOSize: 1000, HdrLen: 3001}, ipFrame(3000, true, 4, 6), true, false},
		{"csum_start beyond the frame", VnetHdr{Flags: VnetFlagNeedsCsum, CsumStart: 3000, CsumOffset: 16}, ipFrame(3000, true, 4, 6), true, false},
		{"csum_start in the Ethernet header", VnetHdr{Flags: VnetFlagNeedsCsum, CsumStart: 6, CsumOffset: 16}, ipFrame(3000, true, 4, 6), true, false},
		{"csum_start in the IP header", VnetHdr{Flags: VnetFlagNeedsCsum, CsumStart: 20, CsumOffset: 16}, ipFrame(3000, true, 4, 6), true, false},
		{"truncated head", tcp4, ipFrame(30000, true, 4, 6)[:20], true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Frames longer than their head: only the head is passed,
			// as a dispatcher passes its first buffer.
			n := len(tc.frame)
			head := tc.frame[:min(n, 128)]
			if tc.name == "truncated head" {
				n = 30000
			}
			err := tc.h.ValidateFrame(head, n, tc.eth)
			if tc.ok && err != nil {
				t.Errorf("ValidateFrame = %v, want nil", err)
			}
			if !tc.ok && !errors.Is(err, ErrMalformed) {
				t.Errorf("ValidateFrame = %v, want ErrMalformed", err)
			}
		})
	}
}

// FuzzVnetHdrValidateFrame checks that no header and frame make
// ValidateFrame panic, and that what it accepts Validate accepts too.
func FuzzVnetHdrValidateFrame(f *testing.F) {
	var b [VnetHdrLen]byte
	VnetHdr{Flags: 1, GSOType: 1, HdrLen: 66, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}.Encode(b[:])
	f.Add(b[:], ipFrame(64, true, 4, 6), 30000, true)
	f.Add(b[:], ipFrame(64, false, 6, 17), 100, false)
	f.Add(b[:], []byte{}, 0, true)
	f.Fuzz(func(t *testing.T, hb, head []byte, frameLen int, eth bool) {
		h, err := ParseVnetHdr(hb)
		if err != nil {
			return
		}
		if frameLen < len(head) {
			frameLen = len(head)
		}
		if err := h.ValidateFrame(head, frameLen, eth); err == nil {
			if verr := h.Validate(frameLen); verr != nil {
				t.Fatalf("ValidateFrame accepted what Validate rejects: %v", verr)
			}
		}
	})
}
