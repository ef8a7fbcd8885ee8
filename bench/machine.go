package bench

import (
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
)

// Machine holds the facts of the machine a run measured, so that figures
// from different machines, kernels or builds are never compared unawares.
type Machine struct {
	// OS and Arch are runtime.GOOS and runtime.GOARCH.
	OS   string `json:"os"`
	Arch string `json:"arch"`
	// Kernel is the kernel release (uname -r).
	Kernel string `json:"kernel"`
	// CPUModel is the first "model name" of /proc/cpuinfo.
	CPUModel string `json:"cpu_model"`
	// Cores is the number of CPUs this process may run on
	// (runtime.NumCPU: the affinity mask, not the machine's total).
	Cores int `json:"cores"`
	// MemoryMiB is the machine's memory (MemTotal), in MiB.
	MemoryMiB float64 `json:"memory_mib,omitempty"`
	// LoadAvg is /proc/loadavg's 1, 5 and 15 minute averages when the run
	// started: a busy machine explains noisy figures.
	LoadAvg string `json:"loadavg,omitempty"`
	// GoVersion is the Go toolchain that built sluice.
	GoVersion string `json:"go_version"`
	// SluiceVersion is sluice's version (`sluice version`).
	SluiceVersion string `json:"sluice_version"`
	// SluiceCommit is the VCS revision sluice was built from, with
	// "+dirty" when the tree had changes; "unknown" when the build has
	// no VCS stamp (go test, go run).
	SluiceCommit string `json:"sluice_commit"`
}

// ProbeMachine gathers the facts of this machine and build. version is
// sluice's version as the command line knows it. Facts that cannot be read
// are left empty: they describe the run, they never stop it.
func ProbeMachine(version string) Machine {
	m := Machine{
		OS:            runtime.GOOS,
		Arch:          runtime.GOARCH,
		Cores:         runtime.NumCPU(),
		GoVersion:     runtime.Version(),
		SluiceVersion: version,
		SluiceCommit:  "unknown",
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, dirty string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "+dirty"
				}
			}
		}
		if rev != "" {
			m.SluiceCommit = rev + dirty
		}
	}
	probeOS(&m)
	return m
}

// String is a one-line description for summaries, for example "linux
// 6.18.44/amd64, AMD EPYC, 2 cores". Unknown facts are left out.
func (m Machine) String() string {
	var parts []string
	sys := strings.TrimSpace(m.OS + " " + m.Kernel)
	if m.Arch != "" {
		sys += "/" + m.Arch
	}
	for _, p := range []string{sys, m.CPUModel} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	if m.Cores > 0 {
		parts = append(parts, plural(m.Cores, "core"))
	}
	if len(parts) == 0 {
		return "unknown machine"
	}
	return strings.Join(parts, ", ")
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}
