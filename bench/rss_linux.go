package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
)

// resetPeakRSS returns freed heap to the kernel and then resets the
// process's resident-set high-water mark (VmHWM) to its current RSS, so
// that the next peakRSSMiB covers only what happens in between. Writing
// "5" to clear_refs does the reset (proc(5), Linux 4.0 and later).
func resetPeakRSS() error {
	runtime.GC()
	debug.FreeOSMemory()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		return fmt.Errorf("bench: reset peak RSS: %w", err)
	}
	return nil
}

// peakRSSMiB returns VmHWM from /proc/self/status in MiB.
func peakRSSMiB() (float64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("bench: read peak RSS: %w", err)
	}
	kib, err := parseVmHWM(b)
	if err != nil {
		return 0, fmt.Errorf("bench: read peak RSS: %w", err)
	}
	return float64(kib) / 1024, nil
}

// parseVmHWM finds the "VmHWM:  1234 kB" line of a /proc/PID/status file
// and returns its value in KiB.
func parseVmHWM(status []byte) (uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("malformed VmHWM line %q", sc.Text())
		}
		return strconv.ParseUint(f[0], 10, 64)
	}
	return 0, fmt.Errorf("no VmHWM line in /proc/self/status")
}
