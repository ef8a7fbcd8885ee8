//go:build !linux

package xdp

import (
	"fmt"
	"net"
	"runtime"

	"github.com/cilium/ebpf"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/sluicenet/sluice/dataplane"
)

// AF_XDP is Linux-only. Outside Linux the types exist so that code naming
// them builds, and every constructor fails with dataplane.ErrNotSupported.

func errNotSupported(what string) error {
	return fmt.Errorf("xdp: %s: %w on %s", what, dataplane.ErrNotSupported, runtime.GOOS)
}

// Sockets are AF_XDP sockets on queues of one device (Linux only).
type Sockets struct{}

// Socket is one AF_XDP socket (Linux only).
type Socket struct {
	Fill       FillRing
	RX         RXRing
	TX         TXRing
	Completion CompletionRing
}

// Open fails: AF_XDP is Linux-only.
func Open(dev Device, opts Options) (*Sockets, error) { return nil, errNotSupported("open sockets") }

func (s *Sockets) Close() error                    { return nil }
func (s *Sockets) Register(xsks *ebpf.Map) error   { return errNotSupported("register sockets") }
func (s *Sockets) Len() int                        { return 0 }
func (s *Sockets) Socket(i int) *Socket            { return nil }
func (s *Sockets) Mode() BindMode                  { return BindAuto }
func (s *Sockets) Ifindex() int                    { return 0 }
func (s *Sockets) Iface() string                   { return "" }
func (s *Sockets) HardwareAddr() net.HardwareAddr  { return nil }
func (s *Sockets) DeviceMTU() int                  { return 0 }
func (s *Sockets) Queues() []int                   { return nil }
func (s *Sockets) Options() Options                { return Options{} }
func (sk *Socket) FD() int                         { return -1 }
func (sk *Socket) Queue() int                      { return 0 }
func (sk *Socket) ZeroCopy() bool                  { return false }
func (sk *Socket) BadDescs() [numDescErrors]uint64 { return [numDescErrors]uint64{} }
func (sk *Socket) KernelStats() (KernelStats, error) {
	return KernelStats{}, errNotSupported("kernel stats")
}
func (sk *Socket) WithFrames(max int, fn func(frames [][]byte)) int { return 0 }

// Endpoint is the AF_XDP link endpoint (Linux only).
type Endpoint struct{}

var _ stack.LinkEndpoint = (*Endpoint)(nil)

// NewEndpoint fails: AF_XDP is Linux-only.
func NewEndpoint(opts EndpointOptions) (*Endpoint, error) {
	return nil, errNotSupported("endpoint")
}

func (e *Endpoint) Attach(d stack.NetworkDispatcher)             {}
func (e *Endpoint) IsAttached() bool                             { return false }
func (e *Endpoint) MTU() uint32                                  { return 0 }
func (e *Endpoint) SetMTU(mtu uint32)                            {}
func (e *Endpoint) Capabilities() stack.LinkEndpointCapabilities { return 0 }
func (e *Endpoint) MaxHeaderLength() uint16                      { return 0 }
func (e *Endpoint) LinkAddress() tcpip.LinkAddress               { return "" }
func (e *Endpoint) SetLinkAddress(addr tcpip.LinkAddress)        {}
func (e *Endpoint) Wait()                                        {}
func (e *Endpoint) Close()                                       {}
func (*Endpoint) SetOnCloseAction(func())                        {}
func (*Endpoint) ARPHardwareType() header.ARPHardwareType        { return header.ARPHardwareEther }
func (e *Endpoint) AddHeader(pkt *stack.PacketBuffer)            {}
func (e *Endpoint) ParseHeader(pkt *stack.PacketBuffer) bool     { return false }
func (e *Endpoint) GSOMaxSize() uint32                           { return 0 }
func (e *Endpoint) SupportedGSO() stack.SupportedGSO             { return stack.GSONotSupported }
func (e *Endpoint) Stats() dataplane.Stats                       { return dataplane.Stats{} }
func (e *Endpoint) XDPStats() (XDPStats, error)                  { return XDPStats{}, errNotSupported("stats") }
func (e *Endpoint) Mode() BindMode                               { return BindAuto }
func (e *Endpoint) NumQueues() int                               { return 0 }
func (e *Endpoint) Deliver(frames []dataplane.Frame)             {}
func (e *Endpoint) WritePackets(stack.PacketBufferList) (int, tcpip.Error) {
	return 0, &tcpip.ErrNotSupported{}
}

// Link is an XDP mode set up (Linux only; the Linux type also lists the
// bpf attachments, which do not exist elsewhere).
type Link struct {
	Mode     Mode
	Endpoint *Endpoint
	Sockets  *Sockets
	Veth     string
}

func (l *Link) Close() error { return nil }

// OpenNS fails: AF_XDP is Linux-only.
func OpenNS(o NSOptions) (*Link, error) { return nil, errNotSupported("ns mode") }

// OpenRedirect fails: AF_XDP is Linux-only.
func OpenRedirect(o RedirectOptions) (*Link, error) { return nil, errNotSupported("redirect mode") }

// OpenTunnel fails: AF_XDP is Linux-only.
func OpenTunnel(o TunnelOptions) (*Link, error) { return nil, errNotSupported("tunnel mode") }
