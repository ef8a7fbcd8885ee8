package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteXDPComparison writes the AF_XDP comparison of a dispatch report: for
// each measured metric and channel count with an xdp row, sluice's AF_XDP
// endpoint, gVisor's AF_XDP endpoint and sluice's PACKET_MMAP endpoint
// side by side, and the ratios of the first to each of the others:
//
//	metric    unit      channels  sluice xdp  gvisor xdp  sluice mmap  xdp/gvisor-xdp  xdp/mmap
//	rx_pps    frames/s  1         412345      298765      480375       1.38            0.86
//
// A figure that was not measured prints as "-" (gVisor's endpoint reads
// one queue only; mmap needs --modes to include it). It writes nothing
// when the report has no xdp row.
func WriteXDPComparison(w io.Writer, rep *Report) error {
	type key struct{ metric, channels string }
	type line struct {
		unit string
		v    map[string]float64 // "sluice xdp", "gvisor xdp", "sluice mmap"
	}
	var order []key
	lines := map[key]*line{}
	hasXDP := false
	for _, r := range rep.Rows {
		if r.Scenario != "dispatch" || r.During != "" {
			continue
		}
		cfg := map[string]string{}
		for _, kv := range splitConfig(r.Config) {
			cfg[kv[0]] = kv[1]
		}
		mode := cfg["mode"]
		if mode != "xdp" && mode != "mmap" {
			continue
		}
		k := key{r.Metric, cfg["channels"]}
		l := lines[k]
		if l == nil {
			l = &line{unit: r.Unit, v: map[string]float64{}}
			lines[k] = l
			order = append(order, k)
		}
		l.v[r.Impl+" "+mode] = r.Value
		hasXDP = hasXDP || mode == "xdp"
	}
	if !hasXDP {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	cols := []string{"sluice xdp", "gvisor xdp", "sluice mmap"}
	fmt.Fprintln(tw, strings.Join(append([]string{"metric", "unit", "channels"}, append(cols, "xdp/gvisor-xdp", "xdp/mmap")...), "\t"))
	for _, k := range order {
		l := lines[k]
		if _, ok := l.v["sluice xdp"]; !ok {
			if _, ok := l.v["gvisor xdp"]; !ok {
				continue // an mmap line with no xdp figure to compare
			}
		}
		row := []string{k.metric, l.unit, k.channels}
		for _, c := range cols {
			row = append(row, formatValue(l.v, c))
		}
		row = append(row, formatRatio(l.v, "sluice xdp", "gvisor xdp"), formatRatio(l.v, "sluice xdp", "sluice mmap"))
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("bench: write xdp comparison: %w", err)
	}
	return nil
}
