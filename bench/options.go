package bench

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluicenet/sluice/dataplane"
)

// Bounds on DispatchOptions.
const (
	// MinDuration is the shortest measurement window that still spans many
	// scheduler ticks and socket-buffer refills; shorter windows measure
	// start-up noise.
	MinDuration = 100 * time.Millisecond
	// MaxDuration bounds a single measurement so a typo cannot keep the
	// namespaces and traffic up for hours.
	MaxDuration = 10 * time.Minute
	// MaxChannels bounds the channels per endpoint; PACKET_FANOUT allows
	// more, but beyond the CPU count they only add contention.
	MaxChannels = 64
)

// DispatchMetrics lists the measured metrics of the dispatch scenario, in
// the order they run. rss_mib is taken during each of them.
var DispatchMetrics = []string{MetricRXPPS, MetricTXPPS, MetricTCPGbps}

// Impls lists the implementations compared, subject first: ratios are
// Impls[0]/Impls[1].
var Impls = []string{ImplSluice, ImplGVisor}

// DispatchOptions configure RunDispatch. Zero fields take the defaults of
// DefaultDispatchOptions.
type DispatchOptions struct {
	// Duration is each measurement's window, after a warm-up of a fifth of
	// it (50 to 500 ms). Default 3s; MinDuration..MaxDuration.
	Duration time.Duration
	// Modes are the dispatch modes measured. Default: all of them.
	Modes []dataplane.Mode
	// Channels are the channel counts measured. Default 1 and 2.
	Channels []int
	// Metrics are the measured metrics, a subset of DispatchMetrics.
	// Default: all of them.
	Metrics []string
	// Impls are the implementations measured, a subset of Impls. Default:
	// both.
	Impls []string
	// Progress receives one line per measurement as it completes. nil
	// discards.
	Progress io.Writer
}

// DefaultDispatchOptions returns the options of `sluice bench dispatch`
// without flags.
func DefaultDispatchOptions() DispatchOptions {
	return DispatchOptions{
		Duration: 3 * time.Second,
		Modes:    slices.Clone(dataplane.Modes),
		Channels: []int{1, 2},
		Metrics:  slices.Clone(DispatchMetrics),
		Impls:    slices.Clone(Impls),
	}
}

func (o DispatchOptions) withDefaults() DispatchOptions {
	d := DefaultDispatchOptions()
	if o.Duration == 0 {
		o.Duration = d.Duration
	}
	if len(o.Modes) == 0 {
		o.Modes = d.Modes
	}
	if len(o.Channels) == 0 {
		o.Channels = d.Channels
	}
	if len(o.Metrics) == 0 {
		o.Metrics = d.Metrics
	}
	if len(o.Impls) == 0 {
		o.Impls = d.Impls
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	return o
}

// Validate checks the options as RunDispatch will use them (defaults
// applied), naming the field and value at fault.
func (o DispatchOptions) Validate() error {
	o = o.withDefaults()
	if o.Duration < MinDuration || o.Duration > MaxDuration {
		return fmt.Errorf("bench: DispatchOptions.Duration %v: must be between %v and %v", o.Duration, MinDuration, MaxDuration)
	}
	for _, m := range o.Modes {
		if !slices.Contains(dataplane.Modes, m) && m != ModeXDP {
			return fmt.Errorf("bench: DispatchOptions.Modes: unknown mode %v", m)
		}
	}
	for _, c := range o.Channels {
		if c < 1 || c > MaxChannels {
			return fmt.Errorf("bench: DispatchOptions.Channels: %d channels: must be 1..%d", c, MaxChannels)
		}
	}
	for _, m := range o.Metrics {
		if !slices.Contains(DispatchMetrics, m) {
			return fmt.Errorf("bench: DispatchOptions.Metrics: unknown metric %q (want %s)", m, strings.Join(DispatchMetrics, ", "))
		}
	}
	for _, i := range o.Impls {
		if !slices.Contains(Impls, i) {
			return fmt.Errorf("bench: DispatchOptions.Impls: unknown implementation %q (want %s)", i, strings.Join(Impls, ", "))
		}
	}
	return nil
}

// ParseModes parses dispatch mode names (readv, recvmmsg, mmap). Each
// element may itself be a comma-separated list; duplicates are dropped.
func ParseModes(list []string) ([]dataplane.Mode, error) {
	var out []dataplane.Mode
	for _, s := range splitList(list) {
		m, err := dataplane.ParseMode(s)
		if s == "xdp" {
			m, err = ModeXDP, nil
		}
		if err != nil {
			return nil, fmt.Errorf("bench: --modes: unknown dispatch mode %q (want readv, recvmmsg, mmap or xdp)", s)
		}
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("bench: --modes: empty list (want some of readv, recvmmsg, mmap)")
	}
	return out, nil
}

// ParseChannels parses channel counts, each 1..MaxChannels.
func ParseChannels(list []string) ([]int, error) {
	var out []int
	for _, s := range splitList(list) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxChannels {
			return nil, fmt.Errorf("bench: --channels: %q: want a whole number of channels from 1 to %d", s, MaxChannels)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("bench: --channels: empty list (want counts such as 1,2)")
	}
	return out, nil
}

// ParseMetrics parses metric names, a subset of DispatchMetrics.
func ParseMetrics(list []string) ([]string, error) {
	return parseNames("--metrics", "metric", list, DispatchMetrics)
}

// ParseImpls parses implementation names, a subset of Impls.
func ParseImpls(list []string) ([]string, error) {
	return parseNames("--impls", "implementation", list, Impls)
}

func parseNames(flag, what string, list, valid []string) ([]string, error) {
	var out []string
	for _, s := range splitList(list) {
		if !slices.Contains(valid, s) {
			return nil, fmt.Errorf("bench: %s: unknown %s %q (want some of %s)", flag, what, s, strings.Join(valid, ", "))
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("bench: %s: empty list (want some of %s)", flag, strings.Join(valid, ", "))
	}
	// Keep the canonical order so tables read the same whatever the
	// order on the command line.
	slices.SortStableFunc(out, func(a, b string) int { return slices.Index(valid, a) - slices.Index(valid, b) })
	return out, nil
}

// splitList flattens comma-separated elements, trimming spaces and dropping
// empty ones.
func splitList(list []string) []string {
	var out []string
	for _, e := range list {
		for _, s := range strings.Split(e, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

// warmupFor is the discarded lead-in before a window: long enough for
// socket buffers, rings and TCP's congestion window to reach steady state.
func warmupFor(window time.Duration) time.Duration {
	return min(max(window/5, 50*time.Millisecond), 500*time.Millisecond)
}

// dispatchConfig is the Row.Config of a dispatch measurement.
func dispatchConfig(m dataplane.Mode, channels int) string {
	return fmt.Sprintf("mode=%s,channels=%d", modeName(m), channels)
}
