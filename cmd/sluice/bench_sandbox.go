package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicenet/sluice/bench"
	"github.com/sluicenet/sluice/sandbox"
)

// benchSandboxOptions are the flags of `sluice bench sandbox`, as typed.
type benchSandboxOptions struct {
	duration   time.Duration
	impls      []string
	modes      []string
	stacks     []string
	flows      []string
	directions []string
	metrics    []string
	json       bool
	exe        string // the sluice binary; os.Executable() when empty
}

func newBenchSandboxCmd(stdout, stderr io.Writer) *cobra.Command {
	def := bench.DefaultSandboxOptions()
	opts := benchSandboxOptions{
		duration:   def.Duration,
		impls:      slices.Clone(bench.SandboxImpls),
		modes:      slices.Clone(def.Modes),
		stacks:     slices.Clone(def.Stacks),
		flows:      []string{"1", "4"},
		directions: []string{"up", "down"},
		metrics:    []string{bench.MetricTCPGbps, bench.MetricRRMicros},
	}
	cmd := &cobra.Command{
		Use:   "sandbox [flags]",
		Short: "Compare sluice run with pasta, slirp4netns and kernel routing: TCP throughput and round trips",
		Long: fmt.Sprintf(`sandbox measures a whole sandbox: a client in a network namespace of its own
reaches a server in a test namespace the benchmark creates (10.200.0.1 on its
lo; iperf3 -s and a round-trip echo server) through:

  sluice       sluice run --uplink-netns SERVER --profile throughput
               --dispatch MODE (MTU 65520, host GSO, checksum offloads),
               once per --modes value; with --stacks, once per stack
               and mode (--network plugin --plugin NAME for a stack other
               than netstack; registered in this sluice: %s)
  pasta        pasta --config-net, as the unprivileged user sluicebench
               (created with useradd --system if missing; pasta refuses
               root), started inside the server namespace
  slirp4netns  slirp4netns --configure --mtu=65520, started inside the
               server namespace, attached to a sandbox namespace
  kernel       a veth from the sandbox namespace to the server namespace,
               routed by the kernel: the limit

pasta and slirp4netns open their host-side sockets in the namespace they run
in, so running them inside the server namespace keeps every connection off
the real network. An implementation that cannot run here (not installed,
/dev/net/tun not usable by sluicebench, user namespaces off) is skipped with
the reason on stderr.

Metrics:
  tcp_gbps  iperf3 -c inside the sandbox (--json; what the receiver got),
            --flows parallel connections, up = sandbox -> server, down =
            server -> sandbox (iperf3 -R). iperf3 takes whole seconds: the
            window is --duration rounded up
  rr_us     median round trip of a 64-byte request and response on one
            TCP connection (sluice's own client, run inside the sandbox),
            over --duration after 200 warm-up round trips

Output (stdout): a table, one line per metric and sluice configuration, the
peers' figures (measured once, they have no dispatch mode) on every mode's
line, and the ratios sluice/pasta, sluice/slirp4netns, sluice/kernel (for
rr_us below 1 means sluice is faster); with a plugin stack in --stacks a
stack column tells the stacks' lines apart, and a stack this sluice has not
registered is skipped with the reason. With --json, one object per line:

  {"scenario":"sandbox","impl":"sluice","config":"mode=recvmmsg,flows=1,dir=up","metric":"tcp_gbps","value":9.1,"unit":"Gbit/s"}
  {"scenario":"sandbox","impl":"sluice","config":"stack=bridge,mode=recvmmsg,flows=1,dir=up","metric":"tcp_gbps","value":12.0,"unit":"Gbit/s"}
  {"scenario":"sandbox","impl":"pasta","config":"flows=1,dir=up","metric":"tcp_gbps","value":1.0,"unit":"Gbit/s"}
  {"scenario":"sandbox","impl":"kernel","config":"msg=64","metric":"rr_us","value":46,"unit":"us"}

A measurement that fails has no line and the command exits non-zero after
printing the rest. Everything the run creates (namespaces, veths, processes)
is removed when it ends, also on Ctrl-C. The full default run is 30
measurements (5 per sluice mode and per peer): about 3 minutes with
--duration 3s. Speeds on a shared machine are noisy: compare the columns of
one run, not runs with each other.

Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN), iperf3 for tcp_gbps.`, strings.Join(sandbox.Stacks(), ", ")),
		Example: `  sudo sluice bench sandbox
  sudo sluice bench sandbox --impls sluice,kernel --modes mmap --flows 1 --directions up --duration 2s
  sudo sluice bench sandbox --metrics rr_us --json > rr.jsonl
  sudo sluice bench sandbox --stacks netstack,bridge --impls sluice,kernel --modes recvmmsg`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBenchSandbox(cmd.Context(), opts, stdout, stderr)
		},
	}
	// The round-trip client lives under this command (sluice bench
	// sandbox __rr-client), hidden: it is this benchmark's own tool.
	cmd.AddCommand(newRRClientCmd(stdout))
	f := cmd.Flags()
	f.DurationVar(&opts.duration, "duration", opts.duration, fmt.Sprintf("length of each measurement window (%v to %v; iperf3 rounds up to whole seconds)", bench.MinDuration, bench.MaxDuration))
	f.StringSliceVar(&opts.impls, "impls", opts.impls, "implementations to measure: sluice, pasta, slirp4netns, kernel")
	f.StringSliceVar(&opts.modes, "modes", opts.modes, "sluice's dispatch modes to measure: readv, recvmmsg, mmap")
	f.StringSliceVar(&opts.stacks, "stacks", opts.stacks, "sluice's stacks to measure: netstack (--network sandbox) and registered plugins ("+strings.Join(sandbox.Stacks(), ", ")+")")
	f.StringSliceVar(&opts.flows, "flows", opts.flows, fmt.Sprintf("numbers of parallel TCP connections for tcp_gbps, 1 to %d", bench.MaxFlows))
	f.StringSliceVar(&opts.directions, "directions", opts.directions, "directions for tcp_gbps: up (sandbox -> server), down (server -> sandbox)")
	f.StringSliceVar(&opts.metrics, "metrics", opts.metrics, "metrics to measure: tcp_gbps, rr_us")
	f.BoolVar(&opts.json, "json", false, "print one JSON object per line instead of a table")
	return cmd
}

