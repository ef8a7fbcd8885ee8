//go:build !linux

package sandbox

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"runtime"

	"github.com/sluicenet/sluice/dataplane"
)

var errNotLinux = fmt.Errorf("sandbox: %w on %s: network namespaces and packet sockets are Linux's", dataplane.ErrNotSupported, runtime.GOOS)

// HostFactSource reads host facts from the running kernel (Linux only).
type HostFactSource struct{}

var _ FactSource = HostFactSource{}

// Routes implements FactSource.
func (HostFactSource) Routes(string) ([]HostRoute, error) { return nil, errNotLinux }

// MissingCaps implements FactSource.
func (HostFactSource) MissingCaps([]string) ([]string, error) { return nil, errNotLinux }

// PacketRing implements FactSource.
func (HostFactSource) PacketRing() bool { return false }

// Sandbox is a running command with its network (Linux only).
type Sandbox struct{}

// Start fails: sandboxes need Linux.
func Start(context.Context, Options) (*Sandbox, error) { return nil, errNotLinux }

// Pid returns 0.
func (*Sandbox) Pid() int { return 0 }

// Signal fails.
func (*Sandbox) Signal(os.Signal) error { return errNotLinux }

// Done returns a closed channel.
func (*Sandbox) Done() <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// Wait fails.
func (*Sandbox) Wait() (int, error) { return 0, errNotLinux }

// Stats returns nothing.
func (*Sandbox) Stats() []LinkStats { return []LinkStats{} }

// Args returns the zero plan.
func (*Sandbox) Args() Args { return Args{} }

// DNSStats returns nil: there is no DNS service off Linux.
func (*Sandbox) DNSStats() *DNSStats { return nil }

// PolicyStats returns nil: there is no policy off Linux.
func (*Sandbox) PolicyStats() []PolicyStats { return nil }

// StackName returns nothing: there is no stack off Linux.
func (*Sandbox) StackName() string { return "" }

// StackServiceStats returns nil: there is no stack off Linux.
func (*Sandbox) StackServiceStats() map[string]uint64 { return nil }

// Close does nothing.
func (*Sandbox) Close() error { return nil }

// Gateways returns nothing.
func (*Sandbox) Gateways() []netip.Addr { return nil }

// RunInit fails: sandboxes need Linux.
func RunInit([]string) error { return errNotLinux }

// RunGuard fails: sandboxes need Linux.
func RunGuard() error { return errNotLinux }
