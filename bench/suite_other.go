//go:build !linux

package bench

import "runtime"

// needNamespaces returns why the scenarios that build namespaces, veths
// and packet sockets cannot run here: they need Linux.
func needNamespaces() string {
	return "needs Linux (network namespaces, veth, AF_PACKET), not " + runtime.GOOS
}

// afXDPSkip returns why AF_XDP cannot be used here: it is Linux's.
func afXDPSkip() string { return "AF_XDP needs Linux, not " + runtime.GOOS }
