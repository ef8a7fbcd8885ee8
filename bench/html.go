package bench

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// reportCSS is the report's whole style: readable on screen and on paper,
// nothing loaded from elsewhere.
const reportCSS = `
body { font-family: sans-serif; max-width: 1400px; margin: 1.5em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 13px; }
th, td { border: 1px solid #d4d4d4; padding: 3px 6px; }
th { background: #f2f2f2; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.sluice { font-weight: bold; }
td.better { background: #e3f4e3; }
td.worse { background: #fbe3e3; }
table.facts td:first-child { color: #555; }
.interrupted { color: #a00; font-weight: bold; }
.charts { display: flex; flex-wrap: wrap; gap: 10px; }
.note { color: #555; font-size: 13px; }
.wide { overflow-x: auto; }
.rg { color: #666; font-size: 11px; }
svg { display: block; margin: 0.6em 0; }
`

// WriteHTML writes report.html: the run and the machine, and per scenario
// its table, a bar chart per metric (sluice's configurations against the
// peers and the kernel limit where there is one) and, where the scenario
// gave samples, its figures over time. descriptions (see Descriptions) may
// be nil.
func (s *SuiteResult) WriteHTML(w io.Writer, descriptions map[string]string) error {
	ew := &errWriter{w: w}
	title := "sluice bench all"
	if !s.Run.Started.IsZero() {
		title += " — " + s.Run.Started.UTC().Format("2006-01-02 15:04 UTC")
	}
	ew.printf("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>%s</title>\n<style>%s</style>\n</head>\n<body>\n", esc(title), reportCSS)
	ew.printf("<h1>sluice bench all</h1>\n")
	run := s.runLine()
	if s.Run.Interrupted {
		run = strings.Replace(esc(run), "**Interrupted**", `<span class="interrupted">Interrupted</span>`, 1)
	} else {
		run = esc(run)
	}
	ew.printf("<p>%s</p>\n", run)
	m := s.Machine
	ew.printf("<table class=\"facts\">\n")
	fact := func(k, v string) {
		if v != "" {
			ew.printf("<tr><td>%s</td><td>%s</td></tr>\n", esc(k), esc(v))
		}
	}
	fact("kernel", strings.TrimSpace(m.OS+" "+m.Kernel+" "+m.Arch))
	fact("CPU", m.CPUModel)
	if m.Cores > 0 {
		fact("cores", fmt.Sprint(m.Cores))
	}
	if m.MemoryMiB > 0 {
		fact("memory", fmt.Sprintf("%.1f GiB", m.MemoryMiB/1024))
	}
	fact("load average at the start", m.LoadAvg)
	fact("sluice", strings.TrimSpace(m.SluiceVersion+" (commit "+m.SluiceCommit+")"))
	fact("Go", m.GoVersion)
	ew.printf("</table>\n")
	if s.Run.Repeats > 1 {
		ew.printf("<p class=\"note\">Figures are medians of %d repeats, with the min–max range; bars show the median, whiskers the range. "+
			"A ratio is sluice's median over the peer's, with the range of the per-repeat ratios. "+
			"Green: sluice better than the peer in every repeat; red: worse in every repeat. "+
			"Against the kernel, the ratio is the fraction of the limit sluice reaches.</p>\n", s.Run.Repeats)
	} else {
		ew.printf("<p class=\"note\">One run of each figure: no spread is known, so small differences may be noise. " +
			"Green: sluice better than the peer; red: worse.</p>\n")
	}

	ew.printf("<p class=\"note\">Lower is better for %s; higher for the rest.</p>\n", esc(strings.Join(costMetrics, ", ")))
	tables := buildTables(s, descriptions)
	samples := s.sampleCharts()
	if len(tables) > 1 {
		ew.printf("<p>")
		for i, t := range tables {
			if i > 0 {
				ew.printf(" · ")
			}
			ew.printf("<a href=\"#%s\">%s</a>", esc(anchor(t.Scenario)), esc(t.Scenario))
		}
		ew.printf("</p>\n")
	}
	for _, t := range tables {
		ew.printf("<h2 id=\"%s\">%s</h2>\n", esc(anchor(t.Scenario)), esc(t.Scenario))
		if t.Description != "" {
			ew.printf("<p>%s.</p>\n", esc(strings.TrimSuffix(t.Description, ".")))
		}
		writeHTMLTable(ew, t)
		for _, c := range barCharts(t) {
			ew.printf("%s\n", c.svg())
		}
		if cs := samples[t.Scenario]; len(cs) > 0 {
			ew.printf("<h3>Over time</h3>\n<p class=\"note\">Each figure over its measurement window, a line per implementation; the first repeat solid, later ones lighter. ")
			if common := s.sampleCommon(t.Scenario); common != "" {
				ew.printf("All with %s. ", esc(common))
			}
			writeLegend(ew, cs)
			ew.printf("</p>\n<div class=\"charts\">\n")
			for _, c := range cs {
				ew.printf("%s\n", c.svg())
			}
			ew.printf("</div>\n")
		}
	}
	if len(tables) == 0 {
		ew.printf("<p>No figures were measured.</p>\n")
	}
	skips, errs := s.skipsAndErrors()
	if len(skips) > 0 {
		ew.printf("<h2>Skipped</h2>\n<ul>\n")
		for _, r := range skips {
			ew.printf("<li><b>%s</b>: %s</li>\n", esc(r.what()), esc(r.Reason))
		}
		ew.printf("</ul>\n")
	}
	if len(errs) > 0 {
		ew.printf("<h2>Failed</h2>\n<ul>\n")
		for _, r := range errs {
			ew.printf("<li><b>%s</b>: %s</li>\n", esc(r.what()), esc(r.Error))
		}
		ew.printf("</ul>\n")
	}
	ew.printf("</body>\n</html>\n")
	return ew.err
}

