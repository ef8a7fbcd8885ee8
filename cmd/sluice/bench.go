package main

import (
	"io"

	"github.com/spf13/cobra"

	"github.com/sluicenet/sluice/bench"
)

func newBenchCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the packet path on namespaces and veth pairs the benchmark creates",
		Long: `bench runs benchmark scenarios on network namespaces and a veth pair it
creates for the run and removes afterwards (also on error or Ctrl-C). It never
uses the machine's real interfaces, and all its traffic stays inside those
namespaces (addresses in 192.0.2.0/24 and 2001:db8::/64). It needs root.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newBenchDispatchCmd(stdout, stderr))
	cmd.AddCommand(newBenchCaptureCmd(stdout, stderr))
	cmd.AddCommand(newBenchTCPCmd(stdout, stderr))
	cmd.AddCommand(newBenchSandboxCmd(stdout, stderr))
	cmd.AddCommand(newBenchAllCmd(stdout, stderr))
	cmd.AddCommand(newBenchCompareCmd(stdout))
	return cmd
}

// writeBenchReport prints what a scenario measured, also after a failure
// or an interrupt (the rows kept are still worth having): one JSON object
// per row with asJSON, else a table followed by more's output, if any.
// Nothing is printed when no row was measured. It returns runErr, or the
// write's error when the run had none.
func writeBenchReport(stdout io.Writer, rep *bench.Report, asJSON bool, runErr error, more func(io.Writer) error) error {
	if rep == nil || len(rep.Rows) == 0 {
		return runErr
	}
	var err error
	if asJSON {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteTable(stdout)
		if err == nil && more != nil {
			err = more(stdout)
		}
	}
	if runErr != nil {
		return runErr
	}
	return err
}
