package bench

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// sandboxLike is a result shaped like the sandbox scenario's: sluice in
// several modes, peers (pasta, the kernel) without a mode, so they are
// matched to sluice's lines by the subset of the config they share.
func sandboxLike() *SuiteResult {
	res := resultOf(
		fig{scenario: "sandbox", impl: "sluice", config: "mode=mmap,dir=up", metric: "tcp_gbps", unit: "Gbit/s", values: []float64{6, 7, 8}},
		fig{scenario: "sandbox", impl: "sluice", config: "mode=readv,dir=up", metric: "tcp_gbps", unit: "Gbit/s", values: []float64{5, 5, 5}},
		fig{scenario: "sandbox", impl: "pasta", config: "dir=up", metric: "tcp_gbps", unit: "Gbit/s", values: []float64{1, 2, 4}},
		fig{scenario: "sandbox", impl: "kernel", config: "dir=up", metric: "tcp_gbps", unit: "Gbit/s", values: []float64{12, 13, 14}},
		fig{scenario: "sandbox", impl: "pasta", config: "dir=down", metric: "tcp_gbps", unit: "Gbit/s", values: []float64{3, 3, 3}},
		fig{scenario: "dispatch", impl: "sluice", config: `mode=<b>&"x'`, metric: "rx_pps", unit: "frames/s", values: []float64{400000, 410000, 420000}},
		fig{scenario: "dispatch", impl: "gvisor", config: `mode=<b>&"x'`, metric: "rx_pps", unit: "frames/s", values: []float64{200000, 210000, 190000}},
		fig{scenario: "dispatch", impl: "sluice", config: `mode=<b>&"x'`, metric: "rss_mib", during: "rx_pps", unit: "MiB", values: []float64{20, 21, 22}},
	)
	res.Machine = Machine{OS: "linux", Arch: "amd64", Kernel: "6.18.0", CPUModel: "AMD EPYC", Cores: 2, GoVersion: "go1.26.8", SluiceVersion: "dev", SluiceCommit: "abc"}
	res.Run.DurationSec = 1
	res.Records = append(res.Records,
		Record{Kind: KindSkip, Row: Row{Scenario: "xdp"}, Reason: "no AF_XDP <here>"},
		Record{Kind: KindSkip, Row: Row{Scenario: "sandbox", Impl: "slirp4netns"}, Reason: "not installed"},
		Record{Kind: KindError, Repeat: 2, Row: Row{Scenario: "dispatch", Config: "metric=tx_pps"}, Error: "bench: it\nbroke"},
	)
	for i := range 5 {
		for _, impl := range []string{"sluice", "pasta"} {
			res.Records = append(res.Records, Record{Kind: KindSample, Repeat: 1, TimeSec: float64(i+1) * 0.2,
				Row: Row{Scenario: "sandbox", Impl: impl, Config: "mode=mmap,dir=up", Metric: "tcp_gbps", Unit: "Gbit/s", Value: float64(5 + i)}})
		}
	}
	return res
}

func TestWriteSummary(t *testing.T) {
	var buf bytes.Buffer
	if err := sandboxLike().WriteSummary(&buf, map[string]string{"sandbox": "sluice run against its peers"}); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"3 repeats of the plan, 1s windows",
		"- Machine: linux 6.18.0/amd64, AMD EPYC, 2 cores",
		"## sandbox\n\nsluice run against its peers.\n",
		"| metric | unit | mode | dir | sluice | pasta | kernel | sluice/pasta | sluice/kernel |",
		// Median and range; the peers' own config in brackets; the ratio
		// of the medians and the range of the per-repeat ratios
		// (6/1, 7/2, 8/4).
		"| tcp_gbps | Gbit/s | mmap | up | 7.00 (6.00–8.00) | 2.00 (1.00–4.00) [dir=up] | 13.00 (12.00–14.00) [dir=up] | 3.50 (2.00–6.00) | 0.54 (0.50–0.57) |",
		"| tcp_gbps | Gbit/s | readv | up | 5.00 (5.00–5.00) |",
		// pasta's downstream figure has no sluice line to go with.
		"| tcp_gbps | Gbit/s | - | down | - | 3.00 (3.00–3.00) | - | - | - |",
		"| rss_mib during rx_pps | MiB |",
		"## Skipped\n\n- xdp: no AF_XDP <here>\n- sandbox impl=slirp4netns: not installed\n",
		"## Failed\n\n- dispatch metric=tx_pps (repeat 2): bench: it; broke\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	// pasta's "dir=up" line was shown against sluice's and is not
	// repeated on its own.
	if n := strings.Count(out, "| tcp_gbps | Gbit/s | - | up |"); n != 0 {
		t.Errorf("pasta's matched line printed on its own %d times:\n%s", n, out)
	}
}

