package main

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// terminalWidth returns w's width in columns when it is a terminal, 0
// (unknown: do not cut) otherwise.
func terminalWidth(w io.Writer) int {
	if f, ok := w.(*os.File); ok {
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 0 {
			return int(ws.Col)
		}
	}
	return 0
}
