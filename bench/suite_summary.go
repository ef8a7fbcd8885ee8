package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// The summary groups a run's rows into one table per scenario: a line per
// metric and configuration, a column per implementation with the median
// (and min-max) over the repeats, and the ratio of sluice to each peer.
// summary.md and report.html are both drawn from it.

// figureKey identifies one figure: the values of one metric of one
// implementation in one configuration, over the repeats.
type figureKey struct {
	scenario, metric, during, config, impl string
}

// figure is a figure's values by repeat.
type figure struct {
	unit     string
	byRepeat map[int]float64
}

func (f *figure) values() []float64 {
	reps := make([]int, 0, len(f.byRepeat))
	for r := range f.byRepeat {
		reps = append(reps, r)
	}
	slices.Sort(reps)
	v := make([]float64, len(reps))
	for i, r := range reps {
		v[i] = f.byRepeat[r]
	}
	return v
}

// summaryTable is one scenario's table.
type summaryTable struct {
	Scenario    string
	Description string
	// Impls are the columns: sluice first when present, then the others
	// in order of first appearance.
	Impls []string
	// CfgKeys are the configuration keys, in order of first appearance.
	CfgKeys []string
	Lines   []*summaryLine
}

// Peers are the implementations compared with sluice.
func (t *summaryTable) Peers() []string {
	if len(t.Impls) == 0 || t.Impls[0] != ImplSluice {
		return nil
	}
	return t.Impls[1:]
}

// summaryLine is one line of a table: one metric in one configuration.
type summaryLine struct {
	Metric string
	// During is set on resource metrics (see Row.During).
	During string
	Unit   string
	Config string
	// Stats are the figures by implementation.
	Stats map[string]Stats
	// PeerConfig names, for a peer measured in fewer dimensions than
	// sluice (pasta has no dispatch mode), the peer's configuration the
	// line compares with; absent when the configs are equal.
	PeerConfig map[string]string
	// Ratio is sluice's median over each peer's, and RatioRange the
	// range of the ratios of the repeats where both were measured (each
	// repeat measures both side by side, so these pair up).
	Ratio      map[string]float64
	RatioRange map[string]Stats
	fig        map[string]*figure
}

// MetricLabel is the line's metric as printed: "rss_mib during rx_pps" for
// resource metrics.
func (l *summaryLine) MetricLabel() string {
	if l.During != "" {
		return l.Metric + " during " + l.During
	}
	return l.Metric
}

// buildTables groups res's rows by scenario. descriptions maps scenario
// names to their Description.
func buildTables(res *SuiteResult, descriptions map[string]string) []*summaryTable {
	var (
		tables  []*summaryTable
		byScen  = map[string]*summaryTable{}
		lineIdx = map[string]map[[3]string]*summaryLine{} // scenario -> (metric, during, config)
		seen    = map[string]bool{}
	)
	for _, r := range res.Records {
		if r.Kind != KindRow {
			continue
		}
		t := byScen[r.Scenario]
		if t == nil {
			t = &summaryTable{Scenario: r.Scenario, Description: descriptions[r.Scenario]}
			byScen[r.Scenario] = t
			lineIdx[r.Scenario] = map[[3]string]*summaryLine{}
			tables = append(tables, t)
		}
		if !seen[r.Scenario+"\x00impl\x00"+r.Impl] {
			seen[r.Scenario+"\x00impl\x00"+r.Impl] = true
			t.Impls = append(t.Impls, r.Impl)
		}
		for _, kv := range splitConfig(r.Config) {
			if !seen[r.Scenario+"\x00cfg\x00"+kv[0]] {
				seen[r.Scenario+"\x00cfg\x00"+kv[0]] = true
				t.CfgKeys = append(t.CfgKeys, kv[0])
			}
		}
		k := [3]string{r.Metric, r.During, r.Config}
		l := lineIdx[r.Scenario][k]
		if l == nil {
			l = &summaryLine{Metric: r.Metric, During: r.During, Config: r.Config, Unit: r.Unit, fig: map[string]*figure{}}
			lineIdx[r.Scenario][k] = l
			t.Lines = append(t.Lines, l)
		}
		f := l.fig[r.Impl]
		if f == nil {
			f = &figure{unit: r.Unit, byRepeat: map[int]float64{}}
			l.fig[r.Impl] = f
		}
		// A repeat measures each figure once; should a scenario report
		// one twice, the last value stands.
		f.byRepeat[r.Repeat] = r.Value
	}
	for _, t := range tables {
		if i := slices.Index(t.Impls, ImplSluice); i > 0 {
			t.Impls = append([]string{ImplSluice}, slices.Delete(t.Impls, i, i+1)...)
		}
		t.finish()
	}
	return tables
}

