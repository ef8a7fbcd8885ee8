package privs

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrCgo is returned (wrapped) when capabilities cannot be changed on every
// thread because the binary links cgo; build sluice with CGO_ENABLED=0.
var ErrCgo = errors.New("this binary links cgo, so capabilities cannot be changed on every thread (build it with CGO_ENABLED=0)")

// Options say what Drop keeps.
type Options struct {
	// Keep are the capabilities that stay effective and permitted, as far
	// as the process has them. Every other capability leaves the
	// effective, permitted, inheritable and ambient sets and, when the
	// process has CAP_SETPCAP, the bounding set.
	Keep []Cap
	// KeepAllCaps leaves the capabilities as they are (where they cannot
	// be changed on every thread: ErrCgo).
	KeepAllCaps bool
	// Seccomp installs Filter (which implies no_new_privs).
	Seccomp bool
}

// Result is what Drop left in force.
type Result struct {
	Kept       Set  // effective and permitted capabilities
	NoNewPrivs bool // no_new_privs is set on every thread
	Seccomp    bool // the filter is installed on every thread
}

// Drop removes, from every thread of the process, the capabilities not in
// o.Keep, sets no_new_privs, and installs the seccomp filter if asked. It is
// not reversible. On error, part of it may have been done.
func Drop(o Options) (Result, error) {
	var res Result
	cur, err := capGet()
	if err != nil {
		return res, err
	}
	keep := SetOf(o.Keep...) & cur.permitted
	if o.KeepAllCaps {
		keep = cur.effective
	} else if err := dropCaps(cur, keep); err != nil {
		return res, err
	}
	res.Kept = keep

	// no_new_privs: an exec can no longer gain privileges (setuid bits,
	// file capabilities, or root's full set). It is needed for an
	// unprivileged seccomp filter anyway.
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); e != 0 {
		if e != unix.ENOTSUP || !o.Seccomp {
			return res, allThreadsErr("prctl(PR_SET_NO_NEW_PRIVS)", e)
		}
		// With cgo, the filter's TSYNC below spreads no_new_privs to
		// every thread from this one.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return res, fmt.Errorf("privs: prctl(PR_SET_NO_NEW_PRIVS): %w", err)
		}
	}
	res.NoNewPrivs = true
	if o.Seccomp {
		if err := installFilter(); err != nil {
			return res, err
		}
		res.Seccomp = true
	}
	return res, nil
}

func allThreadsErr(what string, e syscall.Errno) error {
	if e == unix.ENOTSUP {
		return fmt.Errorf("privs: %s: %w", what, ErrCgo)
	}
	return fmt.Errorf("privs: %s: %w", what, e)
}

// capSets are a thread's capability sets.
type capSets struct{ effective, permitted, inheritable Set }

func capGet() (capSets, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return capSets{}, fmt.Errorf("privs: capget: %w", err)
	}
	join := func(lo, hi uint32) Set { return Set(lo) | Set(hi)<<32 }
	return capSets{
		effective:   join(data[0].Effective, data[1].Effective),
		permitted:   join(data[0].Permitted, data[1].Permitted),
		inheritable: join(data[0].Inheritable, data[1].Inheritable),
	}, nil
}

// lastCap is the highest capability the running kernel knows.
func lastCap() Cap {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n >= 0 && n < 64 {
			return Cap(n)
		}
	}
	return Cap(len(capNames) - 1)
}

func dropCaps(cur capSets, keep Set) error {
	if cur.permitted == keep && cur.effective == keep && cur.inheritable == 0 {
		return nil // nothing to drop (for example, not root)
	}
	// The bounding set first: dropping from it needs CAP_SETPCAP, which
	// goes with the capset below.
	if cur.effective.Has(8) { // CAP_SETPCAP
		for c := Cap(0); c <= lastCap(); c++ {
			if keep.Has(c) {
				continue
			}
			if _, _, e := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uintptr(c), 0); e != 0 && e != unix.EINVAL {
				return allThreadsErr(fmt.Sprintf("prctl(PR_CAPBSET_DROP, %v)", c), e)
			}
		}
	}
	if _, _, e := syscall.AllThreadsSyscall6(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, 0); e != 0 && e != unix.EINVAL {
		return allThreadsErr("prctl(PR_CAP_AMBIENT_CLEAR_ALL)", e)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := [2]unix.CapUserData{
		{Effective: uint32(keep), Permitted: uint32(keep)},
		{Effective: uint32(keep >> 32), Permitted: uint32(keep >> 32)},
	}
	_, _, e := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	runtime.KeepAlive(&hdr)
	runtime.KeepAlive(&data)
	if e != 0 {
		return allThreadsErr("capset", e)
	}
	return nil
}

// installFilter loads Filter on every thread (SECCOMP_FILTER_FLAG_TSYNC).
func installFilter() error {
	prog, err := Filter()
	if err != nil {
		return err
	}
	raw, err := assemble(prog)
	if err != nil {
		return err
	}
	fprog := unix.SockFprog{Len: uint16(len(raw)), Filter: &raw[0]}
	r, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(raw)
	if e != 0 {
		return fmt.Errorf("privs: install the seccomp filter: %w", e)
	}
	if r != 0 {
		// TSYNC names the thread that could not take the filter.
		return fmt.Errorf("privs: install the seccomp filter: thread %d has a different filter", r)
	}
	return nil
}
