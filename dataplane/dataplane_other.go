//go:build !linux

package dataplane

import (
	"fmt"
	"runtime"
)

// Link is Linux-only; see link_linux.go. Elsewhere New fails and the methods
// are inert.
type Link struct{}

func errOS(what string) error {
	return fmt.Errorf("dataplane: %s: %w on %s", what, ErrNotSupported, runtime.GOOS)
}

// OpenPacketSocket needs AF_PACKET, which only Linux has.
func OpenPacketSocket(o SocketOptions) (fd int, err error) {
	return -1, errOS("open packet socket")
}

// OpenPacketSockets needs AF_PACKET, which only Linux has.
func OpenPacketSockets(o SocketOptions, n int) ([]int, error) {
	return nil, errOS("open packet sockets")
}

// New fails: the dataplane's dispatchers are Linux-only.
func New(opts LinkOptions, d Deliverer) (*Link, error) { return nil, errOS("new link") }

// Start does nothing.
func (l *Link) Start() {}

// Close does nothing.
func (l *Link) Close() error { return nil }

// Wait returns at once.
func (l *Link) Wait() {}

// Stats returns zeros.
func (l *Link) Stats() Stats { return Stats{} }

// Counters returns a fresh set of counters.
func (l *Link) Counters() *Counters { return new(Counters) }

// NumDeliverers returns 0.
func (l *Link) NumDeliverers() int { return 0 }

// Faults returns nil: no frames are delivered.
func (l *Link) Faults() *FaultGuard { return nil }

// NumChannels returns 0.
func (l *Link) NumChannels() int { return 0 }

// Mode returns Mode(-1): there is no channel.
func (l *Link) Mode(i int) Mode { return Mode(-1) }

// WriteBatch fails.
func (l *Link) WriteBatch(b *TxBatch) (int, error) { return 0, errOS("write batch") }

// OpenTUN needs /dev/net/tun, which only Linux has here.
func OpenTUN(o TUNOptions) ([]int, error) { return nil, errOS("open tun") }

// TUNInfoOf fails: there are no TUN descriptors here.
func TUNInfoOf(fd int) (TUNInfo, error) { return TUNInfo{}, errOS("tun info") }

// ProbeOffloads fails: the probe needs packet sockets.
func ProbeOffloads(o ProbeOptions) (ProbeResult, error) { return ProbeResult{}, errOS("offload probe") }
