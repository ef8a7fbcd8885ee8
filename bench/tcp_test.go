package bench

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluicenet/sluice/dataplane"
)

func TestTCPConfigString(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  TCPConfig
		want string
	}{
		{
			name: "the brief's example",
			cfg:  TCPConfig{GSO: GSOHost, GRO: true, Mode: dataplane.PacketMMap, Flows: 4, Dir: Down, PeerTSO: true},
			want: "gso=host,gro=on,mode=mmap,flows=4,dir=down,peer_tso=on",
		},
		{
			name: "everything off",
			cfg:  TCPConfig{GSO: GSONone, Mode: dataplane.Readv, Flows: 1, Dir: Up},
			want: "gso=none,gro=off,mode=readv,flows=1,dir=up,peer_tso=off",
		},
		{
			name: "IPv6 adds ip=6 last",
			cfg:  TCPConfig{GSO: GSOSoftware, Mode: dataplane.RecvMMsg, Flows: 2, Dir: Up, PeerTSO: true, IPv6: true},
			want: "gso=software,gro=off,mode=recvmmsg,flows=2,dir=up,peer_tso=on,ip=6",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.cfg.String(); got != tc.want {
				t.Errorf("String() = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestTCPConfigStringParsesBack checks that a config's string is what the
// report's table splits into columns: every key once, in a fixed order.
func TestTCPConfigStringParsesBack(t *testing.T) {
	cfg := TCPConfig{GSO: GSOHost, GRO: true, Mode: dataplane.PacketMMap, Flows: 4, Dir: Down, PeerTSO: true, IPv6: true}
	var keys []string
	for _, kv := range splitConfig(cfg.String()) {
		keys = append(keys, kv[0])
	}
	want := []string{"gso", "gro", "mode", "flows", "dir", "peer_tso", "ip"}
	if diff := cmp.Diff(want, keys); diff != "" {
		t.Errorf("keys (-want +got):\n%s", diff)
	}
}

func TestTCPConfigs(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts TCPOptions
		want []string
	}{
		{
			name: "peer TSO off only going up",
			opts: TCPOptions{
				GSO: []GSOKind{GSOHost}, GRO: []bool{true}, Modes: []dataplane.Mode{dataplane.PacketMMap},
				Flows: []int{1}, Directions: []Direction{Up, Down}, PeerTSO: []bool{true, false},
			},
			want: []string{
				"gso=host,gro=on,mode=mmap,flows=1,dir=up,peer_tso=on",
				"gso=host,gro=on,mode=mmap,flows=1,dir=down,peer_tso=on",
				"gso=host,gro=on,mode=mmap,flows=1,dir=up,peer_tso=off",
			},
		},
		{
			name: "order: direction, gso, gro, mode, flows, ip",
			opts: TCPOptions{
				GSO: []GSOKind{GSONone, GSOSoftware}, GRO: []bool{false, true}, Modes: []dataplane.Mode{dataplane.Readv},
				Flows: []int{4, 1}, Directions: []Direction{Down}, PeerTSO: []bool{true}, IPVersions: []int{6, 4},
			},
			want: []string{
				"gso=none,gro=off,mode=readv,flows=4,dir=down,peer_tso=on,ip=6",
				"gso=none,gro=off,mode=readv,flows=4,dir=down,peer_tso=on",
				"gso=none,gro=off,mode=readv,flows=1,dir=down,peer_tso=on,ip=6",
				"gso=none,gro=off,mode=readv,flows=1,dir=down,peer_tso=on",
				"gso=none,gro=on,mode=readv,flows=4,dir=down,peer_tso=on,ip=6",
				"gso=none,gro=on,mode=readv,flows=4,dir=down,peer_tso=on",
				"gso=none,gro=on,mode=readv,flows=1,dir=down,peer_tso=on,ip=6",
				"gso=none,gro=on,mode=readv,flows=1,dir=down,peer_tso=on",
				"gso=software,gro=off,mode=readv,flows=4,dir=down,peer_tso=on,ip=6",
				"gso=software,gro=off,mode=readv,flows=4,dir=down,peer_tso=on",
				"gso=software,gro=off,mode=readv,flows=1,dir=down,peer_tso=on,ip=6",
				"gso=software,gro=off,mode=readv,flows=1,dir=down,peer_tso=on",
				"gso=software,gro=on,mode=readv,flows=4,dir=down,peer_tso=on,ip=6",
				"gso=software,gro=on,mode=readv,flows=4,dir=down,peer_tso=on",
				"gso=software,gro=on,mode=readv,flows=1,dir=down,peer_tso=on,ip=6",
				"gso=software,gro=on,mode=readv,flows=1,dir=down,peer_tso=on",
			},
		},
		{
			name: "down with peer TSO off measures nothing",
			opts: TCPOptions{Directions: []Direction{Down}, PeerTSO: []bool{false}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, c := range tc.opts.Configs() {
				got = append(got, c.String())
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Configs (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDefaultTCPOptions pins the size of the default run, which the help
// text and DefaultTCPOptions' doc promise: 72 configurations, each for
// both implementations.
func TestDefaultTCPOptions(t *testing.T) {
	d := DefaultTCPOptions()
	if err := d.Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	if got := len(d.Configs()); got != 72 {
		t.Errorf("%d default configurations, want 72", got)
	}
	if d.Duration != 2*time.Second {
		t.Errorf("Duration = %v, want 2s", d.Duration)
	}
	if diff := cmp.Diff(Impls, d.Impls); diff != "" {
		t.Errorf("Impls (-want +got):\n%s", diff)
	}
	// The zero value means the defaults.
	if diff := cmp.Diff(len(d.Configs()), len(TCPOptions{}.Configs())); diff != "" {
		t.Errorf("zero options' configurations (-want +got):\n%s", diff)
	}
}

func TestTCPOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts TCPOptions
		want string
	}{
		{name: "too short", opts: TCPOptions{Duration: time.Millisecond}, want: "Duration 1ms"},
		{name: "unknown GSO", opts: TCPOptions{GSO: []GSOKind{7}}, want: "unknown GSO kind GSOKind(7)"},
		{name: "unknown mode", opts: TCPOptions{Modes: []dataplane.Mode{9}}, want: "unknown mode"},
		{name: "zero flows", opts: TCPOptions{Flows: []int{0}}, want: "0 flows"},
		{name: "too many flows", opts: TCPOptions{Flows: []int{MaxFlows + 1}}, want: "65 flows"},
		{name: "unknown direction", opts: TCPOptions{Directions: []Direction{3}}, want: "unknown direction Direction(3)"},
		{name: "IP version", opts: TCPOptions{IPVersions: []int{5}}, want: "IP version 5"},
		{name: "unknown impl", opts: TCPOptions{Impls: []string{"dpdk"}}, want: `unknown implementation "dpdk"`},
		{name: "nothing to measure", opts: TCPOptions{Directions: []Direction{Down}, PeerTSO: []bool{false}}, want: "nothing to measure"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.opts.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestParseTCPLists(t *testing.T) {
	t.Run("gso", func(t *testing.T) {
		got, err := ParseGSO([]string{"software,host", "none", "host"})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]GSOKind{GSOSoftware, GSOHost, GSONone}, got); diff != "" {
			t.Errorf("ParseGSO (-want +got):\n%s", diff)
		}
	})
	t.Run("directions", func(t *testing.T) {
		got, err := ParseDirections([]string{"down, UP"})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]Direction{Down, Up}, got); diff != "" {
			t.Errorf("ParseDirections (-want +got):\n%s", diff)
		}
	})
	t.Run("on/off", func(t *testing.T) {
		got, err := ParseOnOff("--gro", []string{"off,on,true,0"})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]bool{false, true}, got); diff != "" {
			t.Errorf("ParseOnOff (-want +got):\n%s", diff)
		}
	})
	t.Run("flows", func(t *testing.T) {
		got, err := ParseFlows([]string{"4", "1,4", strconv.Itoa(MaxFlows)})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]int{4, 1, MaxFlows}, got); diff != "" {
			t.Errorf("ParseFlows (-want +got):\n%s", diff)
		}
	})
	t.Run("modes", func(t *testing.T) {
		got, err := ParseTCPModes([]string{"mmap,readv", "mmap"})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]dataplane.Mode{dataplane.PacketMMap, dataplane.Readv}, got); diff != "" {
			t.Errorf("ParseTCPModes (-want +got):\n%s", diff)
		}
	})
	t.Run("xdp mode", func(t *testing.T) {
		got, err := ParseTCPModes([]string{"recvmmsg,xdp", "XDP"})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]dataplane.Mode{dataplane.RecvMMsg, ModeXDP}, got); diff != "" {
			t.Errorf("ParseTCPModes (-want +got):\n%s", diff)
		}
		c := TCPConfig{GSO: GSONone, Mode: ModeXDP, Flows: 1, Dir: Up, PeerTSO: true}
		if want := "gso=none,gro=off,mode=xdp,flows=1,dir=up,peer_tso=on"; c.String() != want {
			t.Errorf("TCPConfig.String() = %q, want %q", c.String(), want)
		}
		if err := (TCPOptions{Modes: got}).Validate(); err != nil {
			t.Errorf("TCPOptions{Modes: recvmmsg, xdp}.Validate: %v", err)
		}
		if slices.Contains(DefaultTCPOptions().Modes, ModeXDP) {
			t.Errorf("DefaultTCPOptions().Modes = %v: xdp is opt-in", DefaultTCPOptions().Modes)
		}
	})
	t.Run("ip", func(t *testing.T) {
		got, err := ParseIPVersions([]string{"ipv6,4,6"})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]int{6, 4}, got); diff != "" {
			t.Errorf("ParseIPVersions (-want +got):\n%s", diff)
		}
	})
	for _, tc := range []struct {
		name  string
		parse func() error
		want  string
	}{
		{"unknown gso", func() error { _, err := ParseGSO([]string{"tso"}); return err }, `--gso: unknown GSO kind "tso" (want some of none, host, software)`},
		{"empty gso", func() error { _, err := ParseGSO([]string{" , "}); return err }, "--gso: empty list"},
		{"unknown direction", func() error { _, err := ParseDirections([]string{"sideways"}); return err }, `--directions: unknown direction "sideways" (want some of up, down)`},
		{"bad on/off", func() error { _, err := ParseOnOff("--peer-tso", []string{"maybe"}); return err }, `--peer-tso: "maybe": want on or off`},
		{"empty on/off", func() error { _, err := ParseOnOff("--gro", nil); return err }, "--gro: empty list"},
		{"zero flows", func() error { _, err := ParseFlows([]string{"0"}); return err }, `--flows: "0": want a whole number of connections from 1 to 64`},
		{"too many flows", func() error { _, err := ParseFlows([]string{"65"}); return err }, `--flows: "65"`},
		{"flows not a number", func() error { _, err := ParseFlows([]string{"four"}); return err }, `--flows: "four"`},
		{"unknown mode", func() error { _, err := ParseTCPModes([]string{"recvmmsg,af_xdp"}); return err }, `--modes: unknown dispatch mode "af_xdp" (want readv, recvmmsg, mmap or xdp)`},
		{"empty modes", func() error { _, err := ParseTCPModes([]string{""}); return err }, "--modes: empty list"},
		{"bad ip", func() error { _, err := ParseIPVersions([]string{"5"}); return err }, `--ip: "5": want 4 or 6`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.parse()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestStreamChecker(t *testing.T) {
	// The size of the sender's writes (tcpChunk, which only Linux builds
	// have).
	const tcpChunk = 64 << 10
	p := newStreamPattern()
	// What a sender writes: 64 KiB chunks from offset 0, as send does.
	var stream []byte
	for off := uint64(0); len(stream) < 3*patternLen+1000; off += tcpChunk {
		stream = append(stream, p.at(off, tcpChunk)...)
	}

	t.Run("intact, any read sizes", func(t *testing.T) {
		c := streamChecker{p: p}
		for i, rest := 1, stream; len(rest) > 0; i = i*7%65521 + 1 {
			n := min(i, len(rest))
			if err := c.check(rest[:n]); err != nil {
				t.Fatalf("check after %d bytes: %v", c.off, err)
			}
			rest = rest[n:]
		}
		if c.off != uint64(len(stream)) {
			t.Errorf("checked %d bytes, want %d", c.off, len(stream))
		}
	})
	t.Run("one read larger than the period", func(t *testing.T) {
		c := streamChecker{p: p}
		if err := c.check(stream); err != nil {
			t.Fatal(err)
		}
	})
	for _, tc := range []struct {
		name   string
		mangle func([]byte) []byte
		at     string
	}{
		{"flipped byte", func(b []byte) []byte { b[70000] ^= 1; return b }, "at byte 70000"},
		{"lost segment", func(b []byte) []byte { return append(b[:1448:1448], b[2*1448:]...) }, "at byte 1448"},
		{"duplicated segment", func(b []byte) []byte {
			return append(append(b[:2*1448:2*1448], b[1448:2*1448]...), b[2*1448:]...)
		}, "at byte 2896"},
		// A whole period repeated lines up with itself: only what does
		// not is caught. A period later, a 64 KiB write does not.
		{"chunk repeated", func(b []byte) []byte {
			return append(append(b[:tcpChunk:tcpChunk], b[:tcpChunk]...), b[tcpChunk:]...)
		}, "at byte 65536"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := streamChecker{p: p}
			err := c.check(tc.mangle(append([]byte(nil), stream...)))
			if err == nil || !strings.Contains(err.Error(), tc.at) {
				t.Errorf("check = %v, want an error %q", err, tc.at)
			}
		})
	}
}

// TestStreamPatternSeeded checks that every run writes the same stream, so
// a corruption report can be reproduced.
func TestStreamPatternSeeded(t *testing.T) {
	a, b := newStreamPattern(), newStreamPattern()
	if diff := cmp.Diff(a.twice, b.twice); diff != "" {
		t.Error("two patterns differ")
	}
	if len(a.twice) != 2*patternLen {
		t.Errorf("len(twice) = %d, want %d", len(a.twice), 2*patternLen)
	}
}
