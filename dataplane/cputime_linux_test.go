//go:build linux

package dataplane

import "golang.org/x/sys/unix"

// cpuTime returns the process's user+sys CPU time in nanoseconds.
func cpuTime() int64 {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}
