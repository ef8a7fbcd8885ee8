// Package netns runs code inside Linux network namespaces and creates and
// removes named ones.
//
// Everything that resolves an interface index or creates a socket or device
// does so in the network namespace of the calling OS thread, so that code must
// run on a locked thread that has joined the namespace: Do arranges that. A
// socket keeps the namespace it was created in, so descriptors opened inside
// Do remain usable from any goroutine afterwards.
package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// RunDir is where named namespaces are bind-mounted, as by `ip netns add`.
const RunDir = "/var/run/netns"

// Path returns the path of a namespace given by name or path: a value with a
// slash is a path (for example /proc/PID/ns/net), anything else is a name
// under RunDir. The empty string means the caller's current namespace.
func Path(nameOrPath string) string {
	if nameOrPath == "" || filepath.IsAbs(nameOrPath) || filepath.Dir(nameOrPath) != "." {
		return nameOrPath
	}
	return filepath.Join(RunDir, nameOrPath)
}

// Do runs fn on a locked OS thread that has joined the network namespace
// nameOrPath (see Path); "" runs fn in the current namespace. If the thread
// cannot return to its original namespace, it is left locked so that the Go
// runtime discards it instead of reusing it in the wrong namespace.
func Do(nameOrPath string, fn func() error) error {
	p := Path(nameOrPath)
	if p == "" {
		return fn()
	}
	target, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("netns: open %s: %w", p, err)
	}
	defer unix.Close(target)
	return DoFD(target, fn)
}

// DoFD is Do with a namespace descriptor.
func DoFD(nsfd int, fn func() error) error {
	errc := make(chan error, 1)
	// A fresh goroutine whose thread is discarded on failure keeps the
	// caller's own thread (which may already be locked) untouched.
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: open current namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: setns: %w", os.NewSyscallError("setns", err))
			return
		}
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it dies with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("netns: return to original namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Create makes a new, empty network namespace bind-mounted at RunDir/name, as
// `ip netns add name` does, with its loopback up. It fails if name exists.
func Create(name string) error {
	if name == "" || filepath.Base(name) != name {
		return fmt.Errorf("netns: invalid namespace name %q", name)
	}
	if err := os.MkdirAll(RunDir, 0o755); err != nil {
		return fmt.Errorf("netns: %w", err)
	}
	// RunDir must be a shared mount point so that the bind mounts below
	// propagate to other mount namespaces, as iproute2 arranges.
	_ = ensureSharedRunDir()
	path := filepath.Join(RunDir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("netns: create %s: %w", path, err)
	}
	f.Close()
	err = inNew(func() error {
		if err := unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, ""); err != nil {
			return os.NewSyscallError("mount", err)
		}
		return setLoopbackUp()
	})
	if err != nil {
		_ = Delete(name)
		return fmt.Errorf("netns: create %s: %w", name, err)
	}
	return nil
}

// NewAnonymous creates a new, empty network namespace and returns a
// descriptor of it, which is then the only thing holding it: closing the
// descriptor (or the process dying) destroys it with every device in it.
// Nothing is bind-mounted, so nothing can outlive the process. Work inside
// it goes through DoFD.
func NewAnonymous() (int, error) {
	fd := -1
	err := inNew(func() error {
		var err error
		fd, err = unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			fd = -1
			return fmt.Errorf("open the new namespace: %w", err)
		}
		return nil
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return -1, fmt.Errorf("netns: create an anonymous namespace: %w", err)
	}
	return fd, nil
}

// inNew runs fn on a locked thread that has unshared into a new network
// namespace, then returns the thread to its own namespace before unlocking
// it. Ending the goroutine still locked would not do: the Go runtime
// terminates such a thread, except the main thread, which it parks forever
// instead (runtime.mexit), and a main thread parked in the namespace would
// hold it for the life of the process. Only if the return fails is the
// thread left locked, to die with the goroutine.
func inNew(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open current namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- os.NewSyscallError("unshare CLONE_NEWNET", err)
			return
		}
		err = fn()
		if serr := unix.Setns(orig, unix.CLONE_NEWNET); serr != nil {
			errc <- errors.Join(err, fmt.Errorf("return to the original namespace: %w", os.NewSyscallError("setns", serr)))
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// Delete unmounts and removes the named namespace. The namespace itself goes
// away once no process or descriptor holds it. Deleting a name that does not
// exist is not an error.
func Delete(name string) error {
	path := filepath.Join(RunDir, name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("netns: unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("netns: %w", err)
	}
	return nil
}

// Exists reports whether a named namespace is present.
func Exists(name string) bool {
	_, err := os.Stat(filepath.Join(RunDir, name))
	return err == nil
}

func ensureSharedRunDir() error {
	// Make RunDir a mount point of its own, then shared, as `ip netns add`
	// does the first time. Errors mean it is already set up.
	if err := unix.Mount("", RunDir, "none", unix.MS_SHARED|unix.MS_REC, ""); err == nil {
		return nil
	}
	if err := unix.Mount(RunDir, RunDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	return unix.Mount("", RunDir, "none", unix.MS_SHARED|unix.MS_REC, "")
}

// setLoopbackUp brings lo up in the calling thread's namespace.
func setLoopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return os.NewSyscallError("ioctl SIOCGIFFLAGS", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return os.NewSyscallError("ioctl SIOCSIFFLAGS", err)
	}
	return nil
}
