package bench

import (
	"strings"
	"testing"
	"time"
)

func TestCaptureOptionsValidate(t *testing.T) {
	for name, c := range map[string]struct {
		o    CaptureOptions
		want string
	}{
		"defaults":  {CaptureOptions{Sluice: "/bin/sluice"}, ""},
		"no binary": {CaptureOptions{}, "Sluice"},
		"no sluice": {CaptureOptions{Impls: []string{ImplTcpdump}}, ""},
		"short":     {CaptureOptions{Sluice: "x", Duration: time.Millisecond}, "Duration"},
		"bad via":   {CaptureOptions{Sluice: "x", Vias: []string{"readv"}}, "Vias"},
		"bad impl":  {CaptureOptions{Sluice: "x", Impls: []string{"wireshark"}}, "Impls"},
		"bad cpu":   {CaptureOptions{Sluice: "x", CPUs: []string{"both"}}, "CPUs"},
		"rounds":    {CaptureOptions{Sluice: "x", Rounds: -1}, "Rounds"},
	} {
		err := c.o.Validate()
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: %v, want an error naming %q", name, err, c.want)
		}
	}
	if v, err := ParseCaptureVias([]string{"xdp,mmap", "mmap"}); err != nil || strings.Join(v, ",") != "mmap,xdp" {
		t.Errorf("ParseCaptureVias: %v %v", v, err)
	}
	if _, err := ParseCaptureImpls([]string{"tshark"}); err == nil {
		t.Error("ParseCaptureImpls accepted tshark")
	}
	if c, err := ParseCaptureCPUs([]string{"shared"}); err != nil || len(c) != 1 {
		t.Errorf("ParseCaptureCPUs: %v %v", c, err)
	}
	if got := captureConfig("mmap", CPUShared); got != "via=mmap,cpu=shared" {
		t.Errorf("captureConfig = %q", got)
	}
}

func TestCaptureReportMedians(t *testing.T) {
	runs := []captureRun{{impl: ImplSluice, via: "mmap", cpu: CPUShared}, {impl: ImplTcpdump, via: "mmap", cpu: CPUShared}}
	results := [][]captureResult{
		{{sent: 100, captured: 90, cpu: 90 * time.Microsecond}, {sent: 300, captured: 300, cpu: 30 * time.Microsecond}, {sent: 200, captured: 150, cpu: 300 * time.Microsecond}},
		nil, // every round failed: no rows
	}
	rep := captureReport(runs, results)
	want := map[string]float64{MetricSentFrames: 200, MetricCapturedFrames: 150, MetricDroppedFrames: 10, MetricCPUPerFrame: 1}
	if len(rep.Rows) != len(want) {
		t.Fatalf("rows %+v", rep.Rows)
	}
	for _, r := range rep.Rows {
		if r.Impl != ImplSluice || r.Config != "via=mmap,cpu=shared" || r.Value != want[r.Metric] {
			t.Errorf("row %+v, want value %v", r, want[r.Metric])
		}
	}
}
