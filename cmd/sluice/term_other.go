//go:build !linux

package main

import "os"

// isTerminal reports false: sluice run needs Linux anyway.
func isTerminal(*os.File) bool { return false }

// reclaimTerminal does nothing.
func reclaimTerminal(*os.File) {}
