package bench

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func sampleRows() []Row {
	return []Row{
		{Scenario: "dispatch", Impl: ImplSluice, Config: "mode=mmap,channels=2", Metric: MetricRXPPS, Value: 412345.4, Unit: UnitFramesPerSec},
		{Scenario: "dispatch", Impl: ImplSluice, Config: "mode=mmap,channels=2", Metric: MetricRSSMiB, Value: 21.4, Unit: UnitMiB, During: MetricRXPPS},
		{Scenario: "dispatch", Impl: ImplGVisor, Config: "mode=mmap,channels=2", Metric: MetricRXPPS, Value: 206172.7, Unit: UnitFramesPerSec},
		{Scenario: "dispatch", Impl: ImplGVisor, Config: "mode=mmap,channels=2", Metric: MetricRSSMiB, Value: 22, Unit: UnitMiB, During: MetricRXPPS},
		// gvisor's tcp_gbps failed: no row, so no ratio either.
		{Scenario: "dispatch", Impl: ImplSluice, Config: "mode=readv,channels=1", Metric: MetricTCPGbps, Value: 5.5, Unit: UnitGbps},
		{Scenario: "dispatch", Impl: ImplSluice, Config: "mode=readv,channels=1", Metric: MetricRSSMiB, Value: 30.25, Unit: UnitMiB, During: MetricTCPGbps},
	}
}

func TestWriteTable(t *testing.T) {
	rep := &Report{}
	rep.Add(sampleRows()...)
	var buf bytes.Buffer
	if err := rep.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"metric    unit      mode   channels  sluice  gvisor  sluice/gvisor  rss_mib sluice  rss_mib gvisor\n" +
		"rx_pps    frames/s  mmap   2         412345  206173  2.00           21.40           22.00\n" +
		"tcp_gbps  Gbit/s    readv  1         5.50    -       -              30.25           -\n"
	if diff := cmp.Diff(want, buf.String()); diff != "" {
		t.Errorf("WriteTable (-want +got):\n%s", diff)
	}
}

func TestWriteTableSeveralScenarios(t *testing.T) {
	rep := &Report{}
	rep.Add(
		Row{Scenario: "dispatch", Impl: ImplSluice, Config: "mode=readv,channels=1", Metric: MetricRXPPS, Value: 1000, Unit: UnitFramesPerSec},
		Row{Scenario: "tcp", Impl: ImplSluice, Config: "flows=1", Metric: MetricRRMicros, Value: 46.5, Unit: UnitMicros},
	)
	var buf bytes.Buffer
	if err := rep.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d lines, want header + 2:\n%s", len(lines), buf.String())
	}
	for i, want := range [][]string{
		{"scenario", "metric", "unit", "mode", "channels", "flows", "sluice"},
		{"dispatch", "rx_pps", "frames/s", "readv", "1", "-", "1000"},
		{"tcp", "rr_us", "us", "-", "-", "1", "46.50"},
	} {
		if diff := cmp.Diff(want, strings.Fields(lines[i])); diff != "" {
			t.Errorf("line %d (-want +got):\n%s", i, diff)
		}
	}
}

func TestWriteJSON(t *testing.T) {
	rep := &Report{}
	rep.Add(sampleRows()[:2]...)
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	want := `{"scenario":"dispatch","impl":"sluice","config":"mode=mmap,channels=2","metric":"rx_pps","value":412345.4,"unit":"frames/s"}
{"scenario":"dispatch","impl":"sluice","config":"mode=mmap,channels=2","metric":"rss_mib","value":21.4,"unit":"MiB","during":"rx_pps"}
`
	if diff := cmp.Diff(want, buf.String()); diff != "" {
		t.Errorf("WriteJSON (-want +got):\n%s", diff)
	}
	// Each line decodes back to its row.
	for i, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var r Row
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if diff := cmp.Diff(sampleRows()[i], r); diff != "" {
			t.Errorf("line %d round trip (-want +got):\n%s", i, diff)
		}
	}
}

func TestRatio(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b float64
		want float64 // NaN means "no ratio"
	}{
		{name: "faster", a: 300, b: 150, want: 2},
		{name: "slower", a: 1, b: 4, want: 0.25},
		{name: "zero baseline", a: 5, b: 0, want: math.NaN()},
		{name: "negative baseline", a: 5, b: -1, want: math.NaN()},
		{name: "NaN value", a: math.NaN(), b: 1, want: math.NaN()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Ratio(tc.a, tc.b)
			if math.IsNaN(tc.want) != math.IsNaN(got) || (!math.IsNaN(got) && got != tc.want) {
				t.Errorf("Ratio(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.want)
			}
		})
	}
}

func TestFormatValue(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		want string
	}{
		{v: 1234567.8, want: "1234568"},
		{v: 1000, want: "1000"},
		{v: 123.45, want: "123.5"},
		{v: 12.345, want: "12.35"},
		{v: 0, want: "0.00"},
		{v: math.NaN(), want: "-"},
		{v: math.Inf(1), want: "-"},
	} {
		if got := FormatValue(tc.v); got != tc.want {
			t.Errorf("FormatValue(%v) = %q, want %q", tc.v, got, tc.want)
		}
	}
}

// TestWriteTableCounts checks that resource metrics that count things
// (retrans) print as whole numbers next to the others.
func TestWriteTableCounts(t *testing.T) {
	cfg := "gso=host,gro=on,mode=mmap,flows=1,dir=up,peer_tso=on"
	rep := &Report{}
	rep.Add(
		Row{Scenario: "tcp", Impl: ImplSluice, Config: cfg, Metric: MetricTCPGbps, Value: 6.5, Unit: UnitGbps},
		Row{Scenario: "tcp", Impl: ImplSluice, Config: cfg, Metric: MetricRSSMiB, Value: 20.5, Unit: UnitMiB, During: MetricTCPGbps},
		Row{Scenario: "tcp", Impl: ImplSluice, Config: cfg, Metric: MetricRetrans, Value: 0, Unit: UnitSegments, During: MetricTCPGbps},
		Row{Scenario: "tcp", Impl: ImplGVisor, Config: cfg, Metric: MetricTCPGbps, Value: 5.2, Unit: UnitGbps},
		Row{Scenario: "tcp", Impl: ImplGVisor, Config: cfg, Metric: MetricRSSMiB, Value: 19, Unit: UnitMiB, During: MetricTCPGbps},
		Row{Scenario: "tcp", Impl: ImplGVisor, Config: cfg, Metric: MetricRetrans, Value: 1234, Unit: UnitSegments, During: MetricTCPGbps},
	)
	var buf bytes.Buffer
	if err := rep.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"metric    unit    gso   gro  mode  flows  dir  peer_tso  sluice  gvisor  sluice/gvisor  rss_mib sluice  rss_mib gvisor  retrans sluice  retrans gvisor\n" +
		"tcp_gbps  Gbit/s  host  on   mmap  1      up   on        6.50    5.20    1.25           20.50           19.00           0               1234\n"
	if diff := cmp.Diff(want, buf.String()); diff != "" {
		t.Errorf("WriteTable (-want +got):\n%s", diff)
	}
}
