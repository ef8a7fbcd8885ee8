package dataplane

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/sluicenet/sluice/internal/csum"
)

// segmentProbe cuts a TCP probe super-frame into full-checksum segments the
// way the kernel's software GSO does, for judge to see a segmented egress.
func segmentProbe(p probeFrame) []ProbeObservation {
	l3, l4, _ := p.offsets(p.frame)
	hdr := l4 + 20
	var out []ProbeObservation
	for off := 0; off < len(p.payload); off += probeGSOSize {
		n := min(probeGSOSize, len(p.payload)-off)
		f := append(append([]byte(nil), p.frame[:hdr]...), p.payload[off:off+n]...)
		ip := f[l3:]
		var pseudo uint16
		if p.v6 {
			binary.BigEndian.PutUint16(ip[4:], uint16(20+n))
			pseudo = csum.PseudoV6(6, ip[8:24], ip[24:40], uint32(20+n))
		} else {
			binary.BigEndian.PutUint16(ip[2:], uint16(40+n))
			ip[10], ip[11] = 0, 0
			binary.BigEndian.PutUint16(ip[10:], csum.IPv4Header(ip[:20]))
			pseudo = csum.PseudoV4(6, ip[12:16], ip[16:20], uint16(20+n))
		}
		binary.BigEndian.PutUint32(f[l4+4:], p.seq+uint32(off))
		f[l4+16], f[l4+17] = 0, 0
		binary.BigEndian.PutUint16(f[l4+16:], csum.Finish(csum.Sum(f[l4:], pseudo)))
		out = append(out, ProbeObservation{Data: f})
	}
	return out
}

func TestProbeJudge(t *testing.T) {
	mac := [6]byte{2, 0, 0, 0, 0, 1}
	for _, eth := range []bool{true, false} {
		for _, test := range []ProbeTest{ProbePlain, ProbeChecksum, ProbeGSOTCPv4, ProbeGSOTCPv6, ProbeUSO} {
			p := buildProbeFrame(test, eth, mac, 12345)
			whole := ProbeObservation{Vnet: p.vnet, Data: p.frame}
			if complete, err := p.judge([]ProbeObservation{whole}); !complete || err != nil {
				t.Errorf("%v eth=%t: the frame as sent: complete %t, %v", test, eth, complete, err)
			}
			if complete, err := p.judge(nil); complete || err == nil || !strings.Contains(err.Error(), "not seen") {
				t.Errorf("%v eth=%t: nothing seen: complete %t, %v", test, eth, complete, err)
			}
			if complete, err := p.judge([]ProbeObservation{whole, whole}); !complete || err == nil {
				t.Errorf("%v eth=%t: seen twice: complete %t, %v", test, eth, complete, err)
			}
			if !p.matches(p.frame) {
				t.Errorf("%v eth=%t: the frame does not match itself", test, eth)
			}
			other := buildProbeFrame(test, eth, mac, 999)
			if p.matches(other.frame) {
				t.Errorf("%v eth=%t: another probe's frame matches", test, eth)
			}
			if test == ProbeGSOTCPv4 || test == ProbeGSOTCPv6 {
				segs := segmentProbe(p)
				if complete, err := p.judge(segs); !complete || err != nil {
					t.Errorf("%v eth=%t: segmented: complete %t, %v", test, eth, complete, err)
				}
				if complete, err := p.judge(segs[:2]); complete || err == nil || !strings.Contains(err.Error(), "missing") {
					t.Errorf("%v eth=%t: last segment lost: complete %t, %v", test, eth, complete, err)
				}
				stripped := whole
				stripped.Vnet = VnetHdr{}
				if _, err := p.judge([]ProbeObservation{stripped}); err == nil {
					t.Errorf("%v eth=%t: a super-frame without GSO metadata passed", test, eth)
				}
				bad := segs[1]
				bad.Data = append([]byte(nil), bad.Data...)
				bad.Data[len(bad.Data)-1] ^= 1
				if _, err := p.judge([]ProbeObservation{segs[0], bad, segs[2]}); err == nil || !strings.Contains(err.Error(), "checksum") {
					t.Errorf("%v eth=%t: a corrupted segment: %v", test, eth, err)
				}
			}
		}
	}
	for i := range numProbeTests + 1 {
		if ProbeTest(i).String() == "" {
			t.Errorf("ProbeTest(%d) has no name", i)
		}
	}
}

// The probe frames are what the package doc promises: harmless addresses,
// TTL 1, a locally administered unicast destination MAC.
func TestProbeFramesAreHarmless(t *testing.T) {
	if probeDstMAC[0]&0x02 == 0 || probeDstMAC[0]&0x01 != 0 {
		t.Errorf("destination MAC %x is not locally administered unicast", probeDstMAC)
	}
	for _, test := range []ProbeTest{ProbePlain, ProbeGSOTCPv6, ProbeUSO} {
		p := buildProbeFrame(test, true, [6]byte{}, 1)
		ip := p.frame[14:]
		if p.v6 {
			if ip[7] != 1 || string(ip[8:12]) != "\x20\x01\x0d\xb8" || string(ip[24:28]) != "\x20\x01\x0d\xb8" {
				t.Errorf("%v: hop limit %d, addresses outside 2001:db8::/32", test, ip[7])
			}
		} else if ip[8] != 1 || string(ip[12:15]) != "\xc0\x00\x02" || string(ip[16:19]) != "\xc0\x00\x02" {
			t.Errorf("%v: TTL %d, addresses outside 192.0.2.0/24", test, ip[8])
		}
	}
}
