package main

import (
	"io"

	"github.com/spf13/cobra"
)

func newBenchCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the packet path on namespaces and veth pairs the benchmark creates",
	}
	return cmd
}
