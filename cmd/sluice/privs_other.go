//go:build !linux

package main

import (
	"io"

	"github.com/sluicenet/sluice/sandbox"
)

type privOptions struct {
	noDrop  bool
	seccomp bool
}

func dropRunPrivileges(privOptions, string, io.Writer) func(*sandbox.Sandbox) error { return nil }
