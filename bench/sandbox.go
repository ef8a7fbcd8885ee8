package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// The sandbox scenario measures a whole sandbox: a client program in a
// network namespace of its own reaches a server in another namespace
// through the system under test. sluice (`sluice run --uplink-netns`, one
// line per dispatch mode) is compared with pasta, slirp4netns and plain
// kernel routing over a veth (the limit). Throughput comes from iperf3 run
// inside the sandbox, round-trip latency from sluice's own ping-pong client
// (`sluice bench sandbox __rr-client`), since iperf3 does not measure latency.

// ScenarioSandbox is the sandbox scenario's name in Row.Scenario.
const ScenarioSandbox = "sandbox"

// Implementations of the sandbox scenario besides ImplSluice.
const (
	ImplPasta       = "pasta"
	ImplSlirp4netns = "slirp4netns"
	ImplKernel      = "kernel"
)

// SandboxImpls are the sandbox scenario's implementations, in table order.
var SandboxImpls = []string{ImplSluice, ImplPasta, ImplSlirp4netns, ImplKernel}

// StackNetstack is sluice's default stack (--network sandbox); its rows'
// configs carry no stack= part.
const StackNetstack = "netstack"

// RRCommand is the hidden sluice subcommand the sandbox scenario runs inside
// each sandbox to measure round trips (see RRClient), under `bench sandbox`.
const RRCommand = "__rr-client"

// RRArgs are the arguments of sluice that run RRCommand.
var RRArgs = []string{"bench", "sandbox", RRCommand}

// RRMessageSize is the size of each request and response of rr_us: small,
// so the figure is the per-packet latency of the path, not its bandwidth.
const RRMessageSize = 64

// SandboxOptions configure RunSandbox.
type SandboxOptions struct {
	// Exe is the sluice binary: run as `Exe run ...` for the sluice
	// rows and as `Exe __rr-client` inside every sandbox.
	Exe string
	// Duration is each measurement's window.
	Duration time.Duration
	// Impls selects implementations among SandboxImpls.
	Impls []string
	// Modes are sluice's dispatch modes (readv, recvmmsg, mmap).
	Modes []string
	// Stacks are the stacks sluice runs behind the sandbox's eth0: the
	// netstack (StackNetstack, --network sandbox) or a registered plugin
	// (--network plugin --plugin NAME). Each is measured in every mode.
	Stacks []string
	// Registered are the stacks Exe has registered; a stack of Stacks
	// not among them is skipped with the reason. Nil checks nothing.
	Registered []string
	// Flows and Directions select the tcp_gbps configurations.
	Flows      []int
	Directions []Direction
	// TCP and RR switch the two metrics on.
	TCP, RR bool
	// Progress, when set, receives a line per measurement.
	Progress io.Writer
}

// DefaultSandboxOptions is the full run: every implementation, every
// dispatch mode, 1 and 4 flows both ways, and rr_us.
func DefaultSandboxOptions() SandboxOptions {
	return SandboxOptions{
		Duration:   3 * time.Second,
		Impls:      slices.Clone(SandboxImpls),
		Modes:      []string{"readv", "recvmmsg", "mmap"},
		Stacks:     []string{StackNetstack},
		Flows:      []int{1, 4},
		Directions: []Direction{Up, Down},
		TCP:        true,
		RR:         true,
	}
}

// Validate checks the options; errors name the flag at fault.
func (o SandboxOptions) Validate() error {
	if o.Duration < MinDuration || o.Duration > MaxDuration {
		return fmt.Errorf("--duration %v: must be between %v and %v", o.Duration, MinDuration, MaxDuration)
	}
	if len(o.Impls) == 0 {
		return fmt.Errorf("--impls: give at least one of %s", strings.Join(SandboxImpls, ", "))
	}
	for _, i := range o.Impls {
		if !slices.Contains(SandboxImpls, i) {
			return fmt.Errorf("--impls %q: unknown implementation (want %s)", i, strings.Join(SandboxImpls, ", "))
		}
	}
	if slices.Contains(o.Impls, ImplSluice) {
		if len(o.Modes) == 0 {
			return fmt.Errorf("--modes: give at least one of readv, recvmmsg, mmap for sluice")
		}
		for _, m := range o.Modes {
			if m != "readv" && m != "recvmmsg" && m != "mmap" {
				return fmt.Errorf("--modes %q: want readv, recvmmsg or mmap", m)
			}
		}
		if len(o.Stacks) == 0 {
			return fmt.Errorf("--stacks: give at least one stack for sluice (%s is the default)", StackNetstack)
		}
		for _, st := range o.Stacks {
			if st == "" || strings.ContainsAny(st, "=, \t") {
				return fmt.Errorf("--stacks %q: not a stack name", st)
			}
		}
	}
	if !o.TCP && !o.RR {
		return fmt.Errorf("--metrics: give tcp_gbps, rr_us or both")
	}
	if o.TCP && (len(o.Flows) == 0 || len(o.Directions) == 0) {
		return fmt.Errorf("--flows and --directions: give at least one of each for tcp_gbps")
	}
	for _, f := range o.Flows {
		if f < 1 || f > MaxFlows {
			return fmt.Errorf("--flows %d: must be between 1 and %d", f, MaxFlows)
		}
	}
	return nil
}

