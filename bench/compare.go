package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
)

// CompareLine is one figure as measured in an old and a new run.
type CompareLine struct {
	// The figure: what identifies it in both runs.
	Scenario, Impl, Config, Metric, During string
	Unit                                   string
	// Old and New summarise its values over each run's repeats; N is 0
	// when a run lacks the figure.
	Old, New Stats
	// Change is the relative change of the medians, (new-old)/old; NaN
	// when either is missing or old is 0.
	Change float64
	// Note says how much the change can be trusted (see Compare).
	Note string
}

// Compare matches the figures of two runs by scenario, implementation,
// configuration and metric (resource metrics also by the measurement they
// were taken during). Lines are ordered as in the summary: by scenario,
// metric (each measured metric followed by the resource metrics taken
// during it), configuration and implementation, each in order of first
// appearance in the old run, then the new. Each line's Note is one of:
//
//   - "only in old" / "only in new";
//   - "one run each: no spread known" (or "one run in old/new") when a side
//     has a single value: any change may be noise;
//   - "ranges overlap: within noise" when the min-max ranges of the two
//     runs' repeats overlap;
//   - "ranges do not overlap: better|worse", with the exact Mann-Whitney U
//     test's two-sided p-value and the sample sizes; with 3 repeats a side
//     p cannot go below 0.10, and the note says "not significant at 5 %"
//     whenever p > 0.05.
func Compare(old, new *SuiteResult) []CompareLine {
	type key struct{ scenario, impl, config, metric, during string }
	var (
		order []key
		vals  = map[key]*[2][]float64{}
		units = map[key]string{}
	)
	add := func(res *SuiteResult, side int) {
		for _, r := range res.Records {
			if r.Kind != KindRow {
				continue
			}
			k := key{r.Scenario, r.Impl, r.Config, r.Metric, r.During}
			v := vals[k]
			if v == nil {
				v = &[2][]float64{}
				vals[k] = v
				order = append(order, k)
				units[k] = r.Unit
			}
			v[side] = append(v[side], r.Value)
		}
	}
	add(old, 0)
	add(new, 1)
	// Lines read like the summary: per scenario, each measured metric
	// followed by the resource metrics taken during it, then by
	// configuration and implementation, all in order of first appearance.
	first := map[string]int{}
	idx := func(k string) int {
		if i, ok := first[k]; ok {
			return i
		}
		first[k] = len(first)
		return first[k]
	}
	for _, k := range order {
		idx("s\x00" + k.scenario)
		idx("m\x00" + k.scenario + "\x00" + k.metric + "\x00" + k.during)
		idx("c\x00" + k.scenario + "\x00" + k.config)
		idx("i\x00" + k.impl)
	}
	rank := func(k key) [5]int {
		m, sub := idx("m\x00"+k.scenario+"\x00"+k.metric+"\x00"+k.during), 0
		if k.during != "" {
			if i, ok := first["m\x00"+k.scenario+"\x00"+k.during+"\x00"]; ok {
				m, sub = i, 1+idx("m\x00"+k.scenario+"\x00"+k.metric+"\x00"+k.during)
			}
		}
		return [5]int{idx("s\x00" + k.scenario), m, sub, idx("c\x00" + k.scenario + "\x00" + k.config), idx("i\x00" + k.impl)}
	}
	slices.SortStableFunc(order, func(a, b key) int {
		ra, rb := rank(a), rank(b)
		return slices.Compare(ra[:], rb[:])
	})
	out := make([]CompareLine, 0, len(order))
	for _, k := range order {
		v := vals[k]
		l := CompareLine{
			Scenario: k.scenario, Impl: k.impl, Config: k.config, Metric: k.metric, During: k.during, Unit: units[k],
			Old: Summarize(v[0]), New: Summarize(v[1]), Change: math.NaN(),
		}
		if l.Old.N > 0 && l.New.N > 0 && l.Old.Median != 0 {
			l.Change = (l.New.Median - l.Old.Median) / math.Abs(l.Old.Median)
		}
		l.Note = compareNote(l, v[0], v[1])
		out = append(out, l)
	}
	return out
}

