package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/sluicenet/sluice/bench"
)

func newBenchCompareCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "compare OLD.jsonl NEW.jsonl",
		Short: "Compare two benchmark runs figure by figure, with a note on whether each change is beyond noise",
		Long: `compare reads two results files of 'sluice bench all' (or the --json output of
a single-scenario command such as 'sluice bench dispatch --json') and prints a
table with a line per figure: the figure is matched by scenario, impl, config
and metric (and, for resource metrics such as rss_mib, by the measurement it
was taken during). Each side shows the median over its repeats with the
min-max range, then the change of the medians and a note:

  ranges overlap: within noise    the repeats of the two runs overlap
  ranges do not overlap: better   every repeat of one run is above every
  (or worse)                      repeat of the other, with the exact
                                  Mann-Whitney U test's two-sided p-value
                                  (3 repeats a side cannot go below p=0.10:
                                  the note says when p > 0.05)
  one run ...: no spread known    a side has one value: run with --repeat 3
  only in old / only in new       the figure is missing from one run

"better" and "worse" know which metrics are costs (rss_mib, rr_us,
dropped_frames, cpu_us_per_frame, retrans). A warning says when the two runs
were on different kernels, CPUs or core counts.

The exit status is 0 whenever both files could be read: compare reports, it
does not judge.`,
		Example: `  sudo sluice bench all --repeat 3 --out /tmp/before
  # ... change sluice, rebuild ...
  sudo sluice bench all --repeat 3 --out /tmp/after
  sluice bench compare /tmp/before/results.jsonl /tmp/after/results.jsonl`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runBenchCompare(args[0], args[1], stdout)
		},
	}
}

// runBenchCompare is `sluice bench compare` without cobra.
func runBenchCompare(oldPath, newPath string, stdout io.Writer) error {
	old, err := readResultsFile(oldPath)
	if err != nil {
		return err
	}
	new, err := readResultsFile(newPath)
	if err != nil {
		return err
	}
	return bench.WriteCompare(stdout, old, new)
}

func readResultsFile(path string) (*bench.SuiteResult, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open results: %w", err)
	}
	defer f.Close()
	res, err := bench.ReadResults(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return res, nil
}