// SandboxConfig is one measurement's configuration.
type SandboxConfig struct {
	// Stack is sluice's stack; empty for the netstack (the default) and
	// for the other implementations.
	Stack string
	// Mode is sluice's dispatch mode; empty for the other implementations,
	// which have none.
	Mode   string
	Metric string // MetricTCPGbps or MetricRRMicros
	Flows  int    // tcp_gbps only
	Dir    Direction
}

// String is the Row.Config: "mode=recvmmsg,flows=1,dir=up" for sluice's
// throughput, "flows=1,dir=up" for a peer's, "mode=mmap,msg=64" and
// "msg=64" for round trips; a plugin stack's start with "stack=NAME,".
func (c SandboxConfig) String() string {
	var parts []string
	if c.Stack != "" && c.Stack != StackNetstack {
		parts = append(parts, "stack="+c.Stack)
	}
	if c.Mode != "" {
		parts = append(parts, "mode="+c.Mode)
	}
	if c.Metric == MetricRRMicros {
		parts = append(parts, fmt.Sprintf("msg=%d", RRMessageSize))
	} else {
		parts = append(parts, fmt.Sprintf("flows=%d", c.Flows), "dir="+c.Dir.String())
	}
	return strings.Join(parts, ",")
}

// configs returns the configurations measured for impl, in order.
// For sluice that is every stack in stacks (the runnable ones of o.Stacks)
// in every mode.
func (o SandboxOptions) configs(impl string, stacks []string) []SandboxConfig {
	modes, sts := []string{""}, []string{""}
	if impl == ImplSluice {
		modes, sts = o.Modes, stacks
	}
	var out []SandboxConfig
	for _, st := range sts {
		if st == StackNetstack {
			st = ""
		}
		for _, m := range modes {
			if o.TCP {
				for _, f := range o.Flows {
					for _, d := range o.Directions {
						out = append(out, SandboxConfig{Stack: st, Mode: m, Metric: MetricTCPGbps, Flows: f, Dir: d})
					}
				}
			}
			if o.RR {
				out = append(out, SandboxConfig{Stack: st, Mode: m, Metric: MetricRRMicros})
			}
		}
	}
	return out
}

// runnableStacks returns the stacks of o.Stacks that Exe has registered,
// and why each other one is skipped.
func (o SandboxOptions) runnableStacks() (run []string, skips []string) {
	for _, st := range o.Stacks {
		if o.Registered != nil && !slices.Contains(o.Registered, st) {
			skips = append(skips, fmt.Sprintf("stack=%s: not registered in this sluice (registered: %s)", st, strings.Join(o.Registered, ", ")))
			continue
		}
		run = append(run, st)
	}
	return run, skips
}

