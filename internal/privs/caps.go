package privs

import (
	"fmt"
	"strings"
)

// Cap is a Linux capability number (capabilities(7)).
type Cap uint

// The capabilities sluice's commands use.
const (
	CapNetAdmin Cap = 12
	CapNetRaw   Cap = 13
	CapSysAdmin Cap = 21
	CapPerfmon  Cap = 38
	CapBPF      Cap = 39
)

// capNames are the kernel's names, indexed by number (include/uapi/linux/
// capability.h), for messages and for reading /proc/PID/status.
var capNames = [...]string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
	"CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
	"CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
	"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
	"CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
	"CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

func (c Cap) String() string {
	if int(c) < len(capNames) {
		return capNames[c]
	}
	return fmt.Sprintf("CAP_%d", uint(c))
}

// Set is a set of capabilities as the kernel stores them: bit N is
// capability N.
type Set uint64

// SetOf returns the set holding caps.
func SetOf(caps ...Cap) Set {
	var s Set
	for _, c := range caps {
		s |= 1 << c
	}
	return s
}

// Has reports whether c is in s.
func (s Set) Has(c Cap) bool { return c < 64 && s&(1<<c) != 0 }

// Caps lists the capabilities in s in ascending order.
func (s Set) Caps() []Cap {
	var out []Cap
	for c := Cap(0); c < 64; c++ {
		if s.Has(c) {
			out = append(out, c)
		}
	}
	return out
}

// String is the capabilities' names joined by commas, or "none".
func (s Set) String() string {
	if s == 0 {
		return "none"
	}
	var names []string
	for _, c := range s.Caps() {
		names = append(names, c.String())
	}
	return strings.Join(names, ", ")
}
