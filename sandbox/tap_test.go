package sandbox

import "testing"

// TestDescribeFrameNeverFails feeds describeFrame cut-off and garbage
// frames: each gets a line, none a panic.
func TestDescribeFrameNeverFails(t *testing.T) {
	for _, f := range [][]byte{
		nil,
		make([]byte, 13),
		append(make([]byte, 12), 0x08, 0x00), // IPv4, no header
		append(make([]byte, 12), 0x08, 0x06, 0, 1),                                                                    // ARP, cut
		append(make([]byte, 12), 0x86, 0xdd, 0x60, 0, 0),                                                              // IPv6, cut
		append(append(make([]byte, 12), 0x08, 0x00), 0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8), // TCP with no header
	} {
		if s := describeFrame(f); s == "" {
			t.Errorf("describeFrame(%x) is empty", f)
		}
	}
}
