package bench

import "os"

// needNamespaces returns why the scenarios that build namespaces, veths
// and packet sockets cannot run here, or "" when they can.
func needNamespaces() string {
	if os.Geteuid() != 0 {
		return ErrNeedRoot.Error()
	}
	return ""
}
