// Package fdbased is a gVisor stack.LinkEndpoint over sluice's dataplane: the
// drop-in counterpart of gVisor's pkg/tcpip/link/fdbased, with the same
// Options, reading AF_PACKET sockets or TUN descriptors with readv, recvmmsg
// or a PACKET_RX_RING.
//
// # Channels and ordering
//
// Each descriptor in Options.FDs is one channel with its own reader. Several
// AF_PACKET sockets on one device must be joined in one PACKET_FANOUT_HASH
// group (dataplane.OpenPacketSockets does that) so that the kernel keeps a
// flow on one channel: TCP is never reordered across readers. Within a
// channel, ProcessorsPerChannel goroutines deliver frames to the stack,
// steered by flow hash, so a flow stays in order there too. Outbound packets
// are spread over every channel by the packet's flow hash (the stack's
// per-endpoint hash), so a flow always leaves through the same descriptor.
//
// # Memory
//
// Frames are read straight into netstack buffer views taken from the
// netstack's own chunk pools, so a received frame is never copied on its way
// up (the PACKET_RX_RING mode copies once, out of the ring). The views are
// returned to the pools when the stack releases the packet.
package fdbased

import (
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/sluicenet/sluice/dataplane"
)

// Options configure an endpoint. Field names and meanings follow gVisor's
// fdbased.Options so that code written for one builds against the other;
// PacketDispatchMode takes a dataplane.Mode.
type Options struct {
	// FDs are the descriptors to read and write packets, one channel each.
	// They are borrowed: made non-blocking, not closed, and they must stay
	// open until Wait returns.
	FDs []int
	// MTU is the endpoint's maximum transmission unit in bytes.
	MTU uint32
	// EthernetHeader says the descriptors carry Ethernet frames (AF_PACKET
	// SOCK_RAW, TAP); false means IP packets (TUN).
	EthernetHeader bool
	// ClosedFunc, if set, is called once per channel whose reader stops
	// because the descriptor failed or reached end of file; it is not
	// called when the endpoint is closed.
	ClosedFunc func(tcpip.Error)
	// Address is the endpoint's link (MAC) address; only used with
	// EthernetHeader.
	Address tcpip.LinkAddress
	// GSOMaxSize is the largest segment the stack may hand the endpoint in
	// bytes; zero disables GSO.
	GSOMaxSize uint32
	// GVisorGSOEnabled selects software GSO (the endpoint segments) instead
	// of host GSO (the kernel segments, descriptors need a vnet header).
	GVisorGSOEnabled bool
	// PacketDispatchMode is the inbound dispatch mechanism; it falls back,
	// with a logged reason, when it does not fit a descriptor.
	PacketDispatchMode dataplane.Mode
	// TXChecksumOffload says the stack may leave outbound checksums to the
	// kernel.
	TXChecksumOffload bool
	// RXChecksumOffload says inbound checksums need not be verified.
	RXChecksumOffload bool
	// MaxSyscallHeaderBytes, if non-zero, bounds the bytes of mmsghdr and
	// iovec structures passed to one system call.
	MaxSyscallHeaderBytes int
	// InterfaceIndex is the index of the underlying device (informational).
	InterfaceIndex int
	// GRO enables generic receive offload before the stack.
	GRO bool
	// ProcessorsPerChannel is the number of goroutines per channel that
	// deliver packets to the stack. Zero means GOMAXPROCS / len(FDs), at
	// least 1, as in the reference.
	ProcessorsPerChannel int

	// RecvBatchSize and SendBatchSize override the recvmmsg (8) and
	// sendmmsg (47) batch sizes; zero means the default.
	RecvBatchSize, SendBatchSize int
	// VnetHdr says every frame on the descriptors starts with a
	// virtio_net_hdr. Zero means: set exactly when host GSO is on
	// (GSOMaxSize > 0 and !GVisorGSOEnabled), which is when the reference
	// sets PACKET_VNET_HDR on its sockets.
	VnetHdr bool
	// RingBlockSize and RingBlocks size the PACKET_RX_RING in mmap mode;
	// zero means the dataplane defaults.
	RingBlockSize, RingBlocks int
	// Logger receives fallback decisions; nil discards.
	Logger *slog.Logger
}