// toBench checks the flags and turns them into bench's options; every error
// names the flag at fault.
func (o benchSandboxOptions) toBench(progress io.Writer) (bench.SandboxOptions, error) {
	s := bench.SandboxOptions{Duration: o.duration, Impls: o.impls, Modes: o.modes, Stacks: o.stacks, Registered: sandbox.Stacks(), Progress: progress, Exe: o.exe}
	if len(s.Stacks) == 0 {
		s.Stacks = []string{bench.StackNetstack}
	}
	for _, f := range o.flows {
		n, err := strconv.Atoi(f)
		if err != nil {
			return s, fmt.Errorf("--flows %q: not a number", f)
		}
		s.Flows = append(s.Flows, n)
	}
	for _, d := range o.directions {
		switch d {
		case "up":
			s.Directions = append(s.Directions, bench.Up)
		case "down":
			s.Directions = append(s.Directions, bench.Down)
		default:
			return s, fmt.Errorf("--directions %q: want up or down", d)
		}
	}
	for _, m := range o.metrics {
		switch m {
		case bench.MetricTCPGbps:
			s.TCP = true
		case bench.MetricRRMicros:
			s.RR = true
		default:
			return s, fmt.Errorf("--metrics %q: want %s or %s", m, bench.MetricTCPGbps, bench.MetricRRMicros)
		}
	}
	if s.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return s, fmt.Errorf("bench sandbox: find sluice's executable (it runs sluice run): %w", err)
		}
		s.Exe = exe
	}
	return s, s.Validate()
}

// runBenchSandbox is `sluice bench sandbox` without cobra.
func runBenchSandbox(ctx context.Context, o benchSandboxOptions, stdout, stderr io.Writer) error {
	s, err := o.toBench(stderr)
	if err != nil {
		return err
	}
	res, runErr := bench.RunSandbox(ctx, s)
	if res != nil {
		for _, sk := range res.Skips {
			fmt.Fprintf(stderr, "sluice: bench sandbox: skipped %s\n", sk)
		}
		if len(res.Rows) > 0 {
			var werr error
			if o.json {
				werr = res.WriteJSON(stdout)
			} else {
				werr = bench.WriteSandboxTable(stdout, res.Rows)
			}
			if werr != nil && runErr == nil {
				runErr = werr
			}
		}
	}
	return runErr
}
