package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/sluicenet/sluice/internal/privs"
	"github.com/sluicenet/sluice/sandbox"
)

// privOptions say how `sluice run` gives up its privileges once the
// sandbox is set up.
type privOptions struct {
	noDrop  bool // --no-drop-privileges
	seccomp bool // --seccomp
}

// dropRunPrivileges is the sandbox's Ready hook: set-up is done, and
// sluice's own process keeps only what the packet path, the uplink and
// teardown use while the command runs (sandbox.RunPrivileges), on every
// thread, with no_new_privs and, unless --seccomp=false, the seccomp filter
// of internal/privs. The command itself is another process, started before
// this, and keeps what it was given.
func dropRunPrivileges(p privOptions, statsFile string, stderr io.Writer) func(*sandbox.Sandbox) error {
	return func(sb *sandbox.Sandbox) error {
		// A Go test binary runs `run --network host` in-process for
		// its table tests: giving up its privileges there would break
		// the tests that follow in the same process. The tests of the
		// drop run the sluice binary.
		if p.noDrop || testing.Testing() {
			return nil
		}
		need := sb.RunPrivileges()
		if need.All {
			// A plugin stack that does not say what it needs (the
			// bridge stack runs nft and deletes devices at Close).
			return nil
		}
		var keep []privs.Cap
		if need.RawICMP {
			keep = append(keep, privs.CapNetRaw)
		}
		if statsFile != "" && !ownerWritableDir(filepath.Dir(statsFile)) {
			// The report is written at the end, into a directory
			// root may write only by overriding its permissions.
			keep = append(keep, capDACOverride)
		}
		_, err := privs.Drop(privs.Options{Keep: keep, Seccomp: p.seccomp})
		if errors.Is(err, privs.ErrCgo) {
			// The filter and no_new_privs do not depend on cgo; apply
			// them, and say what was left.
			fmt.Fprintf(stderr, "sluice: capabilities not dropped: %v\n", err)
			if p.seccomp {
				_, err = privs.Drop(privs.Options{Seccomp: true, KeepAllCaps: true})
			} else {
				err = nil
			}
		}
		if err != nil {
			return fmt.Errorf("sluice: drop privileges after set-up: %w (--no-drop-privileges keeps them)", err)
		}
		return nil
	}
}

const capDACOverride privs.Cap = 1

// ownerWritableDir reports whether sluice, as the user it runs as, may
// create files in dir without CAP_DAC_OVERRIDE.
func ownerWritableDir(dir string) bool {
	fi, err := os.Stat(dir)
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	mode := fi.Mode().Perm()
	switch {
	case int(st.Uid) == os.Geteuid():
		return mode&0o300 == 0o300
	case int(st.Gid) == os.Getegid():
		return mode&0o030 == 0o030
	}
	return mode&0o003 == 0o003
}
