package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
)

// Metric names, as they appear in Row.Metric and on the command line.
const (
	MetricRXPPS   = "rx_pps"
	MetricTXPPS   = "tx_pps"
	MetricTCPGbps = "tcp_gbps"
	MetricRSSMiB  = "rss_mib"
	// MetricRetrans is the TCP segments the senders retransmitted during
	// a tcp_gbps measurement (a resource metric, with During).
	MetricRetrans = "retrans"
	// Metrics of scenarios to come (tcp, sandbox, capture, xdp).
	MetricRRMicros       = "rr_us"
	MetricCapturedFrames = "captured_frames"
	MetricDroppedFrames  = "dropped_frames"
	MetricCPUPerFrame    = "cpu_us_per_frame"
)

// Units of the metrics above.
const (
	UnitFramesPerSec = "frames/s"
	UnitGbps         = "Gbit/s"
	UnitMiB          = "MiB"
	UnitMicros       = "us"
	UnitFrames       = "frames"
	UnitSegments     = "segments"
)

// Implementation names compared side by side.
const (
	ImplSluice = "sluice"
	ImplGVisor = "gvisor"
)

// Row is one measured value. Its JSON form is the benchmark's output format
// (see the package doc).
type Row struct {
	// Scenario is the scenario's name, for example "dispatch".
	Scenario string `json:"scenario"`
	// Impl is the implementation measured: ImplSluice or ImplGVisor.
	Impl string `json:"impl"`
	// Config is the configuration as comma-separated key=value pairs, in a
	// fixed key order, for example "mode=mmap,channels=2".
	Config string `json:"config"`
	// Metric is what was measured, for example MetricRXPPS.
	Metric string `json:"metric"`
	// Value is the measurement in Unit.
	Value float64 `json:"value"`
	// Unit is Value's unit, for example UnitFramesPerSec.
	Unit string `json:"unit"`
	// During is set on resource metrics (rss_mib): the Metric of the
	// measurement they were taken over, in the same Config. Empty on the
	// measured metrics themselves.
	During string `json:"during,omitempty"`
}

// Report collects the Rows of a run in the order they were measured.
type Report struct {
	Rows []Row
}

// Add appends rows to the report.
func (r *Report) Add(rows ...Row) { r.Rows = append(r.Rows, rows...) }

// WriteJSON writes one JSON object per line and per row.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	for _, row := range r.Rows {
		if err := enc.Encode(row); err != nil {
			return fmt.Errorf("bench: write json: %w", err)
		}
	}
	return nil
}

// tableKey identifies one line of the table.
type tableKey struct{ scenario, config, metric string }

// tableLine is one line of the table being assembled.
type tableLine struct {
	key   tableKey
	unit  string
	value map[string]float64            // by impl
	res   map[string]map[string]float64 // resource metric -> impl -> value
}