var svgRE = regexp.MustCompile(`(?s)<svg .*?</svg>`)

// decodeSVG checks that s is well-formed XML and returns its elements'
// names with their attributes.
func decodeSVG(t *testing.T, s string) []xml.StartElement {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(s))
	d.Strict = true
	var els []xml.StartElement
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return els
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v\n%s", err, s)
		}
		if se, ok := tok.(xml.StartElement); ok {
			els = append(els, se.Copy())
		}
	}
}

func attr(e xml.StartElement, name string) string {
	for _, a := range e.Attr {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

func TestWriteHTML(t *testing.T) {
	var buf bytes.Buffer
	if err := sandboxLike().WriteHTML(&buf, nil); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if strings.Contains(out, "<script") || strings.Contains(out, "http://") && strings.Count(out, "http://") != strings.Count(out, `xmlns="http://www.w3.org/2000/svg"`) {
		t.Errorf("report loads scripts or external resources")
	}
	svgs := svgRE.FindAllString(out, -1)
	// Bar charts: sandbox tcp_gbps, dispatch rx_pps, dispatch rss_mib;
	// one over-time chart for the sandbox samples.
	if len(svgs) != 4 {
		t.Fatalf("%d SVGs, want 4:\n%s", len(svgs), out)
	}
	var dashed, paths int
	for _, s := range svgs {
		for _, e := range decodeSVG(t, s) {
			if e.Name.Local == "line" && attr(e, "stroke-dasharray") != "" {
				dashed++
			}
			if e.Name.Local == "path" && strings.Contains(attr(e, "d"), "L") {
				paths++
			}
		}
	}
	// The kernel limit on sluice's two "dir=up" groups, and in the legend.
	if dashed != 3 {
		t.Errorf("%d dashed lines, want 3 (kernel limit on two groups and the legend)", dashed)
	}
	if paths != 2 {
		t.Errorf("%d line paths, want 2 (sluice and pasta over time)", paths)
	}
	for _, want := range []string{
		`mode=&lt;b&gt;&amp;&#34;x&#39;`, // config escaped in the table
		"no AF_XDP &lt;here&gt;",
		`<td class="num better">2.05 <span class="rg">(1.95–2.21)</span></td>`, // rx_pps: 410k/200k; 400/200, 410/210, 420/190
		// pasta has no mode: said once, not in every cell.
		"pasta and kernel have no mode: such a figure was measured once",
		"<h3>Over time</h3>",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

func TestBarChartSVG(t *testing.T) {
	c := barChart{
		Title: "t", Unit: "frames/s", Impls: []string{ImplSluice, ImplGVisor, implKernel},
		Groups: []barGroup{{
			Label: "mode=mmap",
			Bars: []bar{
				{Impl: ImplSluice, Stats: Summarize([]float64{80, 90, 100})},
				{Impl: ImplGVisor, Stats: Summarize([]float64{45})},
			},
			Limit: Summarize([]float64{180}),
		}},
	}
	var widths []float64
	var whiskers int
	for _, e := range decodeSVG(t, c.svg()) {
		if e.Name.Local == "rect" && attr(e, "height") == strconv.Itoa(barHeight) {
			w, err := strconv.ParseFloat(attr(e, "width"), 64)
			if err != nil {
				t.Fatal(err)
			}
			widths = append(widths, w)
		}
		if e.Name.Local == "path" && strings.Contains(attr(e, "d"), "V") && attr(e, "stroke") == "#222222" {
			whiskers++
		}
	}
	if len(widths) != 2 {
		t.Fatalf("bars %v, want 2", widths)
	}
	// Lengths are proportional to the medians (90 and 45), from zero.
	if r := widths[0] / widths[1]; r < 1.99 || r > 2.01 {
		t.Errorf("bar widths %v: ratio %.3f, want 2", widths, r)
	}
	// The scale reaches the kernel limit (180 -> 200): 90 is 45 % of it.
	if want := 0.45 * plotWidth; widths[0] < want-0.5 || widths[0] > want+0.5 {
		t.Errorf("sluice bar %.1f px, want %.1f (90 on a 0..200 axis)", widths[0], want)
	}
	if whiskers != 1 {
		t.Errorf("%d whiskers, want 1 (only sluice has repeats)", whiskers)
	}
}

func TestNiceScale(t *testing.T) {
	for _, tc := range []struct{ hi, top, step float64 }{
		{591262, 600000, 200000},
		{5.61, 6, 2},
		{13, 15, 5},
		{0.7, 0.8, 0.2},
		{100, 100, 20},
		{0, 1, 0.2},
	} {
		top, step := niceScale(tc.hi, 5)
		if top != tc.top || step != tc.step {
			t.Errorf("niceScale(%v) = %v, %v; want %v, %v", tc.hi, top, step, tc.top, tc.step)
		}
	}
}

func TestFormatShort(t *testing.T) {
	for v, want := range map[float64]string{
		591262: "591k", 1240000: "1.24M", 5.61: "5.61", 0.25: "0.25", 0: "0", 250: "250", 12000: "12k", 2e9: "2G",
	} {
		if got := formatShort(v); got != want {
			t.Errorf("formatShort(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestSplitCommonKeys(t *testing.T) {
	common, rest := splitCommonKeys([]string{"mode=mmap,channels=1", "mode=readv,channels=1"})
	if common != "channels=1" || strings.Join(rest, "|") != "mode=mmap|mode=readv" {
		t.Errorf("got %q %q", common, rest)
	}
	common, rest = splitCommonKeys([]string{"mode=mmap"})
	if common != "" || rest[0] != "mode=mmap" {
		t.Errorf("one config: got %q %q, want it kept whole", common, rest)
	}
}

func TestBarChartLongLabels(t *testing.T) {
	long := strings.Repeat("k=v ", 30) // 120 characters
	c := barChart{Title: "t", Unit: "u", Impls: []string{ImplSluice}, Groups: []barGroup{
		{Label: "short", Bars: []bar{{Impl: ImplSluice, Stats: Summarize([]float64{1})}}},
		{Label: long, Bars: []bar{{Impl: ImplSluice, Stats: Summarize([]float64{2})}}},
	}}
	svg := c.svg()
	decodeSVG(t, svg)
	if !strings.Contains(svg, "…</text>") || strings.Contains(svg, long) {
		t.Errorf("a label wider than the label column is not cut short")
	}
	if !strings.Contains(svg, `width="1130"`) {
		t.Errorf("chart not widened to the widest label column (440 + %d + %d)", plotWidth, valueMargin)
	}
}

// TestVerdictNoRatio: a ratio of medians that does not exist (both 0)
// prints as "-" and gets no colour, whatever single repeats say.
func TestVerdictNoRatio(t *testing.T) {
	rr := Summarize([]float64{0, 0, math.NaN()})
	if c := verdictClass(MetricDroppedFrames, math.NaN(), rr); c != "" {
		t.Errorf("verdict %q for no ratio, want none", c)
	}
	if c := verdictClass(MetricDroppedFrames, 0.5, Summarize([]float64{0.4, 0.5, 0.6})); c != " better" {
		t.Errorf("verdict %q for fewer drops in every repeat, want better", c)
	}
}