// finish computes the stats and ratios, matches peers measured in fewer
// dimensions to sluice's lines, and orders the lines.
func (t *summaryTable) finish() {
	matched := map[*summaryLine]bool{}
	for _, l := range t.Lines {
		l.Stats = map[string]Stats{}
		l.PeerConfig = map[string]string{}
		l.Ratio = map[string]float64{}
		l.RatioRange = map[string]Stats{}
		for impl, f := range l.fig {
			l.Stats[impl] = Summarize(f.values())
		}
		subj := l.fig[ImplSluice]
		if subj == nil {
			continue
		}
		for _, peer := range t.Peers() {
			pf := l.fig[peer]
			if pf == nil {
				// A peer line whose configuration is the largest
				// subset of this one's: pasta's "flows=1,dir=up"
				// against sluice's "mode=mmap,flows=1,dir=up".
				var best *summaryLine
				for _, o := range t.Lines {
					if o.Metric == l.Metric && o.During == l.During && o.fig[peer] != nil && o.fig[ImplSluice] == nil &&
						configSubset(o.Config, l.Config) && (best == nil || len(splitConfig(o.Config)) > len(splitConfig(best.Config))) {
						best = o
					}
				}
				if best == nil {
					continue
				}
				pf = best.fig[peer]
				matched[best] = true
				l.PeerConfig[peer] = best.Config
				l.Stats[peer] = Summarize(pf.values())
			}
			l.Ratio[peer] = Ratio(l.Stats[ImplSluice].Median, l.Stats[peer].Median)
			var rs []float64
			for rep, v := range subj.byRepeat {
				if pv, ok := pf.byRepeat[rep]; ok {
					rs = append(rs, Ratio(v, pv))
				}
			}
			l.RatioRange[peer] = Summarize(rs)
		}
	}
	// Lines of peers that were shown against sluice's lines are not
	// repeated on their own.
	t.Lines = slices.DeleteFunc(t.Lines, func(l *summaryLine) bool { return matched[l] })
	// Measured metrics in order of first appearance, each followed by
	// the resource metrics taken during it; configurations in order of
	// first appearance within each.
	order := map[string]int{}
	for _, l := range t.Lines {
		if _, ok := order[l.Metric+"\x00"+l.During]; !ok {
			order[l.Metric+"\x00"+l.During] = len(order)
		}
	}
	rank := func(l *summaryLine) (int, int) {
		if l.During != "" {
			if i, ok := order[l.During+"\x00"]; ok {
				return i, 1 + order[l.Metric+"\x00"+l.During]
			}
		}
		return order[l.Metric+"\x00"+l.During], 0
	}
	slices.SortStableFunc(t.Lines, func(a, b *summaryLine) int {
		a1, a2 := rank(a)
		b1, b2 := rank(b)
		if a1 != b1 {
			return a1 - b1
		}
		return a2 - b2
	})
}

