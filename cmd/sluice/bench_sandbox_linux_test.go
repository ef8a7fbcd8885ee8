package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sluicenet/sluice/bench"
	"github.com/sluicenet/sluice/internal/netns"
	"github.com/sluicenet/sluice/internal/testenv"
	"github.com/sluicenet/sluice/sandbox"
)

// TestBenchSandboxTiny runs the smallest sandbox benchmark (kernel and
// sluice, one flow up, rr_us, 1 s windows) and checks that every figure
// is there and positive, and that the run left no namespace or process.
// It asserts nothing about speed.
func TestBenchSandboxTiny(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "iperf3", "nsenter")
	// sluice run and the rr client are sluice re-executed: the real
	// binary, not the test's.
	bin := buildSluice(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	o := benchSandboxOptions{
		duration:   time.Second,
		impls:      []string{bench.ImplSluice, bench.ImplKernel},
		modes:      []string{"recvmmsg"},
		flows:      []string{"1"},
		directions: []string{"up"},
		metrics:    []string{bench.MetricTCPGbps, bench.MetricRRMicros},
		json:       true,
		exe:        bin,
	}
	var stdout, stderr bytes.Buffer
	if err := runBenchSandbox(ctx, o, &stdout, &stderr); err != nil {
		t.Fatalf("bench sandbox: %v\nstderr:\n%s", err, stderr.String())
	}
	got := map[string]float64{}
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		var r bench.Row
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if r.Scenario != bench.ScenarioSandbox {
			t.Errorf("row %+v: scenario %q", r, r.Scenario)
		}
		got[fmt.Sprintf("%s %s %s", r.Impl, r.Metric, r.Config)] = r.Value
	}
	for _, k := range []string{
		"sluice tcp_gbps mode=recvmmsg,flows=1,dir=up",
		"sluice rr_us mode=recvmmsg,msg=64",
		"kernel tcp_gbps flows=1,dir=up",
		"kernel rr_us msg=64",
	} {
		if v, ok := got[k]; !ok || v <= 0 {
			t.Errorf("%s = %v (present %v), want a positive figure; output:\n%s", k, v, ok, stdout.String())
		}
	}
	if len(got) != 4 {
		t.Errorf("got %d rows, want 4:\n%s", len(got), stdout.String())
	}
	assertNothingLeft(t)
}

// TestBenchSandboxStacks measures round trips through the netstack and the
// bridge stack side by side, and a stack this sluice has not registered is
// skipped with the reason. It asserts nothing about speed.
func TestBenchSandboxStacks(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "nsenter", "nft")
	bin := buildSluice(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	o := benchSandboxOptions{
		duration:   time.Second,
		impls:      []string{bench.ImplSluice},
		modes:      []string{"recvmmsg"},
		stacks:     []string{bench.StackNetstack, sandbox.BridgeName, "no-such-stack"},
		flows:      []string{"1"},
		directions: []string{"up"},
		metrics:    []string{bench.MetricRRMicros},
		json:       true,
		exe:        bin,
	}
	var stdout, stderr bytes.Buffer
	if err := runBenchSandbox(ctx, o, &stdout, &stderr); err != nil {
		t.Fatalf("bench sandbox: %v\nstderr:\n%s", err, stderr.String())
	}
	got := map[string]float64{}
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		var r bench.Row
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		got[fmt.Sprintf("%s %s %s", r.Impl, r.Metric, r.Config)] = r.Value
	}
	for _, k := range []string{
		"sluice rr_us mode=recvmmsg,msg=64",
		"sluice rr_us stack=bridge,mode=recvmmsg,msg=64",
	} {
		if v, ok := got[k]; !ok || v <= 0 {
			t.Errorf("%s = %v (present %v), want a positive figure; output:\n%s", k, v, ok, stdout.String())
		}
	}
	if len(got) != 2 {
		t.Errorf("got %d rows, want 2:\n%s", len(got), stdout.String())
	}
	if want := "skipped sluice stack=no-such-stack: not registered in this sluice (registered: "; !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr %q lacks %q", stderr.String(), want)
	}
	assertNothingLeft(t)
}

// assertNothingLeft checks that no namespace of this process's sandbox
// benchmark and no child process remain.
func assertNothingLeft(t *testing.T) {
	t.Helper()
	entries, err := os.ReadDir(netns.RunDir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	suffix := fmt.Sprintf("-%d", os.Getpid())
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "sluice-sbx-") && strings.HasSuffix(e.Name(), suffix) {
			t.Errorf("namespace %s left behind", e.Name())
		}
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		stat, err := os.ReadFile("/proc/" + p.Name() + "/stat")
		if err != nil {
			continue
		}
		// The fields after the command's ")" are state and ppid.
		i := bytes.LastIndexByte(stat, ')')
		var state string
		var ppid int
		if i < 0 {
			continue
		}
		if _, err := fmt.Sscanf(string(stat[i+1:]), " %s %d", &state, &ppid); err == nil && ppid == os.Getpid() {
			t.Errorf("child process %s left behind: %s", p.Name(), stat[:i+1])
		}
	}
}

func TestBenchSandboxFlags(t *testing.T) {
	base := benchSandboxOptions{
		duration: time.Second, impls: []string{"kernel"}, modes: []string{"mmap"},
		flows: []string{"1"}, directions: []string{"up"}, metrics: []string{"tcp_gbps"}, exe: "/bin/true",
	}
	for _, tc := range []struct {
		name string
		edit func(*benchSandboxOptions)
		err  string
	}{
		{"valid", func(*benchSandboxOptions) {}, ""},
		{"flows not a number", func(o *benchSandboxOptions) { o.flows = []string{"two"} }, "--flows"},
		{"bad direction", func(o *benchSandboxOptions) { o.directions = []string{"sideways"} }, "--directions"},
		{"bad metric", func(o *benchSandboxOptions) { o.metrics = []string{"rx_pps"} }, "--metrics"},
		{"bad impl", func(o *benchSandboxOptions) { o.impls = []string{"runsc"} }, "--impls"},
		{"bad duration", func(o *benchSandboxOptions) { o.duration = time.Hour }, "--duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base
			tc.edit(&o)
			_, err := o.toBench(nil)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("toBench() = %v, want error containing %q", err, tc.err)
			}
		})
	}
}
