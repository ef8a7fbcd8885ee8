package bench

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseIperf3(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want float64
		err  string
	}{
		{
			name: "receiver figure",
			// Trimmed from iperf3 3.12 -c --json: the sender queued
			// more than the receiver got; the receiver's figure counts.
			in:   `{"start":{},"intervals":[],"end":{"sum_sent":{"bytes":1500000000,"bits_per_second":12000000000,"retransmits":3},"sum_received":{"bytes":1250000000,"bits_per_second":10000000000}}}`,
			want: 10,
		},
		{name: "iperf3 error", in: `{"start":{},"end":{},"error":"unable to connect to server: Connection refused"}`, err: "Connection refused"},
		{name: "nothing received", in: `{"end":{"sum_received":{"bits_per_second":0}}}`, err: "no received data"},
		{name: "not json", in: `iperf3: error - unable to connect`, err: "parse iperf3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseIperf3([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseIperf3 = %v, %v; want error with %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseIperf3 = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestParseRR(t *testing.T) {
	if got, err := ParseRR([]byte(`{"round_trips":1000,"median_us":42.5}` + "\n")); err != nil || got != 42.5 {
		t.Errorf("ParseRR = %v, %v; want 42.5", got, err)
	}
	for _, in := range []string{`{"error":"connect to 10.200.0.1:7007: refused"}`, `{"round_trips":0,"median_us":0}`, ``} {
		if _, err := ParseRR([]byte(in)); err == nil {
			t.Errorf("ParseRR(%q) = nil error", in)
		}
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}, {[]float64{7}, 7}} {
		if got := Median(tc.in); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if !math.IsNaN(Median(nil)) {
		t.Error("Median(nil) is not NaN")
	}
}

func TestSandboxConfigs(t *testing.T) {
	o := SandboxOptions{Duration: time.Second, Modes: []string{"readv", "mmap"}, Flows: []int{1, 4}, Directions: []Direction{Up, Down}, TCP: true, RR: true}
	names := func(impl string) []string {
		var out []string
		for _, c := range o.configs(impl, []string{StackNetstack}) {
			out = append(out, c.Metric+" "+c.String())
		}
		return out
	}
	wantSluice := []string{
		"tcp_gbps mode=readv,flows=1,dir=up", "tcp_gbps mode=readv,flows=1,dir=down",
		"tcp_gbps mode=readv,flows=4,dir=up", "tcp_gbps mode=readv,flows=4,dir=down",
		"rr_us mode=readv,msg=64",
		"tcp_gbps mode=mmap,flows=1,dir=up", "tcp_gbps mode=mmap,flows=1,dir=down",
		"tcp_gbps mode=mmap,flows=4,dir=up", "tcp_gbps mode=mmap,flows=4,dir=down",
		"rr_us mode=mmap,msg=64",
	}
	if diff := cmp.Diff(wantSluice, names(ImplSluice)); diff != "" {
		t.Errorf("sluice configs (-want +got):\n%s", diff)
	}
	// Peers have no dispatch mode: measured once.
	wantPeer := []string{
		"tcp_gbps flows=1,dir=up", "tcp_gbps flows=1,dir=down",
		"tcp_gbps flows=4,dir=up", "tcp_gbps flows=4,dir=down", "rr_us msg=64",
	}
	if diff := cmp.Diff(wantPeer, names(ImplPasta)); diff != "" {
		t.Errorf("pasta configs (-want +got):\n%s", diff)
	}
}

func TestSandboxStacks(t *testing.T) {
	o := SandboxOptions{Modes: []string{"recvmmsg"}, Flows: []int{1}, Directions: []Direction{Up}, TCP: true, RR: true,
		Stacks: []string{StackNetstack, "bridge", "missing"}, Registered: []string{"bridge", StackNetstack}}
	run, skips := o.runnableStacks()
	if diff := cmp.Diff([]string{StackNetstack, "bridge"}, run); diff != "" {
		t.Errorf("runnable stacks (-want +got):\n%s", diff)
	}
	if len(skips) != 1 || !strings.Contains(skips[0], "stack=missing: not registered") || !strings.Contains(skips[0], "registered: bridge, netstack") {
		t.Errorf("skips %q: want stack=missing named as not registered, with the registered list", skips)
	}
	var got []string
	for _, c := range o.configs(ImplSluice, run) {
		got = append(got, c.Metric+" "+c.String())
	}
	want := []string{
		"tcp_gbps mode=recvmmsg,flows=1,dir=up", "rr_us mode=recvmmsg,msg=64",
		"tcp_gbps stack=bridge,mode=recvmmsg,flows=1,dir=up", "rr_us stack=bridge,mode=recvmmsg,msg=64",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("configs (-want +got):\n%s", diff)
	}
	// Without a list of registered stacks, every stack is tried.
	o.Registered = nil
	if run, skips := o.runnableStacks(); len(run) != 3 || len(skips) != 0 {
		t.Errorf("unchecked: run %q, skips %q", run, skips)
	}
}

func TestSandboxValidate(t *testing.T) {
	ok := DefaultSandboxOptions()
	for _, tc := range []struct {
		name string
		edit func(*SandboxOptions)
		err  string // "" = valid
	}{
		{"defaults", func(*SandboxOptions) {}, ""},
		{"short duration", func(o *SandboxOptions) { o.Duration = time.Millisecond }, "--duration"},
		{"unknown impl", func(o *SandboxOptions) { o.Impls = []string{"runsc"} }, "--impls"},
		{"unknown mode", func(o *SandboxOptions) { o.Modes = []string{"xdp"} }, "--modes"},
		{"no modes, no sluice", func(o *SandboxOptions) { o.Modes = nil; o.Impls = []string{ImplKernel} }, ""},
		{"no metric", func(o *SandboxOptions) { o.TCP, o.RR = false, false }, "--metrics"},
		{"too many flows", func(o *SandboxOptions) { o.Flows = []int{MaxFlows + 1} }, "--flows"},
		{"no stacks", func(o *SandboxOptions) { o.Stacks = nil }, "--stacks"},
		{"bad stack name", func(o *SandboxOptions) { o.Stacks = []string{"a=b"} }, "--stacks"},
		{"no stacks, no sluice", func(o *SandboxOptions) { o.Stacks = nil; o.Impls = []string{ImplKernel} }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			tc.edit(&o)
			err := o.Validate()
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("Validate() = %v, want error containing %q", err, tc.err)
			}
		})
	}
}