func (o Options) validate() error {
	if len(o.FDs) == 0 {
		return fmt.Errorf("fdbased: Options.FDs is empty: at least one descriptor is needed")
	}
	if o.MaxSyscallHeaderBytes < 0 {
		return fmt.Errorf("fdbased: Options.MaxSyscallHeaderBytes %d: must not be negative", o.MaxSyscallHeaderBytes)
	}
	if o.ProcessorsPerChannel < 0 {
		return fmt.Errorf("fdbased: Options.ProcessorsPerChannel %d: must not be negative", o.ProcessorsPerChannel)
	}
	if o.MTU == 0 {
		return fmt.Errorf("fdbased: Options.MTU is 0")
	}
	if o.GSOMaxSize > 1<<16 {
		return fmt.Errorf("fdbased: Options.GSOMaxSize %d: above the 65536-byte IP limit", o.GSOMaxSize)
	}
	if o.EthernetHeader && o.Address != "" && len(o.Address) != header.EthernetAddressSize {
		return fmt.Errorf("fdbased: Options.Address %q: not a %d-byte MAC address", o.Address, header.EthernetAddressSize)
	}
	if o.VnetHdr && o.GVisorGSOEnabled {
		return fmt.Errorf("fdbased: Options.VnetHdr with GVisorGSOEnabled: software GSO writes plain frames")
	}
	return nil
}

// sizeofMmsghdr and sizeofIovec are the amd64/arm64 sizes of struct mmsghdr
// and struct iovec, used only to honour MaxSyscallHeaderBytes.
const (
	sizeofMmsghdr = 64
	sizeofIovec   = 16
)

// Endpoint is sluice's fd-based link endpoint.
type Endpoint struct {
	link    *dataplane.Link
	caps    stack.LinkEndpointCapabilities
	hdrSize int
	vnetHdr bool
	gsoKind stack.SupportedGSO
	gsoMax  uint32
	closedF func(tcpip.Error)

	mu   sync.RWMutex
	mtu  uint32            // guarded by mu
	addr tcpip.LinkAddress // guarded by mu
	// dispatcher is the attached stack, nil when detached.
	dispatcher atomic.Pointer[dispatcherBox]
	started    bool // guarded by mu
	closeOnce  sync.Once

	batches sync.Pool // of *txBatch
}

type dispatcherBox struct{ d stack.NetworkDispatcher }

var (
	_ stack.LinkEndpoint = (*Endpoint)(nil)
	_ stack.GSOEndpoint  = (*Endpoint)(nil)
)

// New creates an endpoint over opts.FDs. It takes a copy of opts. The
// descriptors are made non-blocking but not owned: they must stay open until
// the endpoint is closed and Wait has returned.
func New(opts *Options) (stack.LinkEndpoint, error) {
	return NewEndpoint(*opts)
}

// NewEndpoint is New returning the concrete type, for callers that want
// Stats and Modes.
func NewEndpoint(opts Options) (*Endpoint, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	e := &Endpoint{mtu: opts.MTU, addr: opts.Address, closedF: opts.ClosedFunc}
	if opts.RXChecksumOffload {
		e.caps |= stack.CapabilityRXChecksumOffload
	}
	if opts.TXChecksumOffload {
		e.caps |= stack.CapabilityTXChecksumOffload
	}
	if opts.EthernetHeader {
		e.hdrSize = header.EthernetMinimumSize
		e.caps |= stack.CapabilityResolutionRequired
	}
	if opts.GSOMaxSize != 0 {
		e.gsoMax = opts.GSOMaxSize
		e.gsoKind = stack.HostGSOSupported
		if opts.GVisorGSOEnabled {
			e.gsoKind = stack.GVisorGSOSupported
		}
	}
	e.vnetHdr = opts.VnetHdr || e.gsoKind == stack.HostGSOSupported

	ppc := opts.ProcessorsPerChannel
	if ppc == 0 {
		ppc = max(1, runtime.GOMAXPROCS(0)/len(opts.FDs))
	}
	sendBatch := opts.SendBatchSize
	if opts.MaxSyscallHeaderBytes != 0 {
		// Budget one mmsghdr and a typical four iovecs per frame
		// (vnet header, link+network+transport headers, one or two
		// payload views).
		per := sizeofMmsghdr + 4*sizeofIovec
		sendBatch = max(1, opts.MaxSyscallHeaderBytes/per)
		if opts.SendBatchSize != 0 {
			sendBatch = min(sendBatch, opts.SendBatchSize)
		}
	}
	link, err := dataplane.New(dataplane.LinkOptions{
		FDs:                  append([]int(nil), opts.FDs...),
		Mode:                 opts.PacketDispatchMode,
		EthernetHeader:       opts.EthernetHeader,
		VnetHdr:              e.vnetHdr,
		RecvBatchSize:        opts.RecvBatchSize,
		SendBatchSize:        sendBatch,
		RingBlockSize:        opts.RingBlockSize,
		RingBlocks:           opts.RingBlocks,
		ProcessorsPerChannel: ppc,
		Allocator:            viewAllocator{},
		Logger:               opts.Logger,
		Closed:               e.channelClosed,
	}, e)
	if err != nil {
		return nil, fmt.Errorf("fdbased: %w", err)
	}
	e.link = link
	e.batches.New = func() any { return new(txBatch) }
	return e, nil
}

