package bench

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sluicenet/sluice/dataplane"
)

func TestParseModesXDP(t *testing.T) {
	got, err := ParseModes([]string{"mmap,xdp", "xdp"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]dataplane.Mode{dataplane.PacketMMap, ModeXDP}, got); diff != "" {
		t.Errorf("ParseModes (-want +got):\n%s", diff)
	}
	if err := (DispatchOptions{Modes: got}).Validate(); err != nil {
		t.Errorf("Validate with xdp: %v", err)
	}
	if c := dispatchConfig(ModeXDP, 2); c != "mode=xdp,channels=2" {
		t.Errorf("dispatchConfig = %q", c)
	}
	if _, err := ParseModes([]string{"af_xdp"}); err == nil || !strings.Contains(err.Error(), "mmap or xdp") {
		t.Errorf("ParseModes(af_xdp) = %v, want an error listing xdp", err)
	}
}

func TestWriteXDPComparison(t *testing.T) {
	rep := &Report{}
	row := func(impl, cfg, metric string, v float64, unit string) {
		rep.Add(Row{Scenario: "dispatch", Impl: impl, Config: cfg, Metric: metric, Value: v, Unit: unit})
	}
	row("sluice", "mode=xdp,channels=1", MetricRXPPS, 300000, UnitFramesPerSec)
	row("gvisor", "mode=xdp,channels=1", MetricRXPPS, 200000, UnitFramesPerSec)
	row("sluice", "mode=mmap,channels=1", MetricRXPPS, 600000, UnitFramesPerSec)
	row("gvisor", "mode=mmap,channels=1", MetricRXPPS, 100000, UnitFramesPerSec)
	row("sluice", "mode=xdp,channels=2", MetricRXPPS, 400000, UnitFramesPerSec)
	row("sluice", "mode=readv,channels=1", MetricRXPPS, 1, UnitFramesPerSec)
	rep.Add(Row{Scenario: "dispatch", Impl: "sluice", Config: "mode=xdp,channels=1", Metric: MetricRSSMiB, Value: 30, Unit: UnitMiB, During: MetricRXPPS})
	var b strings.Builder
	if err := WriteXDPComparison(&b, rep); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	want := [][]string{
		{"metric", "unit", "channels", "sluice", "xdp", "gvisor", "xdp", "sluice", "mmap", "xdp/gvisor-xdp", "xdp/mmap"},
		{"rx_pps", "frames/s", "1", "300000", "200000", "600000", "1.50", "0.50"},
		{"rx_pps", "frames/s", "2", "400000", "-", "-", "-", "-"},
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), b.String())
	}
	for i, l := range lines {
		if diff := cmp.Diff(want[i], strings.Fields(l)); diff != "" {
			t.Errorf("line %d (-want +got):\n%s", i, diff)
		}
	}
	var empty strings.Builder
	rep2 := &Report{Rows: rep.Rows[2:4]}
	if err := WriteXDPComparison(&empty, rep2); err != nil || empty.Len() != 0 {
		t.Errorf("no xdp rows: wrote %q, %v; want nothing", empty.String(), err)
	}
}