// writeLegend writes the colours of the implementations of line charts.
func writeLegend(ew *errWriter, cs []lineChart) {
	var impls []string
	for _, c := range cs {
		for _, i := range c.Impls {
			if !slices.Contains(impls, i) {
				impls = append(impls, i)
			}
		}
	}
	for _, i := range impls {
		ew.printf(`<span style="display:inline-block;width:12px;height:4px;margin:0 4px 3px 8px;background:%s"></span>%s`, colorOf(i, impls), esc(i))
	}
}

func anchor(s string) string {
	return "s-" + strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '-'
	}, strings.ToLower(s))
}

func writeHTMLTable(ew *errWriter, t *summaryTable) {
	ew.printf("<div class=\"wide\"><table>\n<tr><th>metric</th><th>unit</th>")
	for _, k := range t.CfgKeys {
		ew.printf("<th>%s</th>", esc(k))
	}
	for _, impl := range t.Impls {
		ew.printf("<th>%s</th>", esc(impl))
	}
	for _, p := range t.Peers() {
		ew.printf("<th>%s/%s</th>", ImplSluice, esc(p))
	}
	ew.printf("</tr>\n")
	for _, l := range t.Lines {
		ew.printf("<tr><td>%s</td><td>%s</td>", esc(l.MetricLabel()), esc(l.Unit))
		for _, k := range t.CfgKeys {
			v := configValue(l.Config, k)
			if v == "" {
				v = "-"
			}
			ew.printf("<td>%s</td>", esc(v))
		}
		for _, impl := range t.Impls {
			cls := "num"
			if impl == ImplSluice {
				cls += " sluice"
			}
			st, ok := l.Stats[impl]
			txt := "-"
			if ok {
				// A peer's configuration, when it has fewer
				// dimensions than the line, is said once under
				// the table (peerNote), not in every cell: the
				// cells would push the ratios out of sight.
				txt = rangeSmall(formatStats(st, l.Unit))
			}
			ew.printf("<td class=\"%s\">%s</td>", cls, txt)
		}
		for _, p := range t.Peers() {
			r, ok := l.Ratio[p]
			if !ok {
				ew.printf("<td class=\"num\">-</td>")
				continue
			}
			cls := verdictClass(l.Metric, r, l.RatioRange[p])
			if p == implKernel || l.Metric == MetricSentFrames {
				// The kernel is the limit, not a rival: the ratio
				// is how close sluice comes, never a loss. The
				// frames sent are the load a capturer was offered,
				// not something it did better or worse.
				cls = ""
			}
			ew.printf("<td class=\"num%s\">%s</td>", cls, rangeSmall(formatRatioStats(r, l.RatioRange[p])))
		}
		ew.printf("</tr>\n")
	}
	ew.printf("</table></div>\n")
	if n := peerNote(t); n != "" {
		ew.printf("<p class=\"note\">%s</p>\n", esc(n))
	}
}

