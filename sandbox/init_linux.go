package sandbox

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// RunInit is the child's side of Start, run by the hidden `sluice
// __sandbox-init -- PATH ARGV0 ARGS...` in the new network namespace. It
// waits for sluice's go-ahead on descriptor 3 (a pipe) and then execs PATH
// with ARGV, so that the command replaces the init and its exit status is
// the child's. It returns only on failure.
func RunInit(args []string) error {
	if len(args) < 2 {
		return fmt.Errorf("sandbox: init: want PATH ARGV0 [ARGS...], got %q", args)
	}
	sync := os.NewFile(3, "sandbox-go-ahead")
	if sync == nil {
		return errors.New("sandbox: init: no go-ahead pipe on descriptor 3")
	}
	var b [1]byte
	n, err := io.ReadFull(sync, b[:])
	sync.Close()
	if n != 1 || b[0] != 'g' {
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("sandbox: init: read the go-ahead: %w", err)
		}
		return ErrSetupFailed
	}
	if err := syscall.Exec(args[0], args[1:], os.Environ()); err != nil {
		return fmt.Errorf("sandbox: exec %s: %w", args[0], err)
	}
	return nil
}
