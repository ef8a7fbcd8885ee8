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

// ParseModes parses dispatch mode names (readv, recvmmsg, mmap, xdp). Each
// element may itself be a comma-separated list; duplicates are dropped.
func ParseModes(list []string) ([]dataplane.Mode, error) {
	return parseList("--modes", list, "some of readv, recvmmsg, mmap, xdp", func(s string) (dataplane.Mode, error) {
		if s == "xdp" {
			return ModeXDP, nil
		}
		m, err := dataplane.ParseMode(s)
		if err != nil {
			return 0, fmt.Errorf("unknown dispatch mode %q (want readv, recvmmsg, mmap or xdp)", s)
		}
		return m, nil
	})
}

// ParseChannels parses channel counts, each 1..MaxChannels.
func ParseChannels(list []string) ([]int, error) {
	return parseList("--channels", list, "counts such as 1,2", parseCount("channels", MaxChannels))
}

// ParseMetrics parses metric names, a subset of DispatchMetrics.
func ParseMetrics(list []string) ([]string, error) {
	return parseNames("--metrics", "metric", list, DispatchMetrics)
}

// ParseImpls parses implementation names, a subset of Impls.
func ParseImpls(list []string) ([]string, error) {
	return parseNames("--impls", "implementation", list, Impls)
}

// parseList parses the values of a list flag. Each element may itself be
// a comma-separated list; spaces are trimmed, empty elements and
// duplicates dropped, and the order given kept. parse turns one element
// into a value or says what is wrong with it; want describes the values
// expected, for the error of an empty list. Errors name the flag.
func parseList[T comparable](flag string, list []string, want string, parse func(string) (T, error)) ([]T, error) {
	var out []T
	for _, s := range splitList(list) {
		v, err := parse(s)
		if err != nil {
			return nil, fmt.Errorf("bench: %s: %w", flag, err)
		}
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("bench: %s: empty list (want %s)", flag, want)
	}
	return out, nil
}

// parseCount parses a whole number of what, 1..most.
func parseCount(what string, most int) func(string) (int, error) {
	return func(s string) (int, error) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > most {
			return 0, fmt.Errorf("%q: want a whole number of %s from 1 to %d", s, what, most)
		}
		return n, nil
	}
}

// parseNames parses names from valid, returned in valid's order.
func parseNames(flag, what string, list, valid []string) ([]string, error) {
	out, err := parseEnumNames(flag, what, list, valid, valid, false)
	if err != nil {
		return nil, err
	}
	// Keep the canonical order so tables read the same whatever the
	// order on the command line.
	slices.SortStableFunc(out, func(a, b string) int { return slices.Index(valid, a) - slices.Index(valid, b) })
	return out, nil
}

// parseEnum parses names of the values in valid (by their String), keeping
// the order given. Names are not case-sensitive.
func parseEnum[T interface {
	comparable
	fmt.Stringer
}](flag, what string, list []string, valid []T) ([]T, error) {
	names := make([]string, len(valid))
	for i, v := range valid {
		names[i] = v.String()
	}
	return parseEnumNames(flag, what, list, names, valid, true)
}

// parseEnumNames parses elements of list, each one of names (in any case
// with fold), into the value of valid at the same index.
func parseEnumNames[T comparable](flag, what string, list, names []string, valid []T, fold bool) ([]T, error) {
	want := "some of " + strings.Join(names, ", ")
	return parseList(flag, list, want, func(s string) (T, error) {
		key := s
		if fold {
			key = strings.ToLower(s)
		}
		i := slices.Index(names, key)
		if i < 0 {
			var zero T
			return zero, fmt.Errorf("unknown %s %q (want %s)", what, s, want)
		}
		return valid[i], nil
	})
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
