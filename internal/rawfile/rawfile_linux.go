//go:build linux

package rawfile

import (
	"encoding/binary"
	"os"

	"golang.org/x/sys/unix"
)

// MaxIovs is UIO_MAXIOV (include/uapi/linux/uio.h), the most iovecs one
// readv, writev or message may carry; more gives EMSGSIZE (sendmsg) or
// EINVAL (readv/writev).
const MaxIovs = 1024

// Readv reads into iovs with readv(2).
func Readv(fd int, iovs []unix.Iovec) (int, unix.Errno) {
	if len(iovs) == 0 {
		return 0, 0
	}
	// Syscall rather than RawSyscall: the descriptor is borrowed, and if its
	// owner made it blocking again the scheduler must know this thread is
	// in the kernel.
	n, _, e := unix.Syscall(unix.SYS_READV, uintptr(fd), uintptr(iovPtr(iovs)), uintptr(len(iovs)))
	return int(n), e
}

// Writev writes iovs with writev(2).
func Writev(fd int, iovs []unix.Iovec) (int, unix.Errno) {
	if len(iovs) == 0 {
		return 0, 0
	}
	n, _, e := unix.Syscall(unix.SYS_WRITEV, uintptr(fd), uintptr(iovPtr(iovs)), uintptr(len(iovs)))
	return int(n), e
}

// RecvMMsg receives up to len(msgs) messages with recvmmsg(2) and
// MSG_DONTWAIT added to flags. It returns the number of messages filled in;
// msgs[i].Len holds each message's length and msgs[i].Hdr.Flags its
// MSG_TRUNC and similar flags.
func RecvMMsg(fd int, msgs []unix.Mmsghdr, flags int) (int, unix.Errno) {
	if len(msgs) == 0 {
		return 0, 0
	}
	// MSG_DONTWAIT makes the call non-blocking whatever the descriptor's
	// mode, which is what makes RawSyscall (no scheduler hand-off) safe.
	n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(mmsgPtr(msgs)), uintptr(len(msgs)),
		uintptr(flags|unix.MSG_DONTWAIT), 0, 0)
	return int(n), e
}

// SendMMsg sends up to len(msgs) messages with sendmmsg(2) and MSG_DONTWAIT
// added to flags. It returns the number of messages sent: the kernel stops at
// the first message that fails, and reports that failure only if it is the
// first message of the call (a later call starting at that message sees it).
func SendMMsg(fd int, msgs []unix.Mmsghdr, flags int) (int, unix.Errno) {
	if len(msgs) == 0 {
		return 0, 0
	}
	n, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(mmsgPtr(msgs)), uintptr(len(msgs)),
		uintptr(flags|unix.MSG_DONTWAIT), 0, 0)
	return int(n), e
}

// WaitResult says why Wait returned.
type WaitResult int

const (
	// Ready: fd has one of the requested events, or an error or hangup
	// condition that the next read or write will report.
	Ready WaitResult = iota
	// Stopped: the stop eventfd fired.
	Stopped
	// TimedOut: the timeout passed with neither.
	TimedOut
)

// Wait blocks in poll(2) until fd has one of events (unix.POLLIN,
// unix.POLLOUT), stopFD is readable, or timeoutMs milliseconds pass (-1:
// forever). A stop takes precedence over readiness, so that a busy descriptor
// cannot keep its reader from noticing it was told to stop. EINTR is returned
// to the caller, which simply waits again.
func Wait(fd int, events int16, stopFD int, timeoutMs int) (WaitResult, unix.Errno) {
	fds := [2]unix.PollFd{
		{Fd: int32(fd), Events: events},
		{Fd: int32(stopFD), Events: unix.POLLIN},
	}
	n, e := poll(&fds, timeoutMs)
	switch {
	case e != 0:
		return Ready, e
	case fds[1].Revents != 0:
		return Stopped, 0
	case n == 0:
		return TimedOut, 0
	}
	return Ready, 0
}

// NewStopFD returns a non-blocking eventfd for use with Wait and Stop.
func NewStopFD() (int, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return -1, os.NewSyscallError("eventfd", err)
	}
	return fd, nil
}

// Stop makes stopFD readable, for good: nothing ever reads the counter back,
// so every present and future Wait on it returns Stopped.
func Stop(stopFD int) error {
	var one [8]byte
	// An eventfd counter is a host-endian uint64 (eventfd(2)).
	binary.NativeEndian.PutUint64(one[:], 1)
	for {
		_, err := unix.Write(stopFD, one[:])
		switch err {
		case nil, unix.EAGAIN: // EAGAIN: the counter is already huge, so it is readable
			return nil
		case unix.EINTR:
			continue
		}
		return os.NewSyscallError("write eventfd", err)
	}
}

// IovecFromBytes returns an iovec over b; an empty b gives an empty iovec.
func IovecFromBytes(b []byte) unix.Iovec {
	if len(b) == 0 {
		return unix.Iovec{}
	}
	iov := unix.Iovec{Base: &b[0]}
	iov.SetLen(len(b))
	return iov
}