// iperf3Result is the part of `iperf3 --json` the scenario reads.
type iperf3Result struct {
	End struct {
		SumSent struct {
			BitsPerSecond float64 `json:"bits_per_second"`
			Retransmits   float64 `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			BitsPerSecond float64 `json:"bits_per_second"`
			Bytes         float64 `json:"bytes"`
		} `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// ParseIperf3 returns the throughput, in Gbit/s, of an `iperf3 -c --json`
// run: what the receiver got (sum_received), so bytes the sender queued but
// that never arrived do not count, in either direction (with -R the
// receiver is the client, and iperf3 still reports it as sum_received).
func ParseIperf3(out []byte) (float64, error) {
	var r iperf3Result
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, fmt.Errorf("parse iperf3 --json output: %w", err)
	}
	if r.Error != "" {
		return 0, fmt.Errorf("iperf3: %s", r.Error)
	}
	bps := r.End.SumReceived.BitsPerSecond
	if bps <= 0 || math.IsNaN(bps) {
		return 0, fmt.Errorf("iperf3 reported no received data (sum_received %v bit/s)", bps)
	}
	return bps / 1e9, nil
}

// RRResult is what `sluice __rr-client` prints, as one JSON object.
type RRResult struct {
	RoundTrips int     `json:"round_trips"`
	MedianUS   float64 `json:"median_us"`
	Error      string  `json:"error,omitempty"`
}

// ParseRR reads an RRResult and returns its median round trip in us.
func ParseRR(out []byte) (float64, error) {
	var r RRResult
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, fmt.Errorf("parse %s output %q: %w", RRCommand, strings.TrimSpace(string(out)), err)
	}
	if r.Error != "" {
		return 0, fmt.Errorf("%s: %s", RRCommand, r.Error)
	}
	if r.RoundTrips == 0 || r.MedianUS <= 0 {
		return 0, fmt.Errorf("%s: no round trips measured", RRCommand)
	}
	return r.MedianUS, nil
}

// Median returns the median of xs (sorted in place); NaN for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	slices.Sort(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}

// WriteSandboxTable writes the sandbox rows as a table: one line per
// metric and sluice configuration, the peers' figures (measured once, with
// no dispatch mode) repeated on each mode's line, and the ratios of sluice
// to each peer. For rr_us a ratio below 1 means sluice is faster.
func WriteSandboxTable(w io.Writer, rows []Row) error {
	type key struct{ metric, cfg string } // cfg without mode
	peer := map[key]map[string]float64{}
	var impls []string
	for _, r := range rows {
		if !slices.Contains(impls, r.Impl) {
			impls = append(impls, r.Impl)
		}
		if r.Impl == ImplSluice || r.During != "" {
			continue
		}
		k := key{r.Metric, r.Config}
		if peer[k] == nil {
			peer[k] = map[string]float64{}
		}
		peer[k][r.Impl] = r.Value
	}
	var peers []string
	for _, i := range SandboxImpls[1:] {
		if slices.Contains(impls, i) {
			peers = append(peers, i)
		}
	}
	// A stack column only when a plugin stack was measured.
	withStack := false
	for _, r := range rows {
		if r.Impl == ImplSluice && strings.HasPrefix(r.Config, "stack=") {
			withStack = true
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	hdr := []string{"metric", "unit", "mode", "flows", "dir", "sluice"}
	if withStack {
		hdr = []string{"metric", "unit", "stack", "mode", "flows", "dir", "sluice"}
	}
	hdr = append(hdr, peers...)
	for _, p := range peers {
		hdr = append(hdr, "sluice/"+p)
	}
	fmt.Fprintln(tw, strings.Join(hdr, "\t"))
	line := func(metric, unit, stack, mode, cfg string, s float64, haveS bool) {
		kv := map[string]string{}
		for _, p := range splitConfig(cfg) {
			kv[p[0]] = p[1]
		}
		get := func(k string) string {
			if v, ok := kv[k]; ok {
				return v
			}
			return "-"
		}
		cols := []string{metric, unit, mode, get("flows"), get("dir")}
		if withStack {
			cols = []string{metric, unit, stack, mode, get("flows"), get("dir")}
		}
		if haveS {
			cols = append(cols, FormatValue(s))
		} else {
			cols = append(cols, "-")
		}
		for _, p := range peers {
			cols = append(cols, formatValue(peer[key{metric, cfg}], p))
		}
		for _, p := range peers {
			v, ok := peer[key{metric, cfg}][p]
			if !haveS || !ok {
				cols = append(cols, "-")
				continue
			}
			cols = append(cols, formatRatioValue(Ratio(s, v)))
		}
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
	}
	shown := map[key]bool{}
	for _, r := range rows {
		if r.During != "" {
			continue
		}
		if r.Impl == ImplSluice {
			stack, mode, rest := StackNetstack, "-", r.Config
			if st, after, ok := strings.Cut(rest, ","); ok && strings.HasPrefix(st, "stack=") {
				stack, rest = strings.TrimPrefix(st, "stack="), after
			}
			if m, after, ok := strings.Cut(rest, ","); ok && strings.HasPrefix(m, "mode=") {
				mode, rest = strings.TrimPrefix(m, "mode="), after
			}
			shown[key{r.Metric, rest}] = true
			line(r.Metric, r.Unit, stack, mode, rest, r.Value, true)
		}
	}
	// Peers' lines that no sluice line carried (sluice not selected, or
	// its measurement failed).
	for _, r := range rows {
		k := key{r.Metric, r.Config}
		if r.Impl == ImplSluice || r.During != "" || shown[k] {
			continue
		}
		shown[k] = true
		line(r.Metric, r.Unit, "-", "-", r.Config, 0, false)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("bench: write sandbox table: %w", err)
	}
	return nil
}

func formatRatioValue(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.2f", v)
}
