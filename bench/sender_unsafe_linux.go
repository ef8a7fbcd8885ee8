package bench

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/netns"
)

// frameSender is the traffic source of rx_pps: an AF_PACKET socket on vb
// that sends a fixed set of prebuilt frames, all of them per sendmmsg(2)
// call. AF_PACKET with PACKET_QDISC_BYPASS is the cheapest way for one
// thread to put frames on a veth: no IP or UDP layer and no qdisc.
type frameSender struct {
	fd     int
	frames [][]byte       // referenced by iovs; kept alive with the sender
	iovs   []unix.Iovec   // one per frame
	hdrs   []unix.Mmsghdr // one per frame, reused for every call
}

// newFrameSender opens the socket inside ns, bound to ifindex. Protocol 0
// means the socket receives nothing, so it costs nothing on the way in.
func newFrameSender(ns string, ifindex int, frames [][]byte) (*frameSender, error) {
	s := &frameSender{fd: -1, frames: frames}
	err := netns.Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return os.NewSyscallError("socket", err)
		}
		s.fd = fd
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifindex}); err != nil {
			return os.NewSyscallError("bind", err)
		}
		return os.NewSyscallError("setsockopt PACKET_QDISC_BYPASS", unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1))
	})
	if err != nil {
		s.close()
		return nil, fmt.Errorf("bench: open sender socket in %s: %w", ns, err)
	}
	s.iovs = make([]unix.Iovec, len(frames))
	s.hdrs = make([]unix.Mmsghdr, len(frames))
	for i, f := range frames {
		s.iovs[i].Base = &f[0]
		s.iovs[i].SetLen(len(f))
		s.hdrs[i].Hdr.Iov = &s.iovs[i]
		s.hdrs[i].Hdr.SetIovlen(1)
	}
	return s, nil
}

// run sends until the deadline passes, ctx is done, or maxFrames frames
// have gone, and returns how many the kernel accepted. Transient errors
// (a full socket buffer) are retried; any other error ends the run.
func (s *frameSender) run(ctx context.Context, deadline time.Time, maxFrames uint64) (uint64, error) {
	fd := s.fd // read once: the owner may give up on this goroutine and drop s.fd
	var sent uint64
	for sent < maxFrames {
		if ctx.Err() != nil || !time.Now().Before(deadline) {
			return sent, nil
		}
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd),
			uintptr(unsafe.Pointer(&s.hdrs[0])), uintptr(len(s.hdrs)), unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
			sent += uint64(n)
		case unix.EAGAIN, unix.ENOBUFS, unix.EINTR:
			runtime.Gosched()
		default:
			return sent, fmt.Errorf("bench: send frames: %w", os.NewSyscallError("sendmmsg", errno))
		}
	}
	return sent, nil
}

func (s *frameSender) close() {
	if s.fd >= 0 {
		unix.Close(s.fd)
		s.fd = -1
	}
}