// rangeSmall escapes a figure, "median (min–max)", for HTML with the
// range in small print: the median is what a reader compares, and a
// narrower table keeps the ratio columns in sight.
func rangeSmall(fig string) string {
	med, rg, ok := strings.Cut(fig, " (")
	if !ok {
		return esc(fig)
	}
	return esc(med) + ` <span class="rg">(` + esc(rg) + `</span>`
}

// peerNote names the peers measured in fewer dimensions than sluice and
// the columns they lack: "pasta and kernel have no mode: ...".
// Empty when every peer was measured in every configuration.
func peerNote(t *summaryTable) string {
	lacks := map[string][]string{} // column -> peers without it
	var cols []string
	for _, l := range t.Lines {
		for _, p := range t.Peers() {
			pc, ok := l.PeerConfig[p]
			if !ok {
				continue
			}
			for _, kv := range splitConfig(l.Config) {
				if configValue(pc, kv[0]) != "" || slices.Contains(lacks[kv[0]], p) {
					continue
				}
				if lacks[kv[0]] == nil {
					cols = append(cols, kv[0])
				}
				lacks[kv[0]] = append(lacks[kv[0]], p)
			}
		}
	}
	var parts []string
	for _, c := range cols {
		ps := lacks[c]
		slices.SortFunc(ps, func(a, b string) int { return slices.Index(t.Impls, a) - slices.Index(t.Impls, b) })
		verb := "has"
		if len(ps) > 1 {
			verb = "have"
		}
		parts = append(parts, fmt.Sprintf("%s %s no %s", andList(ps), verb, c))
	}
	if len(parts) == 0 {
		return ""
	}
	return strings.Join(parts, "; ") + ": such a figure was measured once and stands on every line it matches in the other columns."
}

// andList joins words as prose: "a", "a and b", "a, b and c".
func andList(words []string) string {
	if len(words) <= 1 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " and " + words[len(words)-1]
}

// verdictClass colours a ratio cell: better or worse only when every
// repeat agrees (the whole ratio range is on one side of 1).
func verdictClass(metric string, r float64, rr Stats) string {
	if math.IsNaN(r) {
		// No ratio of the medians (both 0, say), printed as "-": no
		// verdict either, whatever single repeats say.
		return ""
	}
	lo, hi := r, r
	if rr.N > 0 {
		lo, hi = rr.Min, rr.Max
	}
	if math.IsNaN(lo) || math.IsNaN(hi) {
		return ""
	}
	better, worse := lo > 1, hi < 1
	if lowerIsBetter(metric) {
		better, worse = worse, better
	}
	switch {
	case better:
		return " better"
	case worse:
		return " worse"
	}
	return ""
}

// barCharts makes a table's bar charts: one per metric (resource metrics
// per measurement they were taken during), a group per configuration.
func barCharts(t *summaryTable) []barChart {
	var (
		charts []barChart
		byKey  = map[string]int{}
	)
	for _, l := range t.Lines {
		k := l.MetricLabel()
		i, ok := byKey[k]
		if !ok {
			i = len(charts)
			byKey[k] = i
			charts = append(charts, barChart{
				Title:         t.Scenario + ": " + k,
				Unit:          l.Unit,
				LowerIsBetter: lowerIsBetter(l.Metric),
			})
		}
		c := &charts[i]
		g := barGroup{Label: l.Config, Limit: Stats{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}}
		for _, impl := range t.Impls {
			st, ok := l.Stats[impl]
			if !ok || st.N == 0 {
				continue
			}
			if !slices.Contains(c.Impls, impl) {
				c.Impls = append(c.Impls, impl)
			}
			if impl == implKernel {
				g.Limit = st
				continue
			}
			g.Bars = append(g.Bars, bar{Impl: impl, Stats: st})
		}
		c.Groups = append(c.Groups, g)
	}
	for i := range charts {
		c := &charts[i]
		// Keys with one value across the chart go to the subtitle, so
		// that each group's label shows only what tells it apart.
		var labels []string
		for _, g := range c.Groups {
			labels = append(labels, g.Label)
		}
		common, rest := splitCommonKeys(labels)
		for j := range c.Groups {
			c.Groups[j].Label = rest[j]
		}
		c.Subtitle = common
		// Kernel last in the legend.
		if j := slices.Index(c.Impls, implKernel); j >= 0 {
			c.Impls = append(slices.Delete(c.Impls, j, j+1), implKernel)
		}
	}
	return charts
}

