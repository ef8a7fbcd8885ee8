package bench

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/netns"
	"github.com/sluicenet/sluice/internal/testenv"
)

// TestRunDispatch runs the whole scenario briefly, for one mode and one
// channel, and checks that each implementation produced a positive value
// for every metric and that no namespace is left behind. Speed is not
// asserted.
func TestRunDispatch(t *testing.T) {
	testenv.RequireRoot(t)
	mode := dataplane.RecvMMsg
	if testing.Short() {
		mode = dataplane.Readv
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var progress strings.Builder
	rep, err := RunDispatch(ctx, DispatchOptions{
		Duration: 200 * time.Millisecond,
		Modes:    []dataplane.Mode{mode},
		Channels: []int{1},
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
	t.Logf("table:\n%s", table.String())

	got := map[string]float64{}
	for _, r := range rep.Rows {
		if r.Scenario != "dispatch" || r.Config != dispatchConfig(mode, 1) {
			t.Errorf("unexpected row %+v", r)
		}
		got[r.Impl+" "+r.Metric+" "+r.During] = r.Value
	}
	for _, impl := range Impls {
		for _, metric := range DispatchMetrics {
			for _, key := range []string{impl + " " + metric + " ", impl + " " + MetricRSSMiB + " " + metric} {
				v, ok := got[key]
				if !ok {
					t.Errorf("no row for %q", key)
				} else if v <= 0 {
					t.Errorf("row %q = %v, want > 0", key, v)
				}
			}
		}
	}
	assertNoNamespacesLeft(t)
}

// TestRunDispatchCancelled checks that cancelling the context mid-run ends
// it promptly with the context's error and removes the topology.
func TestRunDispatchCancelled(t *testing.T) {
	testenv.RequireRoot(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	_, err := RunDispatch(ctx, DispatchOptions{
		Duration: 5 * time.Second,
		Modes:    []dataplane.Mode{dataplane.Readv},
		Channels: []int{1},
		Metrics:  []string{MetricRXPPS},
	})
	if err == nil || !strings.Contains(err.Error(), context.Canceled.Error()) {
		t.Fatalf("RunDispatch after cancel = %v, want an error wrapping %v", err, context.Canceled)
	}
	assertNoNamespacesLeft(t)
}

// assertNoNamespacesLeft fails t if a namespace of this process's
// benchmarks is still under /var/run/netns.
func assertNoNamespacesLeft(t *testing.T) {
	t.Helper()
	ents, err := os.ReadDir(netns.RunDir)
	if err != nil {
		t.Fatal(err)
	}
	prefix := nsPrefix + strconv.Itoa(os.Getpid()) + "-"
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			t.Errorf("namespace %s left behind in %s", e.Name(), netns.RunDir)
		}
	}
}
