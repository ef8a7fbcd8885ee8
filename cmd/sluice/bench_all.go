package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicenet/sluice/bench"
	"github.com/sluicenet/sluice/sandbox"
)

// Files `sluice bench all` writes into its output directory.
const (
	resultsFile = "results.jsonl"
	summaryFile = "summary.md"
	reportFile  = "report.html"
)

// benchAllOptions are the flags of `sluice bench all`, as typed.
type benchAllOptions struct {
	duration time.Duration
	repeat   int
	out      string
	quiet    bool
	quick    bool
	only     []string
	from     string
}

func newBenchAllCmd(stdout, stderr io.Writer) *cobra.Command {
	opts := benchAllOptions{duration: 3 * time.Second, repeat: 1}
	cmd := &cobra.Command{
		Use:   "all [flags]",
		Short: "Run every benchmark scenario this machine supports and write results, a summary and an HTML report",
		Long: `all runs every benchmark scenario, and every configuration of each, in a fixed
order; each builds its own namespaces and veth pairs and removes them when it
ends, fails or is interrupted (Ctrl-C). What the machine cannot run (no root, a
peer tool such as pasta or tcpdump not installed, no AF_XDP) is skipped and the
reason recorded. With --repeat N the whole plan runs N times, one
repeat after the other, so that slow drift of the machine spreads over every
figure.

It writes into --out DIR:

  results.jsonl  one JSON object per line. The first ("kind":"machine") holds
                 the machine and the run: kernel, cpu_model, cores,
                 memory_mib, loadavg, go_version, sluice_version,
                 sluice_commit ("unknown" in a build without a VCS stamp,
                 see go build -buildvcs), started, duration_s, repeats,
                 quick, only. Then
                 "kind":"row" lines, each a measured value in the format of
                 'sluice bench dispatch --json' plus "repeat" (1..N);
                 "kind":"sample" lines (a figure over time, "t_s" seconds
                 into the window), "kind":"skip" lines ("reason"),
                 "kind":"error" lines ("error"), and last "kind":"end"
                 ("elapsed_s", "interrupted"). Lines are written as they
                 are measured: an interrupted run keeps what it measured.
  summary.md     a table per scenario: the median of each figure and its
                 min-max over the repeats, sluice against each peer with
                 ratios (and the range of the per-repeat ratios), then what
                 was skipped and what failed. Also printed on stdout.
  report.html    the same tables with inline SVG plots, no JavaScript and no
                 external files: per scenario a bar chart per metric of
                 sluice's configurations against the peers and the kernel
                 limit, and figures over time where a scenario samples them.

Progress goes to stderr: one line redrawn in place on a terminal (scenario i
of n, step, elapsed and estimated time left, the last figure), one line per
step otherwise or with --quiet.

--quick runs a reduced plan of each scenario, for a smoke run (dispatch: one
channel; tcp: one flow over mmap, GSO none and host, GRO and peer TSO on;
sandbox: one flow, sluice in recvmmsg mode; capture: on the sender's CPU,
sluice via mmap against tcpdump).
--only selects scenarios, and optionally steps by their configuration:
NAME[:KEY=VALUE[/VALUE...]]..., for example dispatch:channels=1 or
dispatch:metric=rx_pps/tx_pps:mode=mmap. Conditions on different keys must
all hold; the values of one key are alternatives.

Scenarios, in order: ` + strings.Join(scenarioNames(), ", ") + `; dispatch includes the
xdp mode (AF_XDP), skipped where the kernel has none; sandbox runs each
registered plugin stack (` + strings.Join(sandbox.Stacks(), ", ") + `) in recvmmsg mode besides the
netstack (sandbox:stack=NAME selects one), except with --quick.
Exits non-zero when interrupted, when a step failed, or when nothing could run.
Needs root (CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN).`,
		Example: `  sudo sluice bench all
  sudo sluice bench all --repeat 3 --duration 1s --out /tmp/before
  sudo sluice bench all --only dispatch:channels=1 --quiet`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBenchAll(cmd.Context(), opts, stdout, stderr)
		},
	}
	f := cmd.Flags()
	f.DurationVar(&opts.duration, "duration", opts.duration, fmt.Sprintf("length of each measurement window (%v to %v); scenarios add a warm-up", bench.MinDuration, bench.MaxDuration))
	f.IntVarP(&opts.repeat, "repeat", "n", opts.repeat, fmt.Sprintf("runs of the whole plan (1 to %d); 3 or more give min-max ranges and let compare judge changes", bench.MaxRepeat))
	f.StringVarP(&opts.out, "out", "o", "", "directory for results.jsonl, summary.md and report.html, created if missing, files in it replaced (default ./sluice-bench-YYYYMMDD-HHMMSS)")
	f.BoolVarP(&opts.quiet, "quiet", "q", false, "one progress line per step instead of a line redrawn in place")
	f.BoolVar(&opts.quick, "quick", false, "a reduced plan of each scenario (its representative configurations), for a smoke run")
	f.StringVar(&opts.from, "from", "", "measure nothing: write summary.md and report.html (into --out, default the file's directory) from this results.jsonl, for example of a run that was killed")
	f.StringSliceVar(&opts.only, "only", nil, "run only these scenarios or steps, NAME[:KEY=VALUE[/VALUE]]... (default all)")
	return cmd
}

func scenarioNames() []string {
	var names []string
	for _, s := range bench.Scenarios() {
		names = append(names, s.Name())
	}
	return names
}

