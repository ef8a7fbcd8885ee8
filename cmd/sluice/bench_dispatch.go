package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicenet/sluice/bench"
)

// benchDispatchOptions are the flags of `sluice bench dispatch`, as typed.
type benchDispatchOptions struct {
	duration time.Duration
	modes    []string
	channels []string
	metrics  []string
	impls    []string
	json     bool
}

func newBenchDispatchCmd(stdout, stderr io.Writer) *cobra.Command {
	opts := benchDispatchOptions{
		duration: 3 * time.Second,
		modes:    []string{"readv", "recvmmsg", "mmap"},
		channels: []string{"1", "2"},
		metrics:  slices.Clone(bench.DispatchMetrics),
		impls:    slices.Clone(bench.Impls),
	}
	cmd := &cobra.Command{
		Use:   "dispatch [flags]",
		Short: "Compare sluice's and gVisor's fdbased endpoints: rx/tx frame rates, TCP throughput, peak RSS",
		Long: `dispatch compares sluice's fdbased endpoint with gVisor's, side by side in one
run, for every dispatch mode and channel count given, each on fresh AF_PACKET
sockets on one veth between two namespaces it creates (and removes):

  rx_pps    64-byte UDP frames sent at full rate from the peer namespace over
            64 flows; frames/s the endpoint delivers to a counting dispatcher
  tx_pps    prebuilt 64-byte UDP packets written with WritePackets in
            batches of 47; frames/s that reach the peer veth
  tcp_gbps  a kernel TCP sender in the peer namespace to a gVisor netstack
            TCP sink on the endpoint (MTU 1500, RX checksum offload); Gbit/s
  rss_mib   the process's peak RSS during each of those measurements, MiB

--modes xdp reads the veth with AF_XDP instead (sluice's redirect program,
one socket per channel, copy mode): sluice's xdp endpoint against gVisor's
pkg/tcpip/link/xdp endpoint, which reads one queue only (no figures for more
channels). With xdp in --modes the table is followed by a comparison of
sluice's AF_XDP endpoint, gVisor's and sluice's PACKET_MMAP endpoint (when
mmap is in --modes too), with the ratios xdp/gvisor-xdp and xdp/mmap.

Each measurement runs for --duration after a warm-up of a fifth of it (50 to
500 ms). Progress goes to stderr. Speeds on a shared machine are noisy: compare
the two columns of one run, not runs with each other.

Output (stdout): a table with one line per metric, mode and channel count,
columns sluice, gvisor, sluice/gvisor (ratio) and the peak RSS of each. With
--json, one JSON object per line and measurement instead:

  {"scenario":"dispatch","impl":"sluice","config":"mode=mmap,channels=2","metric":"rx_pps","value":412345,"unit":"frames/s"}
  {"scenario":"dispatch","impl":"sluice","config":"mode=mmap,channels=2","metric":"rss_mib","value":21.4,"unit":"MiB","during":"rx_pps"}

impl is sluice or gvisor; units are frames/s, Gbit/s and MiB; "during" names
the measurement a resource figure (rss_mib) was taken over. A measurement that
fails has no line, and the command exits non-zero after printing the rest.

Needs root (CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN).`,
		Example: `  sudo sluice bench dispatch
  sudo sluice bench dispatch --duration 2s --modes mmap --channels 2 --metrics rx_pps,tx_pps
  sudo sluice bench dispatch --json > dispatch.jsonl
  sudo sluice bench dispatch --modes mmap,xdp --channels 1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBenchDispatch(cmd.Context(), opts, stdout, stderr)
		},
	}
	f := cmd.Flags()
	f.DurationVar(&opts.duration, "duration", opts.duration, fmt.Sprintf("length of each measurement window (%v to %v)", bench.MinDuration, bench.MaxDuration))
	f.StringSliceVar(&opts.modes, "modes", opts.modes, "dispatch modes to measure: readv, recvmmsg, mmap, xdp (AF_XDP: sluice's xdp endpoint against gVisor's)")
	f.StringSliceVar(&opts.channels, "channels", opts.channels, fmt.Sprintf("channel counts (sockets in one fanout group) to measure, 1 to %d", bench.MaxChannels))
	f.StringSliceVar(&opts.metrics, "metrics", opts.metrics, "metrics to measure: rx_pps, tx_pps, tcp_gbps (rss_mib is taken during each)")
	f.StringSliceVar(&opts.impls, "impls", opts.impls, "implementations to measure: sluice, gvisor (the ratio needs both)")
	f.BoolVar(&opts.json, "json", false, "print one JSON object per line instead of a table")
	return cmd
}

// toBench checks the flags and turns them into bench's options; every error
// names the flag at fault.
func (o benchDispatchOptions) toBench(progress io.Writer) (bench.DispatchOptions, error) {
	var (
		d   = bench.DispatchOptions{Duration: o.duration, Progress: progress}
		err error
	)
	if o.duration < bench.MinDuration || o.duration > bench.MaxDuration {
		return d, fmt.Errorf("--duration %v: must be between %v and %v", o.duration, bench.MinDuration, bench.MaxDuration)
	}
	if d.Modes, err = bench.ParseModes(o.modes); err != nil {
		return d, err
	}
	if d.Channels, err = bench.ParseChannels(o.channels); err != nil {
		return d, err
	}
	if d.Metrics, err = bench.ParseMetrics(o.metrics); err != nil {
		return d, err
	}
	if d.Impls, err = bench.ParseImpls(o.impls); err != nil {
		return d, err
	}
	return d, d.Validate()
}

// runBenchDispatch is `sluice bench dispatch` without cobra.
func runBenchDispatch(ctx context.Context, o benchDispatchOptions, stdout, stderr io.Writer) error {
	d, err := o.toBench(stderr)
	if err != nil {
		return err
	}
	rep, runErr := bench.RunDispatch(ctx, d)
	var more func(io.Writer) error
	if slices.Contains(d.Modes, bench.ModeXDP) {
		more = func(w io.Writer) error {
			fmt.Fprintln(w)
			return bench.WriteXDPComparison(w, rep)
		}
	}
	return writeBenchReport(stdout, rep, o.json, runErr, more)
}
