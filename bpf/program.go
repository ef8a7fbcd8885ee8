package bpf

import (
	"fmt"
	"strings"
)

// Program names one of sluice's XDP programs.
type Program string

// The programs. Tunnel is the pair of TunnelHost on a NIC and TunnelVeth on
// the veth that leads to the user-space stack.
const (
	Pass       Program = "pass"
	Drop       Program = "drop"
	Redirect   Program = "redirect"
	Tunnel     Program = "tunnel"
	TunnelHost Program = "tunnel-host"
	TunnelVeth Program = "tunnel-veth"
	Capture    Program = "capture"
)

// kernelNames are the programs' names as the kernel reports them (the C
// function names, truncated to 15 bytes by BPF_OBJ_NAME_LEN).
var kernelNames = map[Program]string{
	Pass:       "xdp_pass",
	Drop:       "xdp_drop",
	Redirect:   "xdp_redirect",
	TunnelHost: "xdp_tunnel_host",
	TunnelVeth: "xdp_tunnel_veth",
	Capture:    "xdp_capture",
}

// KernelName is the name the kernel shows for p (bpftool prog show).
func (p Program) KernelName() string { return kernelNames[p] }

// ProgramByKernelName returns the sluice program with the given kernel name.
func ProgramByKernelName(name string) (Program, bool) {
	for p, n := range kernelNames {
		if n == name {
			return p, true
		}
	}
	return "", false
}

// ParseProgram parses a program name as given on the command line.
func ParseProgram(s string) (Program, error) {
	switch p := Program(strings.ToLower(s)); p {
	case Pass, Drop, Redirect, Tunnel, TunnelHost, TunnelVeth, Capture:
		return p, nil
	}
	return "", fmt.Errorf("bpf: unknown program %q: want pass, drop, redirect, tunnel or capture", s)
}

// Mode is how an XDP program is attached.
type Mode int

const (
	// ModeAuto lets the kernel choose: driver mode where the driver has
	// native XDP, generic otherwise.
	ModeAuto Mode = iota
	// ModeGeneric (SKB mode) runs after the skb is built; works on every
	// device, slower, and has no peer condition for veth redirects.
	ModeGeneric
	// ModeDriver (native) runs in the driver's receive path.
	ModeDriver
	// ModeOffload runs on the NIC; only reported, never requested.
	ModeOffload
	// ModeMulti means programs in more than one mode; only reported.
	ModeMulti
	// ModeNone means nothing is attached; only reported.
	ModeNone
)

var modeNames = [...]string{"auto", "generic", "driver", "offload", "multi", "none"}

func (m Mode) String() string {
	if m < 0 || int(m) >= len(modeNames) {
		return fmt.Sprintf("Mode(%d)", int(m))
	}
	return modeNames[m]
}

// MarshalText makes modes readable in JSON.
func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText parses a mode written by MarshalText.
func (m *Mode) UnmarshalText(b []byte) error {
	for i, n := range modeNames {
		if string(b) == n {
			*m = Mode(i)
			return nil
		}
	}
	return fmt.Errorf("bpf: unknown XDP mode %q", b)
}

// ParseMode parses an attach mode: auto, generic (or skb), driver (or
// native, drv).
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(s) {
	case "", "auto":
		return ModeAuto, nil
	case "generic", "skb":
		return ModeGeneric, nil
	case "driver", "native", "drv":
		return ModeDriver, nil
	}
	return 0, fmt.Errorf("bpf: unknown XDP mode %q: want auto, generic or driver", s)
}

// Count is a packet and byte count.
type Count struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// Counters are a sluice program's per-CPU counters summed over the CPUs,
// one slot per XDP action it returned (common.h).
type Counters struct {
	Aborted    Count `json:"aborted"`
	Dropped    Count `json:"dropped"`
	Passed     Count `json:"passed"`
	TX         Count `json:"tx"`
	Redirected Count `json:"redirected"`
	// Lost counts frames the capture program could not put in its ring
	// buffer because it was full (the frames were still passed).
	Lost Count `json:"lost"`
}

// numStats is STAT_MAX in common.h.
const numStats = 6

func (c *Counters) slot(i int) *Count {
	return [...]*Count{&c.Aborted, &c.Dropped, &c.Passed, &c.TX, &c.Redirected, &c.Lost}[i]
}

// String is a compact one-line form: only non-zero slots.
func (c Counters) String() string {
	var parts []string
	names := [...]string{"aborted", "dropped", "passed", "tx", "redirected", "lost"}
	for i, n := range names {
		if s := c.slot(i); s.Packets != 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", n, s.Packets))
		}
	}
	if len(parts) == 0 {
		return "0 packets"
	}
	return strings.Join(parts, " ")
}
