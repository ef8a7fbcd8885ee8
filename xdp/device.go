package xdp

import (
	"log/slog"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/sluicenet/sluice/dataplane"
)

// Device names the queues of one network device to open AF_XDP sockets on.
type Device struct {
	// Netns is the device's network namespace, a name under /var/run/netns
	// or a path; "" is the caller's. The sockets are created and bound on
	// a thread inside it, because the kernel resolves the interface index
	// in the namespace the socket was created in (xsk_bind uses
	// sock_net(sk)).
	Netns string
	// Iface is the device's name (required).
	Iface string
	// Queues are the rx queues to bind, one socket each. Empty means every
	// rx queue the device has (its rx plus combined channels, as `ethtool
	// -l` shows them).
	Queues []int
}

// EndpointOptions configure an Endpoint. Field names and meanings follow
// fdbased.Options (and gVisor's) where the two have the same knob.
type EndpointOptions struct {
	// Sockets are the AF_XDP sockets to read and write, one channel per
	// socket. They are borrowed: the endpoint never closes them, and they
	// must stay open until Close and Wait have returned.
	Sockets *Sockets
	// MTU is the endpoint's maximum transmission unit in bytes. Zero means
	// the device's MTU, capped at what one frame holds (FrameSize - 256 -
	// 14: 1778 with 2 KiB frames).
	MTU uint32
	// Address is the endpoint's MAC address. Empty means the device's.
	Address tcpip.LinkAddress
	// ClosedFunc, if set, is called once per reader that stops because its
	// socket failed (the device went away); not when the endpoint is
	// closed.
	ClosedFunc func(tcpip.Error)
	// GSOMaxSize is the largest TCP segment the stack may hand the
	// endpoint, in bytes; zero disables GSO. The stack is told host GSO,
	// and the endpoint cuts larger segments into frames itself while
	// copying them into the UMEM (package gso), so the stack handles one
	// 64 KiB segment instead of 45.
	GSOMaxSize uint32
	// GVisorGSOEnabled is accepted for fdbased compatibility and changes
	// nothing: there is no kernel GSO behind AF_XDP, so the endpoint
	// segments in software whenever GSOMaxSize is set.
	GVisorGSOEnabled bool
	// TXChecksumOffload is refused (logged, and reported in Offloads):
	// AF_XDP completes no checksum, so frames would leave with whatever
	// the stack left in them. The endpoint completes the partial
	// checksums of GSO segments itself.
	TXChecksumOffload bool
	// RXChecksumOffload says inbound checksums need not be verified.
	// Frames out of a veth whose sender left checksums to the hardware
	// (tx-checksumming on, the default) carry partial checksums, and
	// AF_XDP passes no metadata to say so: set this for such a peer (the
	// sandbox's veth), or turn tx-checksumming off on the sending side.
	// Frames from a wire carry full checksums and need it off.
	RXChecksumOffload bool
	// GRO coalesces in-order TCP segments of a flow within each batch
	// read from an rx ring before the stack sees them (internal/stackrx,
	// as fdbased does), verifying their checksums once as it goes.
	GRO bool
	// GROFlushTimeout holds coalescing TCP flows across batches for up to
	// this long, like the kernel's gro_flush_timeout (and
	// fdbased.Options.GROFlushTimeout): more coalescing when segments
	// trickle in, at that much latency. Zero coalesces within a batch
	// only. It needs GRO.
	GROFlushTimeout time.Duration
	// InterfaceIndex is the index of the underlying device
	// (informational); zero means the Sockets' device.
	InterfaceIndex int
	// Logger receives decisions taken once; nil discards.
	Logger *slog.Logger
	// Faults configures the containment of a panic while an inbound
	// frame becomes a packet or the stack takes it (dataplane.FaultGuard),
	// as fdbased.Options.Faults does. Its Logger defaults to Logger.
	Faults dataplane.FaultOptions
}