// splitCommonKeys returns the key=value pairs that every config shares
// (only when there are several configs), and each config without them.
func splitCommonKeys(cfgs []string) (common string, rest []string) {
	count := map[[2]string]int{}
	for _, c := range cfgs {
		for _, kv := range splitConfig(c) {
			count[kv]++
		}
	}
	var com []string
	isCommon := func(kv [2]string) bool { return len(cfgs) > 1 && count[kv] == len(cfgs) }
	if len(cfgs) > 0 {
		for _, kv := range splitConfig(cfgs[0]) {
			if isCommon(kv) {
				com = append(com, kv[0]+"="+kv[1])
			}
		}
	}
	for _, c := range cfgs {
		var parts []string
		for _, kv := range splitConfig(c) {
			if !isCommon(kv) {
				parts = append(parts, kv[0]+"="+kv[1])
			}
		}
		r := strings.Join(parts, " ")
		if r == "" {
			r = "(all)"
		}
		rest = append(rest, r)
	}
	return strings.Join(com, " "), rest
}

// sampleCharts makes the over-time charts of every scenario that gave
// samples: one per metric and configuration, a line per implementation
// and repeat.
func (s *SuiteResult) sampleCharts() map[string][]lineChart {
	type key struct{ scenario, metric, config string }
	type skey struct {
		key
		impl   string
		repeat int
	}
	var (
		order  []key
		charts = map[key]*lineChart{}
		lines  = map[skey]int{}
	)
	for _, r := range s.Records {
		if r.Kind != KindSample {
			continue
		}
		k := key{r.Scenario, r.Metric, r.Config}
		c := charts[k]
		if c == nil {
			c = &lineChart{Unit: r.Unit}
			charts[k] = c
			order = append(order, k)
		}
		if !slices.Contains(c.Impls, r.Impl) {
			c.Impls = append(c.Impls, r.Impl)
		}
		sk := skey{k, r.Impl, r.Repeat}
		i, ok := lines[sk]
		if !ok {
			i = len(c.Lines)
			lines[sk] = i
			c.Lines = append(c.Lines, series{Impl: r.Impl, Repeat: r.Repeat})
		}
		c.Lines[i].Points = append(c.Lines[i].Points, [2]float64{r.TimeSec, r.Value})
	}
	out := map[string][]lineChart{}
	byScen := map[string][]key{}
	for _, k := range order {
		byScen[k.scenario] = append(byScen[k.scenario], k)
	}
	for _, k := range order {
		c := charts[k]
		for i := range c.Lines {
			slices.SortFunc(c.Lines[i].Points, func(a, b [2]float64) int { return cmp.Compare(a[0], b[0]) })
		}
		out[k.scenario] = append(out[k.scenario], *c)
	}
	// Titles show what tells the charts of a scenario apart; the keys
	// they share go in the section's note (see sampleCommon).
	for scen, cs := range out {
		var cfgs []string
		for _, k := range byScen[scen] {
			cfgs = append(cfgs, k.config)
		}
		_, rest := splitCommonKeys(cfgs)
		for i := range cs {
			cs[i].Title = byScen[scen][i].metric + ": " + rest[i]
		}
	}
	return out
}

// sampleCommon returns the config keys every over-time chart of a
// scenario shares, for the section's note.
func (s *SuiteResult) sampleCommon(scenario string) string {
	var cfgs []string
	seen := map[string]bool{}
	for _, r := range s.Records {
		if r.Kind == KindSample && r.Scenario == scenario && !seen[r.Config] {
			seen[r.Config] = true
			cfgs = append(cfgs, r.Config)
		}
	}
	common, _ := splitCommonKeys(cfgs)
	return common
}
