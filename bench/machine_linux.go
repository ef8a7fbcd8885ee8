package bench

import (
	"bufio"
	"bytes"
	"math"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// probeOS fills in what Linux tells about the machine: the kernel release,
// the CPU model, the memory and the load.
func probeOS(m *Machine) {
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPUModel = cpuinfoField(b, "model name")
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		// "MemTotal:       24683620 kB"
		if f := strings.Fields(cpuinfoField(b, "MemTotal")); len(f) == 2 && f[1] == "kB" {
			if kb, err := strconv.ParseFloat(f[0], 64); err == nil {
				m.MemoryMiB = math.Round(kb/1024*10) / 10
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
}

// cpuinfoField returns the value of the first "key: value" line with key,
// as in /proc/cpuinfo (tab before the colon) and /proc/meminfo.
func cpuinfoField(b []byte, key string) string {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
