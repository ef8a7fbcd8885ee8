package sandbox

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
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
	ppid := os.Getppid()
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
	// The parent-death signal is a property of the thread, not the
	// process: Start's fork set it on the init's first thread, threads
	// the Go runtime cloned since start without it (copy_process), and
	// execve hands the new program the calling thread's. So set it again
	// on the thread that execs, and make sure sluice did not die before.
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("sandbox: init: prctl PR_SET_PDEATHSIG: %w", err)
	}
	if os.Getppid() != ppid {
		return ErrSetupFailed
	}
	if conf := os.Getenv(resolvConfEnv); conf != "" {
		os.Unsetenv(resolvConfEnv)
		if err := mountResolvConf(conf); err != nil {
			return err
		}
	}
	if err := syscall.Exec(args[0], args[1:], os.Environ()); err != nil {
		return fmt.Errorf("sandbox: exec %s: %w", args[0], err)
	}
	return nil
}

// RunGuard is the guard of a sandbox, run by the hidden `sluice
// __sandbox-guard` in the command's network namespace (see Start). It waits
// until sluice closes the pipe on descriptor 3, which the kernel does when
// sluice exits for any reason, and then kills every process in its
// namespace, so that nothing the command left behind outlives sluice.
func RunGuard() error {
	// Signals meant for the command (a terminal's ^C, a hang-up) must not
	// stop the guard before its sweep; it execs nothing, so ignoring them
	// leaks nowhere.
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU)
	lifeline := os.NewFile(3, "sandbox-lifeline")
	if lifeline == nil {
		return errors.New("sandbox: guard: no lifeline pipe on descriptor 3")
	}
	_, _ = io.Copy(io.Discard, lifeline)
	lifeline.Close()
	fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sandbox: guard: open its namespace: %w", err)
	}
	ns, err := inodeOfFD(fd)
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("sandbox: guard: %w", err)
	}
	// Repeat until a sweep finds nobody: a process may fork between the
	// scan and its SIGKILL.
	for range 50 {
		if killNamespaceProcesses(ns) == 0 {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return errors.New("sandbox: guard: processes keep appearing in the namespace")
}

// resolvConfEnv names the environment variable by which Start tells the
// init which resolv.conf to bind-mount (--dns); the init removes it before
// the command sees the environment.
const resolvConfEnv = "SLUICE_SANDBOX_RESOLV_CONF"

// mountResolvConf bind-mounts conf over /etc/resolv.conf in the init's own
// mount namespace (Start cloned it with CLONE_NEWNS). Propagation is made
// private first, so that the mount does not reach the host's namespace
// through a shared /.
func mountResolvConf(conf string) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("sandbox: init: make mounts private: %w", err)
	}
	if err := unix.Mount(conf, "/etc/resolv.conf", "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("sandbox: init: bind-mount %s over /etc/resolv.conf: %w", conf, err)
	}
	return nil
}

// writeResolvConf writes a resolv.conf naming the gateways (the sandbox's
// DNS) in a directory of its own and returns its path.
func writeResolvConf(gateways []netip.Addr) (string, error) {
	dir, err := os.MkdirTemp("", "sluice-resolv")
	if err != nil {
		return "", fmt.Errorf("sandbox: resolv.conf: %w", err)
	}
	var b strings.Builder
	b.WriteString("# written by sluice: the sandbox's DNS, served by its gateway\n")
	for _, g := range gateways {
		fmt.Fprintf(&b, "nameserver %v\n", g)
	}
	path := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("sandbox: resolv.conf: %w", err)
	}
	return path, nil
}
