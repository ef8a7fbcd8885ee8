package xdp

import (
	"strings"
	"testing"
	"time"
)

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"defaults", Options{}, ""},
		{"frame size not a power of two", Options{FrameSize: 3000}, "Options.FrameSize 3000"},
		{"frame size too small", Options{FrameSize: 1024}, "Options.FrameSize 1024"},
		{"frame size above a page", Options{FrameSize: 8192}, "Options.FrameSize 8192"},
		{"ring not a power of two", Options{RingSize: 3000}, "Options.RingSize 3000: must be a power of two"},
		{"ring too large", Options{RingSize: 1 << 20}, "Options.RingSize"},
		{"one frame", Options{NumFrames: 1}, "Options.NumFrames 1"},
		{"batch above the ring", Options{RingSize: 64, BatchSize: 65}, "Options.BatchSize 65"},
		{"negative busy poll", Options{BusyPoll: -time.Microsecond}, "Options.BusyPoll"},
		{"unknown bind mode", Options{BindMode: 7}, "Options.BindMode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.o.withDefaults().validate()
			if tc.want == "" {
				if err != nil {
					t.Errorf("validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("validate: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

func TestParseMode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Mode
		err  string
	}{
		{"ns", Mode{Kind: ModeNS}, ""},
		{"redirect:eth0", Mode{Kind: ModeRedirect, Iface: "eth0"}, ""},
		{"Tunnel:ens3", Mode{Kind: ModeTunnel, Iface: "ens3"}, ""},
		{"ns:eth0", Mode{}, "takes no interface"},
		{"redirect", Mode{}, "needs an interface"},
		{"redirect:", Mode{}, "needs an interface"},
		{"tunnel:abcdefghijklmnopq", Mode{}, "not a valid interface name"},
		{"zerocopy", Mode{}, `unknown mode "zerocopy"`},
	} {
		got, err := ParseMode(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseMode(%q) = %v, %v; want an error mentioning %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseMode(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if got.String() != strings.ToLower(tc.in) {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), strings.ToLower(tc.in))
		}
	}
	for _, s := range []string{"auto", "copy", "zerocopy"} {
		m, err := ParseBindMode(s)
		if err != nil || m.String() != s {
			t.Errorf("ParseBindMode(%q) = %v, %v", s, m, err)
		}
	}
}
