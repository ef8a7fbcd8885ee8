package bench

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicenet/sluice/internal/testenv"
)

// TestRunCaptureSmoke runs the capture scenario briefly with sluice (built
// for the test) and tcpdump, on the sender's CPU so that it also runs on a
// one-CPU machine: every measurement has its rows, frames were captured,
// and the counts add up. Speed is reported, never asserted.
func TestRunCaptureSmoke(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "tcpdump", "nsenter", "taskset")
	bin := filepath.Join(t.TempDir(), "sluice")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/sluicenet/sluice/cmd/sluice").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var progress strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := RunCapture(ctx, CaptureOptions{
		Duration: 200 * time.Millisecond,
		Vias:     []string{"mmap", "recvmmsg"},
		Impls:    []string{ImplSluice, ImplTcpdump},
		CPUs:     []string{CPUShared},
		Sluice:   bin,
		Dir:      t.TempDir(),
		Progress: &progress,
	})
	t.Log(progress.String())
	if err != nil {
		t.Fatal(err)
	}
	type key struct{ impl, cfg string }
	got := map[key]map[string]float64{}
	for _, r := range rep.Rows {
		if r.Scenario != "capture" {
			t.Errorf("row %+v: scenario", r)
		}
		k := key{r.Impl, r.Config}
		if got[k] == nil {
			got[k] = map[string]float64{}
		}
		got[k][r.Metric] = r.Value
	}
	for _, k := range []key{{ImplSluice, "via=mmap,cpu=shared"}, {ImplSluice, "via=recvmmsg,cpu=shared"}, {ImplTcpdump, "via=mmap,cpu=shared"}} {
		m := got[k]
		if m[MetricCapturedFrames] <= 0 || m[MetricSentFrames] < m[MetricCapturedFrames] ||
			m[MetricSentFrames]-m[MetricCapturedFrames] != m[MetricDroppedFrames] || m[MetricCPUPerFrame] <= 0 {
			t.Errorf("%+v: %v", k, m)
		}
	}
}
