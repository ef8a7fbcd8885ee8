package bench

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// needNamespaces returns why the scenarios that build namespaces, veths
// and packet sockets cannot run here, or "" when they can.
func needNamespaces() string {
	if os.Geteuid() != 0 {
		return ErrNeedRoot.Error()
	}
	return ""
}

// afXDPSkip returns why the xdp dispatch mode cannot run here, or "": it
// opens and closes an AF_XDP socket, which fails with EAFNOSUPPORT on a
// kernel built without CONFIG_XDP_SOCKETS (AF_XDP is in Linux from 4.18).
func afXDPSkip() string {
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.EAFNOSUPPORT):
		return "no AF_XDP: the kernel is built without CONFIG_XDP_SOCKETS (Linux 4.18 or later with it is needed)"
	case err != nil:
		return "AF_XDP socket: " + os.NewSyscallError("socket", err).Error()
	}
	unix.Close(fd)
	return ""
}