// toSuite checks the flags and turns them into the suite's options; every
// error names the flag at fault.
func (o benchAllOptions) toSuite() (bench.SuiteOptions, error) {
	s := bench.SuiteOptions{Duration: o.duration, Repeat: o.repeat, Quick: o.quick, SandboxStacks: sandbox.Stacks()}
	if o.duration < bench.MinDuration || o.duration > bench.MaxDuration {
		return s, fmt.Errorf("--duration %v: must be between %v and %v", o.duration, bench.MinDuration, bench.MaxDuration)
	}
	if o.repeat < 1 || o.repeat > bench.MaxRepeat {
		return s, fmt.Errorf("--repeat %d: must be 1 to %d", o.repeat, bench.MaxRepeat)
	}
	var err error
	if s.Only, err = bench.ParseFilters(o.only); err != nil {
		return s, err
	}
	if err := s.Validate(); err != nil {
		return s, fmt.Errorf("--only: %w", err)
	}
	return s, nil
}

// runBenchAll is `sluice bench all` without cobra.
func runBenchAll(ctx context.Context, o benchAllOptions, stdout, stderr io.Writer) error {
	if o.from != "" {
		return renderBenchAll(o, stdout, stderr)
	}
	sopts, err := o.toSuite()
	if err != nil {
		return err
	}
	dir := o.out
	if dir == "" {
		dir = "sluice-bench-" + time.Now().Format("20060102-150405")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create the output directory (--out): %w", err)
	}
	resPath := filepath.Join(dir, resultsFile)
	rf, err := os.Create(resPath)
	if err != nil {
		return fmt.Errorf("create the results file: %w", err)
	}
	defer rf.Close()

	// Records go to the file as they come, so that a run that is killed
	// outright keeps what it had measured.
	var writeErr error
	sopts.Start = func(res *bench.SuiteResult) {
		writeErr = res.WriteHeader(rf)
	}
	sopts.Record = func(r bench.Record) {
		if writeErr == nil {
			writeErr = bench.WriteRecord(rf, r)
		}
	}
	pp := newProgressPrinter(stderr, !o.quiet && isTerminalWriter(stderr))
	sopts.Progress = pp.event
	fmt.Fprintf(stderr, "bench all: writing %s\n", dir)

	// After the first Ctrl-C the current step cleans up, which can take
	// seconds; a second one ends the process at once, as it would
	// without sluice (the next run removes the namespaces a killed one
	// left: see bench/topology_linux.go).
	stopWatch := context.AfterFunc(ctx, func() {
		pp.note("bench all: interrupted: cleaning up (Ctrl-C again to quit at once)")
		signal.Reset(os.Interrupt, syscall.SIGTERM)
	})
	defer stopWatch()
	res, runErr := bench.RunSuite(ctx, bench.ProbeMachine(version), sopts)
	pp.finish()
	if res == nil {
		return runErr
	}
	if writeErr == nil {
		writeErr = res.WriteFooter(rf)
	}
	if err := rf.Close(); err != nil && writeErr == nil {
		writeErr = fmt.Errorf("close %s: %w", resPath, err)
	}
	if err := writeReports(res, dir, stdout); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "bench all: wrote %s, %s and %s in %s\n", resultsFile, summaryFile, reportFile, dir)

	if writeErr != nil {
		return fmt.Errorf("results file %s is incomplete: %w", resPath, writeErr)
	}
	if runErr != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted: the partial results are in %s", dir)
		}
		return runErr
	}
	return outcome(res, dir)
}

// writeReports writes summary.md and report.html for res into dir, and
// summary.md on stdout.
func writeReports(res *bench.SuiteResult, dir string, stdout io.Writer) error {
	desc := bench.Descriptions(bench.Scenarios())
	var summary bytes.Buffer
	if err := res.WriteSummary(&summary, desc); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, summaryFile), summary.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write the summary: %w", err)
	}
	var report bytes.Buffer
	if err := res.WriteHTML(&report, desc); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, reportFile), report.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write the report: %w", err)
	}
	if _, err := stdout.Write(summary.Bytes()); err != nil {
		return fmt.Errorf("print the summary: %w", err)
	}
	return nil
}

// renderBenchAll is `sluice bench all --from FILE`: the summary and the
// report of a results file, without measuring.
func renderBenchAll(o benchAllOptions, stdout, stderr io.Writer) error {
	res, err := readResultsFile(o.from)
	if err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	dir := o.out
	if dir == "" {
		dir = filepath.Dir(o.from)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create the output directory (--out): %w", err)
	}
	if err := writeReports(res, dir, stdout); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "bench all: wrote %s and %s in %s from %s\n", summaryFile, reportFile, dir, o.from)
	return nil
}

// outcome turns a finished run into the command's error: failed steps, or
// a run in which nothing could be measured, are failures.
func outcome(res *bench.SuiteResult, dir string) error {
	var rows, failed int
	var skips []string
	for _, r := range res.Records {
		switch r.Kind {
		case bench.KindRow:
			rows++
		case bench.KindError:
			failed++
		case bench.KindSkip:
			skips = append(skips, r.Scenario+": "+r.Reason)
		}
	}
	switch {
	case failed > 0:
		return fmt.Errorf("%d step(s) failed: see %s", failed, filepath.Join(dir, summaryFile))
	case rows == 0:
		return errors.New("nothing could be measured here: " + strings.Join(skips, "; "))
	}
	return nil
}

// isTerminalWriter reports whether w is a terminal (stderr on a console),
// where progress is redrawn in place.
func isTerminalWriter(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isTerminal(f)
}
