package bench

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/testenv"
)

// TestRunDispatchXDP runs the dispatch scenario briefly in the xdp mode,
// one and two channels, next to mmap: sluice's AF_XDP endpoint must have
// every figure, gVisor's every figure on one channel (tx_pps may be zero:
// its sends stall, see xdp_gvisor_unsafe_linux.go) and none on two (left
// out on purpose, not an error), and the run must leave no namespace,
// descriptor or mapping behind, gVisor's endpoint included. Speed is not
// asserted.
func TestRunDispatchXDP(t *testing.T) {
	testenv.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	fds := openFDs(t)
	var progress strings.Builder
	rep, err := RunDispatch(ctx, DispatchOptions{
		Duration: 200 * time.Millisecond,
		Modes:    []dataplane.Mode{ModeXDP, dataplane.PacketMMap},
		Channels: []int{1, 2},
		Progress: &progress,
	})
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatalf("RunDispatch: %v", err)
	}
	var table strings.Builder
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	table.WriteString("\n")
	if err := WriteXDPComparison(&table, rep); err != nil {
		t.Fatal(err)
	}
	t.Logf("table:\n%s", table.String())

	got := map[string]float64{}
	for _, r := range rep.Rows {
		got[r.Impl+" "+r.Config+" "+r.Metric] = r.Value
	}
	for _, metric := range DispatchMetrics {
		for _, key := range []string{
			"sluice mode=xdp,channels=1 " + metric,
			"sluice mode=xdp,channels=2 " + metric,
			"gvisor mode=xdp,channels=1 " + metric,
		} {
			v, ok := got[key]
			switch {
			case !ok:
				t.Errorf("no row for %q", key)
			case v <= 0 && !(strings.HasPrefix(key, "gvisor") && metric == MetricTXPPS):
				t.Errorf("row %q = %v, want > 0", key, v)
			}
		}
		if _, ok := got["gvisor mode=xdp,channels=2 "+metric]; ok {
			t.Errorf("gVisor's single-queue endpoint measured on two channels (%s)", metric)
		}
	}
	if !strings.Contains(progress.String(), "not measured") {
		t.Error("progress does not say why gVisor's endpoint was left out on two channels")
	}
	if !strings.Contains(table.String(), "xdp/mmap") {
		t.Error("no xdp comparison table")
	}
	assertNoNamespacesLeft(t)
	if diff := cmp.Diff(fds, openFDs(t)); diff != "" {
		t.Errorf("descriptors left open or closed by the run (-before +after):\n%s", diff)
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(maps), "\n") {
		if strings.Contains(line, "socket:[") || strings.Contains(line, "xdp") {
			t.Errorf("mapping left behind: %s", line)
		}
	}
}
