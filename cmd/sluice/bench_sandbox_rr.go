package main

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicenet/sluice/bench"
)

// newRRClientCmd is the hidden round-trip client `sluice bench sandbox`
// runs inside each sandbox (iperf3 does not measure latency): it prints
// one bench.RRResult as JSON and exits non-zero when it has an error.
func newRRClientCmd(stdout io.Writer) *cobra.Command {
	var (
		addr string
		d    time.Duration
	)
	cmd := &cobra.Command{
		Use:    bench.RRCommand + " --addr HOST:PORT --duration D",
		Short:  "Measure TCP round trips to a bench sandbox server (used by sluice bench sandbox)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r := bench.RRClient(cmd.Context(), addr, d)
			if err := json.NewEncoder(stdout).Encode(r); err != nil {
				return fmt.Errorf("%s: write result: %w", bench.RRCommand, err)
			}
			if r.Error != "" {
				return exitError{1}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "", "server address HOST:PORT")
	cmd.Flags().DurationVar(&d, "duration", 3*time.Second, "measurement window")
	_ = cmd.MarkFlagRequired("addr")
	return cmd
}
