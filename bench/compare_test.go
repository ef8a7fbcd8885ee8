package bench

import (
	"bytes"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fig is a figure's values by repeat (from 1), for resultOf.
type fig struct {
	scenario, impl, config, metric, during, unit string
	values                                       []float64
}

// resultOf builds a result holding the figures' rows.
func resultOf(figs ...fig) *SuiteResult {
	res := &SuiteResult{Run: RunInfo{Repeats: 1}}
	for _, f := range figs {
		if f.scenario == "" {
			f.scenario = "dispatch"
		}
		for i, v := range f.values {
			res.Records = append(res.Records, Record{Kind: KindRow, Repeat: i + 1, Row: Row{
				Scenario: f.scenario, Impl: f.impl, Config: f.config, Metric: f.metric, During: f.during, Unit: f.unit, Value: v,
			}})
			res.Run.Repeats = max(res.Run.Repeats, i+1)
		}
	}
	return res
}

func TestCompareMatchesAndNotes(t *testing.T) {
	old := resultOf(
		fig{impl: "sluice", config: "mode=mmap", metric: "rx_pps", unit: "frames/s", values: []float64{100, 110, 105}},
		fig{impl: "gvisor", config: "mode=mmap", metric: "rx_pps", unit: "frames/s", values: []float64{50, 52, 51}},
		// The same metric name as a resource, during two measurements:
		// three distinct figures.
		fig{impl: "sluice", config: "mode=mmap", metric: "rss_mib", during: "rx_pps", unit: "MiB", values: []float64{20, 21, 22}},
		fig{impl: "sluice", config: "mode=mmap", metric: "rss_mib", during: "tcp_gbps", unit: "MiB", values: []float64{30, 31, 32}},
		fig{impl: "sluice", config: "mode=readv", metric: "rx_pps", unit: "frames/s", values: []float64{7}},
		fig{impl: "sluice", config: "mode=gone", metric: "rx_pps", unit: "frames/s", values: []float64{1, 2, 3}},
	)
	new := resultOf(
		fig{impl: "sluice", config: "mode=mmap", metric: "rx_pps", unit: "frames/s", values: []float64{130, 140, 135}},
		fig{impl: "gvisor", config: "mode=mmap", metric: "rx_pps", unit: "frames/s", values: []float64{49, 53, 51}},
		fig{impl: "sluice", config: "mode=mmap", metric: "rss_mib", during: "rx_pps", unit: "MiB", values: []float64{25, 26, 27}},
		fig{impl: "sluice", config: "mode=mmap", metric: "rss_mib", during: "tcp_gbps", unit: "MiB", values: []float64{28, 29, 30}},
		fig{impl: "sluice", config: "mode=readv", metric: "rx_pps", unit: "frames/s", values: []float64{8}},
		fig{impl: "sluice", config: "mode=new", metric: "rx_pps", unit: "frames/s", values: []float64{1}},
	)
	lines := Compare(old, new)
	type got struct{ impl, config, metric, during, change, note string }
	var gots []got
	for _, l := range lines {
		ch := "-"
		if !math.IsNaN(l.Change) {
			ch = fmt.Sprintf("%+.1f", 100*l.Change)
		}
		gots = append(gots, got{l.Impl, l.Config, l.Metric, l.During, ch, l.Note})
	}
	// In the summary's order: the measured metric in every config, then
	// the resource metrics taken during it; rss_mib during tcp_gbps has
	// no tcp_gbps line to follow and comes as a metric of its own.
	want := []got{
		{"sluice", "mode=mmap", "rx_pps", "", "+28.6", "ranges do not overlap: better (Mann-Whitney p=0.10, n=3+3, not significant at 5 %)"},
		{"gvisor", "mode=mmap", "rx_pps", "", "+0.0", "ranges overlap: within noise"},
		{"sluice", "mode=readv", "rx_pps", "", "+14.3", "one run each: no spread known"},
		{"sluice", "mode=gone", "rx_pps", "", "-", "only in old"},
		{"sluice", "mode=new", "rx_pps", "", "-", "only in new"},
		// More memory is worse.
		{"sluice", "mode=mmap", "rss_mib", "rx_pps", "+23.8", "ranges do not overlap: worse (Mann-Whitney p=0.10, n=3+3, not significant at 5 %)"},
		{"sluice", "mode=mmap", "rss_mib", "tcp_gbps", "-6.5", "ranges overlap: within noise"},
	}
	if d := cmp.Diff(want, gots, cmp.AllowUnexported(got{})); d != "" {
		t.Errorf("Compare (-want +got):\n%s", d)
	}
}

func TestCompareSignificantWithMoreRepeats(t *testing.T) {
	old := resultOf(fig{impl: "sluice", metric: "tcp_gbps", values: []float64{5, 5.1, 5.2, 5.3, 5.4}})
	new := resultOf(fig{impl: "sluice", metric: "tcp_gbps", values: []float64{4, 4.1, 4.2, 4.3, 4.4}})
	l := Compare(old, new)[0]
	// C(10,5) = 252 splits, 2 as extreme: p = 0.0079.
	if want := "ranges do not overlap: worse (Mann-Whitney p=0.01, n=5+5)"; l.Note != want {
		t.Errorf("note %q, want %q", l.Note, want)
	}
}

func TestWriteCompare(t *testing.T) {
	old := resultOf(fig{impl: "sluice", config: "mode=mmap,channels=1", metric: "rx_pps", unit: "frames/s", values: []float64{100000, 110000, 105000}})
	old.Machine = Machine{OS: "linux", Kernel: "6.18", CPUModel: "AMD EPYC", Cores: 2, GoVersion: "go1.26.8", SluiceVersion: "dev", SluiceCommit: "0123456789abcdef0123"}
	new := resultOf(fig{impl: "sluice", config: "mode=mmap,channels=1", metric: "rx_pps", unit: "frames/s", values: []float64{90000, 95000, 99000}})
	new.Machine = old.Machine
	new.Machine.Kernel = "6.19"
	var buf bytes.Buffer
	if err := WriteCompare(&buf, old, new); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"old: sluice dev commit 0123456789ab, go1.26.8, linux 6.18, AMD EPYC, 2 cores\n",
		"warning: the runs were on different machines or kernels (kernel 6.18 vs 6.19)",
		"scenario  metric  unit      config                impl    old                     new                  change  note",
		"dispatch  rx_pps  frames/s  mode=mmap,channels=1  sluice  105000 (100000–110000)  95000 (90000–99000)  -9.5%   ranges do not overlap: worse",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
