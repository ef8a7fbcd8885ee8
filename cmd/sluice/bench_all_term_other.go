//go:build !linux

package main

import "io"

// terminalWidth does not know the width here: the bench needs Linux anyway.
func terminalWidth(io.Writer) int { return 0 }