func (e *Endpoint) channelClosed(err error) {
	if e.closedF == nil {
		return
	}
	var terr tcpip.Error = &tcpip.ErrClosedForReceive{}
	if errno, ok := err.(unix.Errno); ok {
		terr = tcpip.TranslateErrno(errno)
	}
	e.closedF(terr)
}

// viewAllocator reads frames into netstack views so that delivered frames
// become packet buffers without a copy.
type viewAllocator struct{}

func (viewAllocator) Alloc(size int) dataplane.Buffer {
	v := buffer.NewViewSize(size)
	return dataplane.Buffer{Data: v.AsSlice(), Ref: v}
}

func (viewAllocator) Free(b dataplane.Buffer) {
	if v, ok := b.Ref.(*buffer.View); ok {
		v.Release()
	}
}

// Deliver implements dataplane.Deliverer: it turns frames into packet
// buffers and hands them to the attached stack.
func (e *Endpoint) Deliver(frames []dataplane.Frame) {
	box := e.dispatcher.Load()
	if box == nil {
		for i := range frames {
			for _, b := range frames[i].Data {
				viewAllocator{}.Free(b)
			}
		}
		e.link.Counters().RxDropped.Add(uint64(len(frames)))
		return
	}
	e.mu.RLock()
	addr := e.addr
	e.mu.RUnlock()
	rxValidated := e.caps&stack.CapabilityRXChecksumOffload != 0
	for i := range frames {
		f := &frames[i]
		var payload buffer.Buffer
		for _, b := range f.Data {
			v := b.Ref.(*buffer.View)
			v.CapLength(len(b.Data))
			payload.Append(v)
		}
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: payload})
		proto, ok := e.parseInbound(pkt, addr)
		if !ok {
			pkt.DecRef()
			continue
		}
		// A frame the kernel marked NEEDS_CSUM was built on this host and
		// never crossed a wire: its checksum is partial by design (the
		// veth keeps TSO super-frames unchecksummed), so verifying it
		// would reject good data. DATA_VALID means the kernel checked it.
		pkt.RXChecksumValidated = rxValidated ||
			(f.HasVnet && f.Vnet.Flags&(dataplane.VnetFlagNeedsCsum|dataplane.VnetFlagDataValid) != 0)
		box.d.DeliverNetworkPacket(proto, pkt)
		pkt.DecRef()
	}
}

// parseInbound consumes the link header and reports the network protocol,
// and whether the frame is for this endpoint (its MAC, broadcast or
// multicast).
func (e *Endpoint) parseInbound(pkt *stack.PacketBuffer, addr tcpip.LinkAddress) (tcpip.NetworkProtocolNumber, bool) {
	if e.hdrSize == 0 {
		h, ok := pkt.Data().PullUp(1)
		if !ok {
			return 0, false
		}
		switch header.IPVersion(h) {
		case header.IPv4Version:
			pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
		case header.IPv6Version:
			pkt.NetworkProtocolNumber = header.IPv6ProtocolNumber
		default:
			return 0, false
		}
		return pkt.NetworkProtocolNumber, true
	}
	hdr, ok := pkt.LinkHeader().Consume(e.hdrSize)
	if !ok {
		return 0, false
	}
	eth := header.Ethernet(hdr)
	pkt.NetworkProtocolNumber = eth.Type()
	dst := eth.DestinationAddress()
	if dst != addr && dst[0]&0x01 == 0 {
		return 0, false
	}
	return pkt.NetworkProtocolNumber, true
}

