package bench

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

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
	// mmap has the most to release (a ring per socket) and, in gVisor, the
	// stop ordering that matters (see measureTCP).
	mode := dataplane.PacketMMap
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fds := openFDs(t)
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
	if diff := cmp.Diff(fds, openFDs(t)); diff != "" {
		t.Errorf("descriptors left open or closed by the run (-before +after):\n%s", diff)
	}
	// A ring still mapped keeps its socket, and so the namespace, alive.
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(maps), "\n") {
		if strings.Contains(line, "socket:[") {
			t.Errorf("socket mapping left behind: %s", line)
		}
	}
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

// openFDs lists this process's open descriptors and what they refer to.
func openFDs(t *testing.T) map[string]string {
	t.Helper()
	// The runtime's netpoller opens its epoll descriptors on first use;
	// make sure that has happened before counting.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	w.Close()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range ents {
		// The descriptor of the directory being read is gone already.
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil {
			out[e.Name()] = l
		}
	}
	return out
}
