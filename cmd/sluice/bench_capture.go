package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicenet/sluice/bench"
)

// benchCaptureOptions are the flags of `sluice bench capture`, as typed.
type benchCaptureOptions struct {
	duration time.Duration
	vias     []string
	impls    []string
	cpus     []string
	dir      string
	rounds   int
	json     bool
}

func newBenchCaptureCmd(stdout, stderr io.Writer) *cobra.Command {
	opts := benchCaptureOptions{
		duration: 3 * time.Second,
		vias:     slices.Clone(bench.CaptureVias),
		impls:    slices.Clone(bench.CaptureImpls),
		cpus:     slices.Clone(bench.CaptureCPUs),
	}
	cmd := &cobra.Command{
		Use:   "capture [flags]",
		Short: "Compare sluice capture with tcpdump and netsniff-ng: frames captured and lost, CPU per frame",
		Long: `capture sends 64-byte UDP frames across a veth between two namespaces it
creates (and removes) as fast as one thread pinned to CPU 0 can (sendmmsg on
an AF_PACKET socket with PACKET_QDISC_BYPASS, 64 flows), for --duration, while
a capturer records them on the receiving end, va. Each capturer runs as a
process of its own, started with nsenter and taskset, and is given the same
traffic in turn: sluice capture with each --via, tcpdump -w and netsniff-ng
--out, each with its default ring (sluice 16 MiB, tcpdump 2 MiB, netsniff-ng
sized from the machine's memory).

  cpu=separate  the capturer is pinned to CPU 1, the sender (and the kernel's
                receive processing, which runs on the sending CPU) to CPU 0
  cpu=shared    the capturer is pinned to CPU 0 as well: the CPU-starved case

Per capturer and placement:

  sent_frames       frames that reached va (its rx_packets) while it ran
  captured_frames   the benchmark's frames in the capturer's file
  dropped_frames    sent_frames - captured_frames
  cpu_us_per_frame  the capturer's user+sys CPU time (rusage at exit, less
                    what it used before traffic started: start-up, ring
                    allocation) per captured frame, in microseconds

With --rounds N every measurement runs N times, in turn (so that a burst of
load from elsewhere hits one round of each), and each metric is the median
over the rounds. Progress also says how much CPU other processes used during
each measurement: on a shared machine that is what moves the numbers.

The capture runs on for 1.5 s after the sender stops (libpcap hands over a
partly filled ring block only after its 1 s timeout), then gets SIGINT.

Output (stdout): a table with a line per metric and configuration and a
column per capturer, sluice/tcpdump being their ratio; tcpdump and
netsniff-ng read a PACKET_MMAP ring, so they appear on the via=mmap lines.
With --json, one JSON object per line and measurement:

  {"scenario":"capture","impl":"tcpdump","config":"via=mmap,cpu=shared","metric":"cpu_us_per_frame","value":0.14,"unit":"us"}

Progress (stderr) has the sender's own count and each capturer's CPU time.
A capturer that is not installed is left out; a measurement that fails has no
rows, and the command exits non-zero after printing the rest. Needs root.`,
		Example: `  sudo sluice bench capture
  sudo sluice bench capture --duration 5s --vias mmap --cpus shared
  sudo sluice bench capture --json > capture.jsonl`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBenchCapture(cmd.Context(), opts, stdout, stderr)
		},
	}
	f := cmd.Flags()
	f.DurationVar(&opts.duration, "duration", opts.duration, fmt.Sprintf("how long the sender sends, per measurement (%v to %v)", bench.MinDuration, bench.MaxDuration))
	f.StringSliceVar(&opts.vias, "vias", opts.vias, "sluice's ways in to measure: mmap, recvmmsg, xdp")
	f.StringSliceVar(&opts.impls, "impls", opts.impls, "capturers to measure: sluice, tcpdump, netsniff-ng")
	f.StringSliceVar(&opts.cpus, "cpus", opts.cpus, "capturer placements: separate, shared")
	f.IntVar(&opts.rounds, "rounds", 1, "run every measurement this many times, in turn, and report the median of each metric")
	f.StringVar(&opts.dir, "dir", "", "directory for the capture files, each removed once counted (default $TMPDIR or /tmp)")
	f.BoolVar(&opts.json, "json", false, "print one JSON object per line instead of a table")
	return cmd
}

// runBenchCapture is `sluice bench capture` without cobra.
func runBenchCapture(ctx context.Context, o benchCaptureOptions, stdout, stderr io.Writer) error {
	if o.duration < bench.MinDuration || o.duration > bench.MaxDuration {
		return fmt.Errorf("--duration %v: must be between %v and %v", o.duration, bench.MinDuration, bench.MaxDuration)
	}
	c := bench.CaptureOptions{Duration: o.duration, Rounds: o.rounds, Dir: o.dir, Progress: stderr}
	if o.rounds < 1 {
		return fmt.Errorf("--rounds %d: want 1 or more", o.rounds)
	}
	var err error
	if c.Vias, err = bench.ParseCaptureVias(o.vias); err != nil {
		return err
	}
	if c.Impls, err = bench.ParseCaptureImpls(o.impls); err != nil {
		return err
	}
	if c.CPUs, err = bench.ParseCaptureCPUs(o.cpus); err != nil {
		return err
	}
	if slices.Contains(c.Impls, bench.ImplSluice) {
		if c.Sluice, err = os.Executable(); err != nil {
			return fmt.Errorf("find the sluice binary to run as a capturer: %w", err)
		}
	}
	rep, runErr := bench.RunCapture(ctx, c)
	return writeBenchReport(stdout, rep, o.json, runErr, nil)
}
