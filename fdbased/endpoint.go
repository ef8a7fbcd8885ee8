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
//
// # Offloads
//
// Which offloads run is decided once, in NewEndpoint, and reported by
// Offloads (and in Stats): what was requested, what is in effect and why.
//
//   - The virtio_net_hdr (PACKET_VNET_HDR, IFF_VNET_HDR) is what carries
//     every kernel offload. It is on with Options.VnetHdr or host GSO; the
//     endpoint sets or clears PACKET_VNET_HDR on its packet sockets to match,
//     and follows a TUN descriptor's IFF_VNET_HDR, which cannot change.
//   - GSO: with Options.GSOMaxSize the stack is told host GSO either way and
//     hands over whole TCP super-segments (up to 64 KiB). With host GSO each
//     goes to the kernel whole behind a GSO virtio_net_hdr; with
//     GVisorGSOEnabled (software GSO), or where the kernel's GSO failed its
//     probe, the endpoint cuts it into MSS-sized frames with package gso and
//     writes them in one sendmmsg. (Told GVisorGSOSupported, gVisor's TCP
//     would cut them itself, one WritePacket per segment, before the
//     endpoint could batch them: tcp/connect.go, sendTCPBatch.)
//   - TX checksums: a frame leaves with a partial checksum (NEEDS_CSUM, the
//     kernel or the peer completes it) only behind a virtio_net_hdr, where
//     the kernel honours the flag; without one the endpoint completes any
//     partial checksum the stack left (host-GSO TCP segments) in software,
//     and Options.TXChecksumOffload is refused (logged, and shown in
//     Offloads), because the kernel never completes a checksum for a frame
//     written without the header.
//   - RX checksums and GRO: see package internal/stackrx. gVisor's NIC
//     replaces pkt.RXChecksumValidated with the endpoint's capability on
//     every packet, so the endpoint advertises CapabilityRXChecksumOffload
//     whenever it verifies checksums itself (a virtio_net_hdr or GRO), and
//     then verifies, once, only what the kernel did not vouch for.
//   - The probe (Options.OffloadProbe, on by default): before trusting the
//     kernel, the endpoint sends one frame per offload on its device (veth
//     and TUN only) and watches what leaves (dataplane.ProbeOffloads); an
//     offload that misbehaves is turned off alone, with the reason logged
//     and reported.
//
// # Shutting down
//
// Close (or Attach(nil), which the stack calls when it removes the NIC)
// stops the readers without waiting; Wait joins them. Call Close and Wait
// before the stack's own Wait: gVisor's Stack.Wait holds the stack lock
// while it waits for link endpoints (stack.go, removeNICLocked and
// NetworkLinkEndpoint.Wait under s.mu), and a reader in the middle of
// delivering a packet may need that lock (ipv6 HandlePacket takes it to name
// the NIC), so waiting there deadlocks. A GRO flush timer that is already
// running may still hand the stack a packet after Wait returns.
//
// # Queueing
//
// With Options.Qdisc FIFO, WritePackets queues packets per channel (package
// qdisc, with backpressure before it drops) and one goroutine per channel
// writes them in batches; drops count in TxDropped. With None (the default)
// WritePackets writes its packets at once, in one batch.
package fdbased

