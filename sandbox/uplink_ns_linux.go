package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// The uplink opens its host sockets in --uplink-netns through one thread
// that joined that namespace at set-up (a netns.Thread), not by joining it
// per flow: setns needs CAP_SYS_ADMIN, which sluice gives up once the
// sandbox runs. The thread only creates sockets (and binds listeners);
// connecting, which may wait up to dialTimeout, happens on the flow's own
// goroutine.

// dialHost connects a host socket of the given type (SOCK_STREAM or
// SOCK_DGRAM) to dst from the uplink namespace.
func (u *uplink) dialHost(ctx context.Context, typ int, dst netip.AddrPort) (net.Conn, error) {
	if u.ns == nil {
		network := "tcp"
		if typ == unix.SOCK_DGRAM {
			network = "udp"
		}
		var d net.Dialer
		return d.DialContext(ctx, network, dst.String())
	}
	family, sa := unix.AF_INET6, unix.Sockaddr(&unix.SockaddrInet6{Port: int(dst.Port()), Addr: dst.Addr().As16()})
	if a := dst.Addr().Unmap(); a.Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(dst.Port()), Addr: a.As4()}
	}
	var fd int
	if err := u.ns.Do(func() error {
		var err error
		fd, err = unix.Socket(family, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		return os.NewSyscallError("socket", err)
	}); err != nil {
		return nil, err
	}
	// A non-blocking descriptor makes a pollable *os.File, whose
	// deadlines bound the wait for the connection.
	f := os.NewFile(uintptr(fd), "uplink")
	defer f.Close() // FileConn holds a duplicate
	if err := connectFile(ctx, f, fd, sa); err != nil {
		return nil, fmt.Errorf("dial %s: %w", dst, err)
	}
	return net.FileConn(f)
}

// connectFile connects the non-blocking socket fd (of f) to sa, waiting for
// a connection in progress until it completes or ctx ends.
func connectFile(ctx context.Context, f *os.File, fd int, sa unix.Sockaddr) error {
	err := unix.Connect(fd, sa)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINPROGRESS) {
		return os.NewSyscallError("connect", err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = f.SetWriteDeadline(dl)
	}
	// RawConn.Write forgets readiness that arrived before it was
	// called, so the first call checks for a finished handshake too
	// rather than waiting for an edge that may have passed.
	var cerr error
	werr := rc.Write(func(fd uintptr) bool {
		n, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			cerr = os.NewSyscallError("getsockopt", err)
			return true
		}
		if n != 0 {
			cerr = os.NewSyscallError("connect", unix.Errno(n))
			return true
		}
		if _, err := unix.Getpeername(int(fd)); errors.Is(err, unix.ENOTCONN) {
			return false // the handshake has not ended: wait
		}
		return true
	})
	if werr != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return werr
	}
	return cerr
}

// pingSocketsAllowed reports whether the uplink namespace lets sluice open
// unprivileged ICMP (ping) sockets for IPv4 and IPv6
// (net.ipv4.ping_group_range holds its group). Otherwise echo requests go
// through raw sockets, which need CAP_NET_RAW while the sandbox runs.
func (u *uplink) pingSocketsAllowed() bool {
	ok := true
	_ = u.inNS(func() error {
		for _, fp := range [][2]int{{unix.AF_INET, unix.IPPROTO_ICMP}, {unix.AF_INET6, unix.IPPROTO_ICMPV6}} {
			fd, err := unix.Socket(fp[0], unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, fp[1])
			if err != nil {
				ok = false
				continue
			}
			unix.Close(fd)
		}
		return nil
	})
	return ok
}
