package sandbox

import (
	"errors"
	"fmt"
	"net"
)

// SetUpSandboxLink creates the sandbox's link as the plan says: a veth from
// the stack namespace (Args.StackLink, up, with the stack
// namespace's own IPv6 off on it) to the command's namespace
// (Args.Sandbox.Name, with its addresses, up, and default routes through the
// gateways). It returns eth0's MAC address. A stack's PreInit calls it
// unless it builds the link another way.
func (e *StackEnv) SetUpSandboxLink() (net.HardwareAddr, error) {
	a := e.Args
	// The fd-based link, or with --xdp ns the XDP link on the same veth.
	link, ok := a.StackLink()
	if !ok {
		return nil, errors.New("the plan has no stack-side link")
	}
	if err := createVeth(e.StackNS, e.CommandNS, link, a.Sandbox); err != nil {
		return nil, err
	}
	if err := configureStackSide(e.StackNS, link); err != nil {
		return nil, fmt.Errorf("stack side: %w", err)
	}
	mac, err := configureSandboxSide(e.CommandNS, a.Sandbox)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", a.Sandbox.Name, err)
	}
	return mac, nil
}