// configSubset reports whether every key=value pair of sub is in cfg.
func configSubset(sub, cfg string) bool {
	have := map[[2]string]bool{}
	for _, kv := range splitConfig(cfg) {
		have[kv] = true
	}
	for _, kv := range splitConfig(sub) {
		if !have[kv] {
			return false
		}
	}
	return true
}

// configValue returns the value of key in cfg, or "" if absent.
func configValue(cfg, key string) string {
	for _, kv := range splitConfig(cfg) {
		if kv[0] == key {
			return kv[1]
		}
	}
	return ""
}

// formatStats prints a figure: the median, and the min-max range when
// there is more than one value.
func formatStats(s Stats, unit string) string {
	if s.N == 0 {
		return "-"
	}
	f := FormatValue
	if unit == UnitFrames || unit == "segments" {
		f = func(v float64) string { return fmt.Sprintf("%.0f", v) }
	}
	if s.N == 1 {
		return f(s.Median)
	}
	return fmt.Sprintf("%s (%s–%s)", f(s.Median), f(s.Min), f(s.Max))
}

// formatRatioStats prints a ratio and the range of the per-repeat ratios.
func formatRatioStats(r float64, rr Stats) string {
	if math.IsNaN(r) {
		return "-"
	}
	if rr.N <= 1 {
		return fmt.Sprintf("%.2f", r)
	}
	return fmt.Sprintf("%.2f (%.2f–%.2f)", r, rr.Min, rr.Max)
}

// Descriptions maps the names of scenarios to their descriptions.
func Descriptions(scs []Scenario) map[string]string {
	m := map[string]string{}
	for _, s := range scs {
		m[s.Name()] = s.Description()
	}
	return m
}

// WriteSummary writes summary.md: the run and the machine, one table per
// scenario, then what was skipped and what failed. descriptions (see
// Descriptions) may be nil.
func (s *SuiteResult) WriteSummary(w io.Writer, descriptions map[string]string) error {
	ew := &errWriter{w: w}
	ew.printf("# sluice bench all\n\n")
	ew.printf("%s\n\n", s.runLine())
	ew.printf("- Machine: %s", s.Machine)
	if s.Machine.MemoryMiB > 0 {
		ew.printf(", %.1f GiB", s.Machine.MemoryMiB/1024)
	}
	if s.Machine.LoadAvg != "" {
		ew.printf("; load average at the start %s", s.Machine.LoadAvg)
	}
	ew.printf("\n- Build: sluice %s, commit %s, %s\n\n", s.Machine.SluiceVersion, s.Machine.SluiceCommit, s.Machine.GoVersion)
	if s.Run.Repeats > 1 {
		ew.printf("Each figure is the median of the repeats, with the min–max range in brackets. " +
			"A ratio is sluice's median over the peer's, with the range of the per-repeat ratios " +
			"(every repeat measures sluice and its peers side by side).\n\n")
	} else {
		ew.printf("One run of each figure (--repeat 1): no spread is known, so small differences may be noise.\n\n")
	}
	ew.printf("Lower is better for %s; higher for the rest.\n\n", strings.Join(costMetrics, ", "))
	tables := buildTables(s, descriptions)
	for _, t := range tables {
		ew.printf("## %s\n\n", t.Scenario)
		if t.Description != "" {
			ew.printf("%s.\n\n", strings.TrimSuffix(t.Description, "."))
		}
		hdr := append([]string{"metric", "unit"}, t.CfgKeys...)
		hdr = append(hdr, t.Impls...)
		for _, p := range t.Peers() {
			hdr = append(hdr, ImplSluice+"/"+p)
		}
		ew.printf("| %s |\n", strings.Join(hdr, " | "))
		align := make([]string, len(hdr))
		for i := range align {
			align[i] = "---"
			if i >= 2+len(t.CfgKeys) {
				align[i] = "---:"
			}
		}
		ew.printf("|%s|\n", strings.Join(align, "|"))
		for _, l := range t.Lines {
			cols := []string{l.MetricLabel(), l.Unit}
			for _, k := range t.CfgKeys {
				v := configValue(l.Config, k)
				if v == "" {
					v = "-"
				}
				cols = append(cols, v)
			}
			for _, impl := range t.Impls {
				st, ok := l.Stats[impl]
				if !ok {
					cols = append(cols, "-")
					continue
				}
				c := formatStats(st, l.Unit)
				if pc, ok := l.PeerConfig[impl]; ok {
					c += " [" + pc + "]"
				}
				cols = append(cols, c)
			}
			for _, p := range t.Peers() {
				r, ok := l.Ratio[p]
				if !ok {
					cols = append(cols, "-")
					continue
				}
				cols = append(cols, formatRatioStats(r, l.RatioRange[p]))
			}
			ew.printf("| %s |\n", strings.Join(cols, " | "))
		}
		ew.printf("\n")
	}
	if len(tables) == 0 {
		ew.printf("No figures were measured.\n\n")
	}
	s.writeNotes(ew)
	return ew.err
}

