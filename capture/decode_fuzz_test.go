package capture

import (
	"strings"
	"testing"

	"github.com/sluicenet/sluice/dataplane"
)

// FuzzSummary decodes arbitrary bytes as a captured frame, as `sluice
// capture` does for every frame it prints, and counts the GSO segments a
// virtio_net_hdr (vnet, when 10 bytes) claims for it. The frame is anyone's
// on the wire: the summary must stay one line (a frame must not forge log
// lines) and the segment count must be sane.
func FuzzSummary(f *testing.F) {
	eth := []byte{0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2}
	ipv4udp := append(append([]byte(nil), eth...), 0x08, 0x00,
		0x45, 0, 0, 33, 0, 1, 0, 0, 64, 17, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2,
		0x30, 0x39, 0x00, 0x35, 0, 13, 0, 0, 'h', 'e', 'l', 'l', 'o')
	ipv4tcp := append(append([]byte(nil), eth...), 0x08, 0x00,
		0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2,
		0x30, 0x39, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0)
	arp := append(append([]byte(nil), eth...), 0x08, 0x06,
		0, 1, 8, 0, 6, 4, 0, 1, 0x02, 0, 0, 0, 0, 2, 192, 0, 2, 2, 0, 0, 0, 0, 0, 0, 192, 0, 2, 1)
	vlan := append(append([]byte(nil), eth...), 0x81, 0x00, 0, 5, 0x08, 0x00)
	vlan = append(vlan, ipv4udp[14:]...)
	var gso [dataplane.VnetHdrLen]byte
	dataplane.VnetHdr{Flags: dataplane.VnetFlagNeedsCsum, GSOType: dataplane.VnetGSOTCPv4, HdrLen: 54, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}.Encode(gso[:])
	for _, s := range [][]byte{nil, eth, ipv4udp, ipv4tcp, arp, vlan, ipv4tcp[:20]} {
		f.Add(s, []byte(nil))
		f.Add(s, gso[:])
	}
	f.Fuzz(func(t *testing.T, frame, vnet []byte) {
		line := Summary(FrameInfo{Data: frame, WireLen: len(frame), Channel: 1}, false)
		if line == "" || strings.ContainsAny(line, "\n\r") {
			t.Fatalf("summary %q: want one non-empty line", line)
		}
		if len(vnet) != dataplane.VnetHdrLen {
			return
		}
		v, err := dataplane.ParseVnetHdr(vnet)
		if err != nil {
			return
		}
		n := gsoSegments(v, frame, len(frame))
		if !v.IsGSO() && n != 1 {
			t.Fatalf("a frame without GSO stands for %d segments", n)
		}
		if n > 65536 {
			t.Fatalf("%d segments from a %d-byte frame", n, len(frame))
		}
	})
}
