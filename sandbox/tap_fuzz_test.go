package sandbox

import (
	"strings"
	"testing"
)

// FuzzDescribeFrame decodes arbitrary bytes as --log-packets does for every
// frame the sandbox sends: the sandbox chooses these bytes, so the line
// must never be empty, never panic and never break into several lines (a
// frame must not forge log lines).
func FuzzDescribeFrame(f *testing.F) {
	eth := func(et ...byte) []byte { return append([]byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2}, et...) }
	f.Add([]byte(nil))
	f.Add(eth(0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 2, 10, 0, 2, 100, 0, 0, 0, 0, 0, 0, 10, 0, 2, 2))
	f.Add(append(eth(0x08, 0x00), 0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 2, 100, 10, 0, 2, 2, 0, 53, 0, 53, 0, 8, 0, 0))
	f.Add(append(eth(0x08, 0x00), 0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 2, 100, 10, 0, 2, 2,
		0, 80, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0))
	ip6 := []byte{0x60, 0, 0, 0, 0, 8, 58, 64, 8: 0xfd, 9: 0x51, 10: 0xce, 23: 0x64, 24: 0xfd, 25: 0x51, 26: 0xce, 39: 2, 40: 128, 47: 0}
	f.Add(append(eth(0x86, 0xdd), ip6...))
	f.Fuzz(func(t *testing.T, frame []byte) {
		s := describeFrame(frame)
		if s == "" || strings.ContainsAny(s, "\n\r") {
			t.Fatalf("describeFrame = %q: want one non-empty line", s)
		}
	})
}
