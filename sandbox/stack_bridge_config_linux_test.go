package sandbox

import (
	"strings"
	"testing"

	"github.com/sluicenet/sluice/dataplane"
)

func TestParseBridgeConfig(t *testing.T) {
	def := bridgeConfig{dispatch: dataplane.RecvMMsg, channels: 1}
	for _, tc := range []struct {
		in   string
		want bridgeConfig
		err  string
	}{
		{"", def, ""},
		{"dispatch=mmap", bridgeConfig{dataplane.PacketMMap, 1}, ""},
		{" dispatch=readv , channels=4 ,", bridgeConfig{dataplane.Readv, 4}, ""},
		{"channels=65", def, "channels=65: want 1 to 64"},
		{"channels=two", def, "channels=two: want 1 to 64"},
		{"dispatch=", def, "dispatch=: want readv, recvmmsg or mmap"},
		{"mode=mmap", def, `unknown key "mode"`},
		{"recvmmsg", def, `"recvmmsg" is not key=value`},
	} {
		got, err := parseBridgeConfig(tc.in, def)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "--plugin-config") {
				t.Errorf("%q: got %v, %v; want an error naming --plugin-config and %q", tc.in, got, err, tc.err)
			}
		case err != nil || got != tc.want:
			t.Errorf("%q: got %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	// The init string round-trips.
	c := bridgeConfig{dataplane.PacketMMap, 3}
	if got, err := parseBridgeConfig(c.String(), bridgeConfig{}); err != nil || got != c {
		t.Errorf("round trip of %q: got %v, %v", c.String(), got, err)
	}
}
