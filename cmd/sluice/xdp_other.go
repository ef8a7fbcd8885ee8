//go:build !linux

package main

import (
	"fmt"
	"io"
	"runtime"

	"github.com/spf13/cobra"
)

// newXDPCmd on systems without eBPF: the command exists and says why it
// cannot run.
func newXDPCmd(stdout, stderr io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "xdp",
		Short: "Attach, inspect, capture with and detach sluice's XDP programs (Linux only)",
		RunE: func(*cobra.Command, []string) error {
			return fmt.Errorf("xdp: not supported on %s: XDP and eBPF need Linux", runtime.GOOS)
		},
	}
}
