package bpf

import (
	"errors"
	"fmt"
)

// Sentinel errors. None of them is worth retrying unchanged: each needs the
// operator to act, and the wrapped message says how.
var (
	// ErrUnknownInterface: no interface of that name in the namespace.
	ErrUnknownInterface = errors.New("unknown interface")
	// ErrAlreadyAttached: the interface already has an XDP program; the
	// error is an *AlreadyAttachedError naming it.
	ErrAlreadyAttached = errors.New("an XDP program is already attached")
	// ErrNotAttached: Detach found nothing of sluice's for the interface.
	ErrNotAttached = errors.New("nothing attached by sluice")
	// ErrBPFFSNotMounted: the pin root is not on a bpf filesystem.
	ErrBPFFSNotMounted = errors.New("bpffs not mounted")
	// ErrModeNotSupported: the driver has no native XDP (or the kernel no
	// such mode).
	ErrModeNotSupported = errors.New("XDP mode not supported by the device")
	// ErrPermission: the caller lacks CAP_BPF/CAP_NET_ADMIN. It matches
	// os.ErrPermission too through the wrapped syscall error.
	ErrPermission = errors.New("permission denied")
	// ErrNotSupported: the platform has no eBPF.
	ErrNotSupported = errors.New("not supported")
)

// AlreadyAttachedError says what holds an interface's XDP hook.
type AlreadyAttachedError struct {
	Iface string
	// Netns is the interface's namespace as the caller named it.
	Netns       string
	ProgramName string
	ProgramID   uint32
	Mode        Mode
	// PinDir is where sluice pinned it, or "" if another tool attached it.
	PinDir string
}

func (e *AlreadyAttachedError) Error() string {
	who := "another tool"
	fix := fmt.Sprintf("remove it with the tool that attached it (for a netlink attachment, `ip link set dev %s xdp off`)", e.Iface)
	if e.PinDir != "" {
		who = "sluice (pinned at " + e.PinDir + ")"
		ns := ""
		if e.Netns != "" {
			ns = " --netns " + e.Netns
		}
		fix = fmt.Sprintf("run `sluice xdp detach --iface %s%s` first", e.Iface, ns)
	}
	return fmt.Sprintf("%s: %s already has XDP program %q (id %d, %s mode) attached by %s: %s",
		ErrAlreadyAttached, e.Iface, e.ProgramName, e.ProgramID, e.Mode, who, fix)
}

func (e *AlreadyAttachedError) Unwrap() error { return ErrAlreadyAttached }
