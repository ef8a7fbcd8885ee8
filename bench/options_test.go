package bench

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluicenet/sluice/dataplane"
)

func TestParseModes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []string
		want    []dataplane.Mode
		wantErr string
	}{
		{name: "all", in: []string{"readv,recvmmsg,mmap"}, want: []dataplane.Mode{dataplane.Readv, dataplane.RecvMMsg, dataplane.PacketMMap}},
		{name: "separate elements and spaces", in: []string{"mmap", " readv "}, want: []dataplane.Mode{dataplane.PacketMMap, dataplane.Readv}},
		{name: "duplicates dropped", in: []string{"readv,readv"}, want: []dataplane.Mode{dataplane.Readv}},
		{name: "unknown", in: []string{"readv,bogus"}, wantErr: `unknown dispatch mode "bogus"`},
		{name: "empty", in: []string{""}, wantErr: "empty list"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseModes(tc.in)
			checkErr(t, err, tc.wantErr)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ParseModes(%q) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

func TestParseChannels(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []string
		want    []int
		wantErr string
	}{
		{name: "default", in: []string{"1,2"}, want: []int{1, 2}},
		{name: "max", in: []string{"64"}, want: []int{64}},
		{name: "zero", in: []string{"0"}, wantErr: `"0": want a whole number of channels from 1 to 64`},
		{name: "too many", in: []string{"65"}, wantErr: `"65"`},
		{name: "not a number", in: []string{"two"}, wantErr: `"two"`},
		{name: "empty", in: nil, wantErr: "empty list"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseChannels(tc.in)
			checkErr(t, err, tc.wantErr)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ParseChannels(%q) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

func TestParseMetricsAndImpls(t *testing.T) {
	got, err := ParseMetrics([]string{"tcp_gbps,rx_pps"})
	if err != nil {
		t.Fatal(err)
	}
	// Canonical order, whatever the order given.
	if diff := cmp.Diff([]string{MetricRXPPS, MetricTCPGbps}, got); diff != "" {
		t.Errorf("ParseMetrics (-want +got):\n%s", diff)
	}
	_, err = ParseMetrics([]string{"rss_mib"})
	checkErr(t, err, `--metrics: unknown metric "rss_mib" (want some of rx_pps, tx_pps, tcp_gbps)`)
	_, err = ParseImpls([]string{"sluice,netmap"})
	checkErr(t, err, `--impls: unknown implementation "netmap"`)
}

func TestDispatchOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    DispatchOptions
		wantErr string
	}{
		{name: "zero value takes defaults", opts: DispatchOptions{}},
		{name: "shortest", opts: DispatchOptions{Duration: MinDuration}},
		{name: "too short", opts: DispatchOptions{Duration: 10 * time.Millisecond}, wantErr: "DispatchOptions.Duration 10ms: must be between 100ms and 10m0s"},
		{name: "negative", opts: DispatchOptions{Duration: -time.Second}, wantErr: "DispatchOptions.Duration -1s"},
		{name: "too long", opts: DispatchOptions{Duration: time.Hour}, wantErr: "DispatchOptions.Duration 1h0m0s"},
		{name: "bad mode", opts: DispatchOptions{Modes: []dataplane.Mode{7}}, wantErr: "unknown mode Mode(7)"},
		{name: "bad channels", opts: DispatchOptions{Channels: []int{0}}, wantErr: "DispatchOptions.Channels: 0 channels"},
		{name: "bad metric", opts: DispatchOptions{Metrics: []string{"rr_us"}}, wantErr: `unknown metric "rr_us"`},
		{name: "bad impl", opts: DispatchOptions{Impls: []string{"x"}}, wantErr: `unknown implementation "x"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkErr(t, tc.opts.Validate(), tc.wantErr)
		})
	}
}

func TestDefaultDispatchOptions(t *testing.T) {
	d := DefaultDispatchOptions()
	if d.Duration != 3*time.Second {
		t.Errorf("Duration = %v, want 3s", d.Duration)
	}
	if diff := cmp.Diff([]string{"readv", "recvmmsg", "mmap"}, modeNames(d.Modes)); diff != "" {
		t.Errorf("Modes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int{1, 2}, d.Channels); diff != "" {
		t.Errorf("Channels (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"rx_pps", "tx_pps", "tcp_gbps"}, d.Metrics); diff != "" {
		t.Errorf("Metrics (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"sluice", "gvisor"}, d.Impls); diff != "" {
		t.Errorf("Impls (-want +got):\n%s", diff)
	}
}

func TestWarmupFor(t *testing.T) {
	for _, tc := range []struct{ window, want time.Duration }{
		{100 * time.Millisecond, 50 * time.Millisecond},
		{time.Second, 200 * time.Millisecond},
		{time.Minute, 500 * time.Millisecond},
	} {
		if got := warmupFor(tc.window); got != tc.want {
			t.Errorf("warmupFor(%v) = %v, want %v", tc.window, got, tc.want)
		}
	}
}

func modeNames(ms []dataplane.Mode) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.String())
	}
	return out
}

// checkErr fails t unless err contains want, or is nil when want is "".
func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want != "" && err == nil:
		t.Fatalf("no error, want one containing %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Fatalf("error %q does not contain %q", err, want)
	}
}
