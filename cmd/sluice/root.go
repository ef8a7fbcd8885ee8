package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitError carries a specific exit status out of a command (sluice run
// exits with its command's status).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// execute runs the command line args and returns the process exit status.
// Tests call it with buffers in place of stdout and stderr.
func execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	fmt.Fprintf(stderr, "sluice: %v\n", err)
	return 1
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "sluice",
		Short: "Packet I/O engine for user-space network stacks, and a network sandbox built on it",
		Long: `sluice moves frames between the Linux kernel and a user-space TCP/IP stack
(gVisor's netstack): AF_PACKET sockets read with readv, recvmmsg or a
PACKET_MMAP ring, batched writes, several channels in a fanout group.

Every command that touches the network needs root (CAP_NET_ADMIN, CAP_NET_RAW).
Benchmarks build their own network namespaces and never use the machine's
real interfaces.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newVersionCmd(stdout))
	root.AddCommand(newBenchCmd(stdout, stderr))
	root.AddCommand(newRunCmd(stdout, stderr))
	root.AddCommand(newSandboxInitCmd())
	root.AddCommand(newSandboxGuardCmd())
	root.AddCommand(newDemoCmd(stdout, stderr))
	root.AddCommand(newDemoClientCmd(stdout))
	root.AddCommand(newXDPCmd(stdout, stderr))
	root.AddCommand(newCaptureCmd(stdout, stderr))
	return root
}

func newVersionCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print sluice's version, commit and Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(stdout, versionString())
			return nil
		},
	}
}

func versionString() string {
	commit, goVersion := "unknown", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				commit = s.Value
			}
		}
	}
	return fmt.Sprintf("sluice %s (commit %s, %s)", version, commit, goVersion)
}