import (
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/gro"
	"github.com/sluicenet/sluice/internal/stackrx"
	"github.com/sluicenet/sluice/qdisc"
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
	// Either way the stack hands over whole super-segments; see the
	// package documentation.
	GVisorGSOEnabled bool
	// PacketDispatchMode is the inbound dispatch mechanism; it falls back,
	// with a logged reason, when it does not fit a descriptor.
	PacketDispatchMode dataplane.Mode
	// TXChecksumOffload says the stack may leave outbound TCP and UDP
	// checksums to the kernel. It needs a virtio_net_hdr (VnetHdr or host
	// GSO); without one it is turned off, with the reason logged.
	TXChecksumOffload bool
	// RXChecksumOffload says inbound checksums need not be verified by
	// anyone (the frames come from a veth on this host).
	RXChecksumOffload bool
	// MaxSyscallHeaderBytes, if non-zero, bounds the bytes of mmsghdr and
	// iovec structures passed to one system call.
	MaxSyscallHeaderBytes int
	// InterfaceIndex is the index of the underlying device (informational).
	InterfaceIndex int
	// GRO enables generic receive offload before the stack: in-order TCP
	// segments of a flow are coalesced, per delivering goroutine, into
	// segments of up to 64 KiB (package gro).
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
	// sets PACKET_VNET_HDR on its sockets. Set with software GSO, the
	// endpoint's segments leave with partial checksums (NEEDS_CSUM) for
	// the kernel to complete; set alone, it carries TX checksum offload
	// and the kernel's inbound checksum flags. The endpoint sets or clears
	// PACKET_VNET_HDR on its packet sockets to match; a TUN descriptor's
	// IFF_VNET_HDR must match (it cannot change once attached).
	VnetHdr bool
	// RingBlockSize and RingBlocks size the PACKET_RX_RING in mmap mode;
	// zero means the dataplane defaults.
	RingBlockSize, RingBlocks int
	// Logger receives fallback decisions; nil discards.
	Logger *slog.Logger

	// GROFlushTimeout holds coalescing TCP flows across reads for up to
	// this long, like the kernel's gro_flush_timeout: more coalescing
	// when segments trickle in, at that much latency. Zero coalesces
	// within each batch of frames read only. Ignored without GRO.
	GROFlushTimeout time.Duration
	// Qdisc is the queueing discipline in front of the writes: None (the
	// default) writes in WritePackets; FIFO queues per channel and writes
	// from one goroutine per channel.
	Qdisc qdisc.Kind
	// QdiscQueueLen is each FIFO queue's capacity in packets (default
	// qdisc.DefaultQueueLen); QdiscMaxWait how long a packet waits for
	// room before it is dropped (default qdisc.DefaultMaxWait; negative
	// drops at once, as gVisor's fifo does).
	QdiscQueueLen int
	QdiscMaxWait  time.Duration
	// OffloadProbe says whether NewEndpoint checks, on the device, that
	// the kernel handles each requested offload correctly before using
	// it. The default (ProbeAuto) does, on veth and TUN devices.
	OffloadProbe ProbeMode
	// ProbeTimeout bounds the probe's wait for a frame that does not
	// show up; zero means dataplane.DefaultProbeTimeout.
	ProbeTimeout time.Duration

	// Faults configures the containment of a panic while an inbound
	// frame becomes a packet or the stack takes it (dataplane.FaultGuard):
	// the frame is dropped, counted in Stats.Faults and logged, and with
	// Faults.CorpusDir written as a seed of FuzzEndpointFrame. Its Logger
	// defaults to Logger.
	Faults dataplane.FaultOptions

	// probeFault is passed to dataplane.ProbeOptions.Fault: tests use it
	// to simulate a kernel that mishandles offloaded frames.
	probeFault func(dataplane.ProbeTest, []dataplane.ProbeObservation) []dataplane.ProbeObservation
	// sinkFault, if set, sees every packet before the stack does: tests
	// use it to simulate a netstack that panics on a frame.
	sinkFault func(*stack.PacketBuffer)
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
	if o.GROFlushTimeout < 0 {
		return fmt.Errorf("fdbased: Options.GROFlushTimeout %v: must not be negative", o.GROFlushTimeout)
	}
	switch o.Qdisc {
	case qdisc.None, qdisc.FIFO:
	default:
		return fmt.Errorf("fdbased: Options.Qdisc %v: want none or fifo", o.Qdisc)
	}
	if o.QdiscQueueLen < 0 {
		return fmt.Errorf("fdbased: Options.QdiscQueueLen %d: must not be negative", o.QdiscQueueLen)
	}
	switch o.OffloadProbe {
	case ProbeAuto, ProbeOff:
	default:
		return fmt.Errorf("fdbased: Options.OffloadProbe %v: want ProbeAuto or ProbeOff", o.OffloadProbe)
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
	// sinkFault is Options.sinkFault.
	sinkFault func(*stack.PacketBuffer)
	plan      offloadPlan // read-only after NewEndpoint
	report    *dataplane.OffloadReport
	rx        *stackrx.Receiver
	qd        *qdisc.Qdisc[*stack.PacketBuffer] // nil with Options.Qdisc None
	log       *slog.Logger
	// badLogged is the Unix second an outbound packet was last refused
	// in the log (logBadPacket).
	badLogged atomic.Int64

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
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Endpoint{mtu: opts.MTU, addr: opts.Address, closedF: opts.ClosedFunc, log: log, sinkFault: opts.sinkFault}
	if opts.EthernetHeader {
		e.hdrSize = header.EthernetMinimumSize
		e.caps |= stack.CapabilityResolutionRequired
	}
	plan, err := planOffloads(&opts, log)
	if err != nil {
		return nil, err
	}
	e.plan = plan
	e.report = &e.plan.report
	if plan.trust.AdvertiseRXChecksumOffload() {
		e.caps |= stack.CapabilityRXChecksumOffload
	}
	if plan.txCsumCap {
		e.caps |= stack.CapabilityTXChecksumOffload
	}
	e.gsoKind, e.gsoMax = plan.stackGSO, plan.gsoMax
	e.vnetHdr = plan.vnet

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
	lo := dataplane.LinkOptions{
		FDs:                  append([]int(nil), opts.FDs...),
		Mode:                 opts.PacketDispatchMode,
		EthernetHeader:       opts.EthernetHeader,
		VnetHdr:              e.vnetHdr,
		RecvBatchSize:        opts.RecvBatchSize,
		SendBatchSize:        sendBatch,
		RingBlockSize:        opts.RingBlockSize,
		RingBlocks:           opts.RingBlocks,
		ProcessorsPerChannel: ppc,
		Allocator:            stackrx.ViewAllocator{},
		Logger:               opts.Logger,
		Faults:               opts.Faults,
		Closed:               e.channelClosed,
	}
	if opts.GRO {
		lo.BufferShape = groBufferShape(int(opts.MTU) + e.hdrSize)
	}
	link, err := dataplane.New(lo, e)
	if err != nil {
		return nil, fmt.Errorf("fdbased: %w", err)
	}
	e.link = link
	e.rx, err = stackrx.New(stackrx.Options{
		Ethernet:         opts.EthernetHeader,
		Trust:            plan.trust,
		GRO:              plan.gro,
		GROFlushInterval: opts.GROFlushTimeout,
		Deliverers:       link.NumDeliverers(),
		Counters:         link.Counters(),
		Guard:            link.Faults(),
	}, e.sink)
	if err != nil {
		link.Close()
		return nil, fmt.Errorf("fdbased: %w", err)
	}
	if opts.Qdisc == qdisc.FIFO {
		e.qd, err = qdisc.New(qdisc.BatchWriterFunc[*stack.PacketBuffer](e.writeList), qdisc.Options[*stack.PacketBuffer]{
			Kind:     qdisc.FIFO,
			Queues:   link.NumChannels(),
			QueueLen: opts.QdiscQueueLen,
			MaxWait:  opts.QdiscMaxWait,
			Release:  (*stack.PacketBuffer).DecRef,
		})
		if err != nil {
			link.Close()
			e.rx.Close()
			return nil, fmt.Errorf("fdbased: %w", err)
		}
	}
	e.batches.New = func() any { return new(txBatch) }
	modes := make([]string, link.NumChannels())
	for i := range modes {
		modes[i] = link.Mode(i).String()
	}
	log.Info("fdbased: endpoint ready",
		"channels", link.NumChannels(), "dispatch", strings.Join(modes, ","), "requested", opts.PacketDispatchMode.String(),
		"device", e.report.Device, "offloads", e.report.String())
	return e, nil
}

// groBufferShape is the receive buffer chain with GRO: a first buffer that
// holds a whole MTU-sized frame (GRO needs a frame's bytes contiguous, and a
// frame spread over the reference's 128-, 256-... byte buffers would have to
// be copied first), then the reference's larger sizes for super-frames,
// adding up to at least the reference's total, which holds a 64 KiB IP
// packet behind its headers.
func groBufferShape(frame int) []int {
	first := 2048
	for first < frame {
		first *= 2
	}
	total := 0
	for _, s := range dataplane.DefaultBufferShape {
		total += s
	}
	shape := []int{first}
	sum := first
	for _, s := range dataplane.DefaultBufferShape {
		if s > first && sum < total {
			shape = append(shape, s)
			sum += s
		}
	}
	if sum < total {
		shape = append(shape, total-sum)
	}
	return shape
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

// Deliver implements dataplane.Deliverer: the frames become packet buffers,
// through GRO when it is on, for the attached stack.
func (e *Endpoint) Deliver(frames []dataplane.Frame) {
	if e.dispatcher.Load() == nil {
		for i := range frames {
			for _, b := range frames[i].Data {
				stackrx.ViewAllocator{}.Free(b)
			}
		}
		e.link.Counters().RxDropped.Add(uint64(len(frames)))
		return
	}
	e.rx.Deliver(frames)
}

// sink hands one packet to the attached stack (stackrx.Sink).
func (e *Endpoint) sink(pkt *stack.PacketBuffer) {
	box := e.dispatcher.Load()
	if box == nil {
		e.link.Counters().RxDropped.Add(1)
		return
	}
	e.mu.RLock()
	addr := e.addr
	e.mu.RUnlock()
	proto, ok := e.parseInbound(pkt, addr)
	if !ok {
		return
	}
	if e.sinkFault != nil {
		e.sinkFault(pkt)
	}
	box.d.DeliverNetworkPacket(proto, pkt)
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

// Close implements stack.LinkEndpoint: it stops the readers, and the qdisc's
// writers (packets still queued are released unwritten). The descriptors are
// not closed.
func (e *Endpoint) Close() {
	e.closeOnce.Do(func() {
		e.link.Close()
		if e.qd != nil {
			e.qd.Close()
		}
		// GRO's flush timers may still hand a held flow to the stack
		// until this returns; the readers are stopped by Wait.
		e.rx.Close()
	})
}

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

// Stats returns the endpoint's counters, with its offload decisions in
// Stats.Offloads (shared: do not modify it).
func (e *Endpoint) Stats() dataplane.Stats {
	st := e.link.Stats()
	st.Offloads = e.report
	return st
}

// Offloads returns what the endpoint decided about each offload, requested
// or not, and why: a copy the caller may keep.
func (e *Endpoint) Offloads() *dataplane.OffloadReport { return e.report.Clone() }

// GROStats returns the GRO counters summed over the delivering goroutines;
// zero without GRO.
func (e *Endpoint) GROStats() gro.Stats { return e.rx.GROStats() }

// QdiscStats returns the FIFO qdisc's counters; zero without one.
func (e *Endpoint) QdiscStats() qdisc.Stats {
	if e.qd == nil {
		return qdisc.Stats{}
	}
	return e.qd.Stats()
}

// Modes returns the dispatch mode each channel actually uses.
func (e *Endpoint) Modes() []dataplane.Mode {
	m := make([]dataplane.Mode, e.link.NumChannels())
	for i := range m {
		m[i] = e.link.Mode(i)
	}
	return m
}