// runLine describes the run in one sentence.
func (s *SuiteResult) runLine() string {
	var b strings.Builder
	if !s.Run.Started.IsZero() {
		fmt.Fprintf(&b, "Run of %s UTC: ", s.Run.Started.UTC().Format("2006-01-02 15:04"))
	}
	fmt.Fprintf(&b, "%s of the plan, %s windows", plural(max(s.Run.Repeats, 1), "repeat"), time.Duration(s.Run.DurationSec*float64(time.Second)))
	if s.Run.Quick {
		b.WriteString(", quick plan")
	}
	if len(s.Run.Only) > 0 {
		fmt.Fprintf(&b, ", only %s", strings.Join(s.Run.Only, " "))
	}
	if s.Run.ElapsedSec > 0 {
		fmt.Fprintf(&b, ", took %s", time.Duration(s.Run.ElapsedSec*float64(time.Second)).Round(time.Second))
	}
	b.WriteString(".")
	if s.Run.Interrupted {
		b.WriteString(" **Interrupted**: the figures below are what was measured before that.")
	}
	return b.String()
}

// skipsAndErrors returns the skip and error records, skips deduplicated.
func (s *SuiteResult) skipsAndErrors() (skips, errs []Record) {
	seen := map[string]bool{}
	for _, r := range s.Records {
		switch r.Kind {
		case KindSkip:
			k := r.Scenario + "\x00" + r.Impl + "\x00" + r.Config + "\x00" + r.Reason
			if !seen[k] {
				seen[k] = true
				skips = append(skips, r)
			}
		case KindError:
			errs = append(errs, r)
		}
	}
	return skips, errs
}

// what names what a skip or error record concerns.
func (r Record) what() string {
	w := r.Scenario
	if r.Impl != "" {
		w += " impl=" + r.Impl
	}
	if r.Config != "" {
		w += " " + r.Config
	}
	if r.Kind == KindError && r.Repeat > 0 {
		w += fmt.Sprintf(" (repeat %d)", r.Repeat)
	}
	return w
}

func (s *SuiteResult) writeNotes(ew *errWriter) {
	skips, errs := s.skipsAndErrors()
	if len(skips) > 0 {
		ew.printf("## Skipped\n\n")
		for _, r := range skips {
			ew.printf("- %s: %s\n", r.what(), r.Reason)
		}
		ew.printf("\n")
	}
	if len(errs) > 0 {
		ew.printf("## Failed\n\n")
		for _, r := range errs {
			ew.printf("- %s: %s\n", r.what(), strings.ReplaceAll(r.Error, "\n", "; "))
		}
		ew.printf("\n")
	}
}

// errWriter keeps the first write error, so that a long report is written
// without an error check per line.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err != nil {
		return
	}
	if _, err := fmt.Fprintf(e.w, format, args...); err != nil {
		e.err = fmt.Errorf("bench: write report: %w", err)
	}
}