func TestWriteSandboxTable(t *testing.T) {
	rows := []Row{
		{Scenario: ScenarioSandbox, Impl: ImplSluice, Config: "mode=mmap,flows=1,dir=up", Metric: MetricTCPGbps, Value: 8, Unit: UnitGbps},
		{Scenario: ScenarioSandbox, Impl: ImplSluice, Config: "mode=mmap,msg=64", Metric: MetricRRMicros, Value: 100, Unit: UnitMicros},
		{Scenario: ScenarioSandbox, Impl: ImplPasta, Config: "flows=1,dir=up", Metric: MetricTCPGbps, Value: 2, Unit: UnitGbps},
		{Scenario: ScenarioSandbox, Impl: ImplKernel, Config: "flows=1,dir=up", Metric: MetricTCPGbps, Value: 16, Unit: UnitGbps},
		{Scenario: ScenarioSandbox, Impl: ImplKernel, Config: "msg=64", Metric: MetricRRMicros, Value: 50, Unit: UnitMicros},
		{Scenario: ScenarioSandbox, Impl: ImplKernel, Config: "flows=4,dir=up", Metric: MetricTCPGbps, Value: 30, Unit: UnitGbps},
	}
	var b bytes.Buffer
	if err := WriteSandboxTable(&b, rows); err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSpace(b.String()), "\n")
	for i := range got {
		got[i] = strings.Join(strings.Fields(got[i]), " ")
	}
	want := []string{
		"metric unit mode flows dir sluice pasta kernel sluice/pasta sluice/kernel",
		"tcp_gbps Gbit/s mmap 1 up 8.00 2.00 16.00 4.00 0.50",
		"rr_us us mmap - - 100.0 - 50.00 - 2.00",
		"tcp_gbps Gbit/s - 4 up - - 30.00 - -",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("table (-want +got):\n%s", diff)
	}
}

func TestWriteSandboxTableStacks(t *testing.T) {
	rows := []Row{
		{Scenario: ScenarioSandbox, Impl: ImplSluice, Config: "mode=recvmmsg,flows=1,dir=up", Metric: MetricTCPGbps, Value: 4, Unit: UnitGbps},
		{Scenario: ScenarioSandbox, Impl: ImplSluice, Config: "stack=bridge,mode=recvmmsg,flows=1,dir=up", Metric: MetricTCPGbps, Value: 12, Unit: UnitGbps},
		{Scenario: ScenarioSandbox, Impl: ImplKernel, Config: "flows=1,dir=up", Metric: MetricTCPGbps, Value: 16, Unit: UnitGbps},
	}
	var b bytes.Buffer
	if err := WriteSandboxTable(&b, rows); err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSpace(b.String()), "\n")
	for i := range got {
		got[i] = strings.Join(strings.Fields(got[i]), " ")
	}
	want := []string{
		"metric unit stack mode flows dir sluice kernel sluice/kernel",
		"tcp_gbps Gbit/s netstack recvmmsg 1 up 4.00 16.00 0.25",
		"tcp_gbps Gbit/s bridge recvmmsg 1 up 12.00 16.00 0.75",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("table (-want +got):\n%s", diff)
	}
}

func TestSandboxSuiteStackStep(t *testing.T) {
	o := sandboxOptionsFor(SuiteOptions{Duration: time.Second}, sandboxStep{impl: ImplSluice, mode: "recvmmsg", stack: "bridge"})
	var got []string
	for _, c := range o.configs(ImplSluice, o.Stacks) {
		got = append(got, c.Metric+" "+c.String())
	}
	want := []string{
		"tcp_gbps stack=bridge,mode=recvmmsg,flows=1,dir=up", "tcp_gbps stack=bridge,mode=recvmmsg,flows=1,dir=down",
		"tcp_gbps stack=bridge,mode=recvmmsg,flows=4,dir=up", "tcp_gbps stack=bridge,mode=recvmmsg,flows=4,dir=down",
		"rr_us stack=bridge,mode=recvmmsg,msg=64",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("configs of a plugin stack's step (-want +got):\n%s", diff)
	}
	// The netstack's steps say no stack.
	o = sandboxOptionsFor(SuiteOptions{Duration: time.Second, Quick: true}, sandboxStep{impl: ImplSluice, mode: "mmap"})
	if cs := o.configs(ImplSluice, o.Stacks); len(cs) == 0 || cs[0].String() != "mode=mmap,flows=1,dir=up" {
		t.Errorf("netstack step configs %v", cs)
	}
}