// WriteTable writes the rows as an aligned table: one line per scenario,
// configuration and measured metric, with the configuration's keys as
// columns, one column per implementation (in order of first appearance),
// the ratio of the first implementation to the second, and one column per
// resource metric and implementation. Values that were not measured print
// as "-". Lines follow the order in which their metric was first measured.
func (r *Report) WriteTable(w io.Writer) error {
	var (
		lines    []*tableLine
		byKey    = map[tableKey]*tableLine{}
		impls    []string
		resNames []string
		resUnits = map[string]string{} // resource metric -> its unit
		cfgKeys  []string
		seen     = map[string]bool{}
	)
	line := func(k tableKey) *tableLine {
		l := byKey[k]
		if l == nil {
			l = &tableLine{key: k, value: map[string]float64{}, res: map[string]map[string]float64{}}
			byKey[k] = l
			lines = append(lines, l)
		}
		return l
	}
	for _, row := range r.Rows {
		if !seen["impl:"+row.Impl] {
			seen["impl:"+row.Impl] = true
			impls = append(impls, row.Impl)
		}
		for _, kv := range splitConfig(row.Config) {
			if !seen["cfg:"+kv[0]] {
				seen["cfg:"+kv[0]] = true
				cfgKeys = append(cfgKeys, kv[0])
			}
		}
		if row.During != "" {
			if !seen["res:"+row.Metric] {
				seen["res:"+row.Metric] = true
				resNames = append(resNames, row.Metric)
				resUnits[row.Metric] = row.Unit
			}
			l := line(tableKey{row.Scenario, row.Config, row.During})
			if l.res[row.Metric] == nil {
				l.res[row.Metric] = map[string]float64{}
			}
			l.res[row.Metric][row.Impl] = row.Value
			continue
		}
		l := line(tableKey{row.Scenario, row.Config, row.Metric})
		l.unit = row.Unit
		l.value[row.Impl] = row.Value
	}

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	var hdr []string
	multiScenario := len(scenarios(lines)) > 1
	if multiScenario {
		hdr = append(hdr, "scenario")
	}
	hdr = append(hdr, "metric", "unit")
	hdr = append(hdr, cfgKeys...)
	hdr = append(hdr, impls...)
	if len(impls) >= 2 {
		hdr = append(hdr, impls[0]+"/"+impls[1])
	}
	for _, rn := range resNames {
		for _, impl := range impls {
			hdr = append(hdr, rn+" "+impl)
		}
	}
	fmt.Fprintln(tw, strings.Join(hdr, "\t"))
	for _, l := range lines {
		var cols []string
		if multiScenario {
			cols = append(cols, l.key.scenario)
		}
		unit := l.unit
		if unit == "" {
			unit = "-"
		}
		cols = append(cols, l.key.metric, unit)
		cfg := map[string]string{}
		for _, kv := range splitConfig(l.key.config) {
			cfg[kv[0]] = kv[1]
		}
		for _, k := range cfgKeys {
			v, ok := cfg[k]
			if !ok {
				v = "-"
			}
			cols = append(cols, v)
		}
		for _, impl := range impls {
			cols = append(cols, formatValue(l.value, impl))
		}
		if len(impls) >= 2 {
			cols = append(cols, formatRatio(l.value, impls[0], impls[1]))
		}
		for _, rn := range resNames {
			for _, impl := range impls {
				cols = append(cols, formatUnitValue(l.res[rn], impl, resUnits[rn]))
			}
		}
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("bench: write table: %w", err)
	}
	return nil
}

func scenarios(lines []*tableLine) map[string]bool {
	s := map[string]bool{}
	for _, l := range lines {
		s[l.key.scenario] = true
	}
	return s
}

// splitConfig splits "a=1,b=2" into key/value pairs; an element without "="
// is a key with an empty value.
func splitConfig(cfg string) [][2]string {
	if cfg == "" {
		return nil
	}
	var out [][2]string
	for _, part := range strings.Split(cfg, ",") {
		k, v, _ := strings.Cut(part, "=")
		out = append(out, [2]string{k, v})
	}
	return out
}

// Ratio returns a/b, or NaN when b is not positive (no meaningful ratio).
func Ratio(a, b float64) float64 {
	if b <= 0 || math.IsNaN(a) || math.IsNaN(b) {
		return math.NaN()
	}
	return a / b
}

func formatValue(m map[string]float64, impl string) string {
	v, ok := m[impl]
	if !ok {
		return "-"
	}
	return FormatValue(v)
}

// formatUnitValue is formatValue, with counts of things (segments,
// frames) printed as whole numbers.
func formatUnitValue(m map[string]float64, impl, unit string) string {
	v, ok := m[impl]
	if !ok {
		return "-"
	}
	if unit == UnitSegments || unit == UnitFrames {
		return FormatCount(v)
	}
	return FormatValue(v)
}

func formatRatio(m map[string]float64, a, b string) string {
	va, okA := m[a]
	vb, okB := m[b]
	if !okA || !okB {
		return "-"
	}
	r := Ratio(va, vb)
	if math.IsNaN(r) {
		return "-"
	}
	return fmt.Sprintf("%.2f", r)
}

// FormatValue prints v with a precision that suits its magnitude: whole
// numbers from 1000 up (frame rates), one decimal from 100 (MiB), two below
// (Gbit/s, microseconds).
func FormatValue(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "-"
	case a >= 1000:
		return fmt.Sprintf("%.0f", v)
	case a >= 100:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// FormatCount prints a count of things (segments, frames) as a whole
// number.
func FormatCount(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	return fmt.Sprintf("%.0f", v)
}