func compareNote(l CompareLine, old, new []float64) string {
	switch {
	case l.Old.N == 0:
		return "only in new"
	case l.New.N == 0:
		return "only in old"
	case l.Old.N == 1 && l.New.N == 1:
		return "one run each: no spread known"
	case l.Old.N == 1:
		return "one run in old: no spread known"
	case l.New.N == 1:
		return "one run in new: no spread known"
	case l.Old.Overlaps(l.New):
		return "ranges overlap: within noise"
	}
	up := l.New.Median > l.Old.Median
	verdict := "better"
	if up == lowerIsBetter(l.Metric) {
		verdict = "worse"
	}
	note := "ranges do not overlap: " + verdict
	if p := MannWhitneyP(old, new); !math.IsNaN(p) {
		note += fmt.Sprintf(" (Mann-Whitney p=%.2f, n=%d+%d", p, l.Old.N, l.New.N)
		if p > 0.05 {
			note += ", not significant at 5 %"
		}
		note += ")"
	}
	return note
}

// WriteCompare writes the comparison of two runs as a table, preceded by
// the two runs' builds and a warning when their machines differ (figures
// from different kernels or CPUs do not compare).
func WriteCompare(w io.Writer, old, new *SuiteResult) error {
	ew := &errWriter{w: w}
	desc := func(r *SuiteResult) string {
		if r.Machine.GoVersion == "" && r.Machine.Kernel == "" {
			return "no machine facts (not a bench all results file)"
		}
		return fmt.Sprintf("sluice %s commit %s, %s, %s", r.Machine.SluiceVersion, shortCommit(r.Machine.SluiceCommit), r.Machine.GoVersion, r.Machine)
	}
	ew.printf("old: %s\nnew: %s\n", desc(old), desc(new))
	if d := machineDiff(old.Machine, new.Machine); d != "" {
		ew.printf("warning: the runs were on different machines or kernels (%s): changes may not be sluice's\n", d)
	}
	ew.printf("\n")
	lines := Compare(old, new)
	if len(lines) == 0 {
		ew.printf("no figures in either file\n")
		return ew.err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tmetric\tunit\tconfig\timpl\told\tnew\tchange\tnote")
	for _, l := range lines {
		metric := l.Metric
		if l.During != "" {
			metric += " during " + l.During
		}
		change := "-"
		if !math.IsNaN(l.Change) {
			change = fmt.Sprintf("%+.1f%%", 100*l.Change)
		}
		cfg := l.Config
		if cfg == "" {
			cfg = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			l.Scenario, metric, l.Unit, cfg, l.Impl, formatStats(l.Old, l.Unit), formatStats(l.New, l.Unit), change, l.Note)
	}
	if ew.err == nil {
		if err := tw.Flush(); err != nil {
			return fmt.Errorf("bench: write comparison: %w", err)
		}
	}
	return ew.err
}

func shortCommit(c string) string {
	if len(c) > 12 && !strings.HasPrefix(c, "unknown") {
		dirty := strings.HasSuffix(c, "+dirty")
		c = c[:12]
		if dirty {
			c += "+dirty"
		}
	}
	return c
}

// machineDiff names the facts that differ between two machines, among
// those that decide speed; "" when they agree or either is unknown.
func machineDiff(a, b Machine) string {
	var d []string
	if a.Kernel != "" && b.Kernel != "" && a.Kernel != b.Kernel {
		d = append(d, fmt.Sprintf("kernel %s vs %s", a.Kernel, b.Kernel))
	}
	if a.CPUModel != "" && b.CPUModel != "" && a.CPUModel != b.CPUModel {
		d = append(d, fmt.Sprintf("CPU %q vs %q", a.CPUModel, b.CPUModel))
	}
	if a.Cores > 0 && b.Cores > 0 && a.Cores != b.Cores {
		d = append(d, fmt.Sprintf("%d vs %d cores", a.Cores, b.Cores))
	}
	return strings.Join(d, ", ")
}