// Attach implements stack.LinkEndpoint. The first non-nil dispatcher starts
// the readers; nil (the NIC being removed) stops them without waiting: the
// stack calls Attach(nil) with its own lock held, and a reader in the middle
// of delivering a packet may need that lock, so waiting here would deadlock
// (gVisor's fdbased does, on teardown under load). The stack calls Wait later,
// outside its lock.
func (e *Endpoint) Attach(d stack.NetworkDispatcher) {
	if d == nil {
		e.dispatcher.Store(nil)
		e.Close()
		return
	}
	e.dispatcher.Store(&dispatcherBox{d})
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.started {
		e.started = true
		e.link.Start()
	}
}

// IsAttached implements stack.LinkEndpoint.
func (e *Endpoint) IsAttached() bool { return e.dispatcher.Load() != nil }

// MTU implements stack.LinkEndpoint.
func (e *Endpoint) MTU() uint32 {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.mtu
}

// SetMTU implements stack.LinkEndpoint.
func (e *Endpoint) SetMTU(mtu uint32) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.mtu = mtu
}

// Capabilities implements stack.LinkEndpoint.
func (e *Endpoint) Capabilities() stack.LinkEndpointCapabilities { return e.caps }

// MaxHeaderLength implements stack.LinkEndpoint.
func (e *Endpoint) MaxHeaderLength() uint16 { return uint16(e.hdrSize) }

// LinkAddress implements stack.LinkEndpoint.
func (e *Endpoint) LinkAddress() tcpip.LinkAddress {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.addr
}

// SetLinkAddress implements stack.LinkEndpoint.
func (e *Endpoint) SetLinkAddress(addr tcpip.LinkAddress) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.addr = addr
}

// Wait implements stack.LinkEndpoint: it returns once every reader and
// processor goroutine has stopped (after Close or Attach(nil)).
func (e *Endpoint) Wait() { e.link.Wait() }

// Close implements stack.LinkEndpoint: it stops the readers. The descriptors
// are not closed.
func (e *Endpoint) Close() { e.closeOnce.Do(func() { e.link.Close() }) }

// SetOnCloseAction implements stack.LinkEndpoint.
func (*Endpoint) SetOnCloseAction(func()) {}

// ARPHardwareType implements stack.LinkEndpoint.
func (e *Endpoint) ARPHardwareType() header.ARPHardwareType {
	if e.hdrSize > 0 {
		return header.ARPHardwareEther
	}
	return header.ARPHardwareNone
}

// AddHeader implements stack.LinkEndpoint.
func (e *Endpoint) AddHeader(pkt *stack.PacketBuffer) {
	if e.hdrSize == 0 {
		return
	}
	eth := header.Ethernet(pkt.LinkHeader().Push(header.EthernetMinimumSize))
	eth.Encode(&header.EthernetFields{
		SrcAddr: pkt.EgressRoute.LocalLinkAddress,
		DstAddr: pkt.EgressRoute.RemoteLinkAddress,
		Type:    pkt.NetworkProtocolNumber,
	})
}

// ParseHeader implements stack.LinkEndpoint.
func (e *Endpoint) ParseHeader(pkt *stack.PacketBuffer) bool {
	if e.hdrSize == 0 {
		return true
	}
	hdr, ok := pkt.LinkHeader().Consume(e.hdrSize)
	if !ok {
		return false
	}
	pkt.NetworkProtocolNumber = header.Ethernet(hdr).Type()
	return true
}

// GSOMaxSize implements stack.GSOEndpoint.
func (e *Endpoint) GSOMaxSize() uint32 { return e.gsoMax }

// SupportedGSO implements stack.GSOEndpoint.
func (e *Endpoint) SupportedGSO() stack.SupportedGSO { return e.gsoKind }

// Stats returns the endpoint's counters.
func (e *Endpoint) Stats() dataplane.Stats { return e.link.Stats() }

// Modes returns the dispatch mode each channel actually uses.
func (e *Endpoint) Modes() []dataplane.Mode {
	m := make([]dataplane.Mode, e.link.NumChannels())
	for i := range m {
		m[i] = e.link.Mode(i)
	}
	return m
}
