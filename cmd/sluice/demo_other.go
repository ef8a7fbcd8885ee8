//go:build !linux

package main

import (
	"errors"
	"io"
	"runtime"

	"github.com/spf13/cobra"
)

func newDemoCmd(_, _ io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "demo",
		Short: "Show the sandbox at work (Linux only)",
		RunE: func(*cobra.Command, []string) error {
			return errors.New("demo needs Linux network namespaces; this is " + runtime.GOOS)
		},
	}
}

func newDemoClientCmd(io.Writer) *cobra.Command {
	return &cobra.Command{Use: "__demo-client", Hidden: true}
}
