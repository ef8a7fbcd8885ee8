//go:build linux

package xdp

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/rawfile"
	"github.com/sluicenet/sluice/internal/stackrx"
)

func (o EndpointOptions) validate() error {
	if o.Sockets == nil || o.Sockets.Len() == 0 {
		return fmt.Errorf("xdp: EndpointOptions.Sockets: no sockets")
	}
	max := uint32(maxFrameLen(o.Sockets.opts.FrameSize) - header.EthernetMinimumSize)
	if o.MTU > max {
		return fmt.Errorf("xdp: EndpointOptions.MTU %d: a %d-byte frame holds at most a %d-byte MTU (raise Options.FrameSize to 4096)", o.MTU, o.Sockets.opts.FrameSize, max)
	}
	if o.GROFlushTimeout < 0 || (o.GROFlushTimeout > 0 && !o.GRO) {
		return fmt.Errorf("xdp: EndpointOptions.GROFlushTimeout %v: must not be negative, and needs GRO", o.GROFlushTimeout)
	}
	if o.GSOMaxSize > 1<<16 {
		return fmt.Errorf("xdp: EndpointOptions.GSOMaxSize %d: above the 65536-byte IP limit", o.GSOMaxSize)
	}
	if o.Address != "" && len(o.Address) != header.EthernetAddressSize {
		return fmt.Errorf("xdp: EndpointOptions.Address %q: not a %d-byte MAC address", o.Address, header.EthernetAddressSize)
	}
	return nil
}

// Endpoint is a gVisor stack.LinkEndpoint over AF_XDP sockets: one reader
// goroutine per socket takes frames from its rx ring, copies them into
// netstack views and delivers them to the stack through internal/stackrx
// (GRO and checksum verification, as fdbased does);
// outbound packets are copied (and, for GSO, segmented) straight into send
// chunks of the socket their flow hashes to, and the kernel is kicked once
// per batch.
type Endpoint struct {
	socks   *Sockets
	queues  []*queue
	caps    stack.LinkEndpointCapabilities
	gsoKind stack.SupportedGSO
	gsoMax  uint32
	closedF func(tcpip.Error)
	rx      *stackrx.Receiver
	report  dataplane.OffloadReport // read-only after NewEndpoint
	log     *slog.Logger

	mu   sync.RWMutex
	mtu  uint32            // guarded by mu
	addr tcpip.LinkAddress // guarded by mu

	dispatcher atomic.Pointer[dispatcherBox]
	counters   dataplane.Counters
	guard      *dataplane.FaultGuard // contains panics in delivery; counts in counters

	startOnce sync.Once
	closeOnce sync.Once
	stopFD    int
	stopping  atomic.Bool
	wg        sync.WaitGroup
}

type dispatcherBox struct{ d stack.NetworkDispatcher }

var (
	_ stack.LinkEndpoint  = (*Endpoint)(nil)
	_ stack.GSOEndpoint   = (*Endpoint)(nil)
	_ dataplane.Deliverer = (*Endpoint)(nil)
)

// queue is one socket's share of the endpoint.
type queue struct {
	ep *Endpoint
	sk *Socket

	// Receive side: the reader goroutine only.
	idx  int // the queue's index among the endpoint's, its deliverer number
	out  []dataplane.Frame
	bufs []dataplane.Buffer // backing of the frames' Data

	// Send side.
	mu     sync.Mutex
	closed bool // guarded by mu: no write may touch the rings any more
	lens   []int
	flat   []byte   // a GSO packet made contiguous; guarded by mu
	segs   [][]byte // GSO segment buffers; guarded by mu
	// reflush kicks the kernel again when it left frames in the tx ring
	// (armReflush); guarded by mu, like reflushArmed.
	reflush      *time.Timer
	reflushArmed bool
}

// NewEndpoint creates an endpoint over opts.Sockets. It takes a copy of
// opts; the sockets are borrowed.
func NewEndpoint(opts EndpointOptions) (*Endpoint, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	s := opts.Sockets
	e := &Endpoint{socks: s, closedF: opts.ClosedFunc, log: opts.Logger, addr: opts.Address, mtu: opts.MTU}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.addr == "" {
		e.addr = tcpip.LinkAddress(s.mac)
	}
	if e.mtu == 0 {
		e.mtu = uint32(min(s.mtu, maxFrameLen(s.opts.FrameSize)-header.EthernetMinimumSize))
	}
	trust := e.planOffloads(opts)
	fd, err := rawfile.NewStopFD()
	if err != nil {
		return nil, fmt.Errorf("xdp: endpoint: %w", err)
	}
	e.stopFD = fd
	faults := opts.Faults
	if faults.Logger == nil {
		faults.Logger = e.log
	}
	e.guard = dataplane.NewFaultGuard(faults, &e.counters, s.Len())
	e.rx, err = stackrx.New(stackrx.Options{
		Ethernet:         true,
		Trust:            trust,
		GRO:              opts.GRO,
		GROFlushInterval: opts.GROFlushTimeout,
		Deliverers:       s.Len(),
		Counters:         &e.counters,
		Guard:            e.guard,
	}, e.sink)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("xdp: endpoint: %w", err)
	}
	for i := 0; i < s.Len(); i++ {
		e.queues = append(e.queues, &queue{ep: e, sk: s.Socket(i), idx: i,
			out:  make([]dataplane.Frame, 0, s.opts.BatchSize),
			bufs: make([]dataplane.Buffer, 0, s.opts.BatchSize)})
	}
	e.log.Info("xdp: endpoint ready", "iface", s.Iface(), "queues", s.Len(), "mode", s.Mode(), "offloads", e.report.String())
	return e, nil
}

// planOffloads decides the endpoint's offloads, sets its capabilities and
// GSO kind, fills its report and returns who verifies inbound checksums.
func (e *Endpoint) planOffloads(opts EndpointOptions) stackrx.Trust {
	e.caps = stack.CapabilityResolutionRequired
	// Who verifies inbound checksums, as fdbased decides it: nobody with
	// RX checksum offload; with GRO, stackrx once (GRO checks TCP as it
	// coalesces); otherwise the stack. AF_XDP passes no checksum state,
	// so nothing is vouched for by the kernel.
	trust := stackrx.StackVerifies
	switch {
	case opts.RXChecksumOffload:
		trust = stackrx.TrustAll
	case opts.GRO:
		trust = stackrx.VerifyHere
	}
	if trust.AdvertiseRXChecksumOffload() {
		e.caps |= stack.CapabilityRXChecksumOffload
	}
	// There is no kernel GSO behind AF_XDP: with GSOMaxSize the stack is
	// told host GSO and hands over whole TCP segments, which the endpoint
	// cuts into frames as it copies them into the UMEM, whether or not
	// GVisorGSOEnabled (told GVisorGSOSupported, gVisor's TCP would cut
	// them itself, before the endpoint could batch them, as fdbased notes).
	if opts.GSOMaxSize != 0 {
		e.gsoMax = opts.GSOMaxSize
		e.gsoKind = stack.HostGSOSupported
	}
	st := func(name string, requested, effective bool, reason string) {
		e.report.Offloads = append(e.report.Offloads, dataplane.OffloadState{Name: name, Requested: requested, Effective: effective, Reason: reason})
	}
	e.report.Device = e.socks.Iface()
	txReason := ""
	if opts.TXChecksumOffload {
		// Copy mode builds an skb with no csum_start from the frame
		// (xsk_build_skb), and a NIC in zero-copy mode sends the bytes
		// as they are: a checksum the stack left empty stays empty.
		txReason = "AF_XDP completes no checksum: frames would leave with the stack's empty checksums"
		e.log.Warn("xdp: TXChecksumOffload refused", "reason", txReason)
	}
	st(dataplane.OffloadTxChecksum, opts.TXChecksumOffload, false, txReason)
	st(dataplane.OffloadRxChecksum, opts.RXChecksumOffload, trust != stackrx.StackVerifies, trust.String())
	swReason := ""
	if opts.GSOMaxSize > 0 {
		swReason = "segments leave fully checksummed (AF_XDP has no segmentation offload)"
	}
	st(dataplane.OffloadSoftwareGSO, opts.GSOMaxSize > 0, opts.GSOMaxSize > 0, swReason)
	groReason := ""
	if opts.GRO {
		groReason = "within each batch taken from an rx ring"
	}
	st(dataplane.OffloadGRO, opts.GRO, opts.GRO, groReason)
	return trust
}

// Attach implements stack.LinkEndpoint. The first non-nil dispatcher starts
// one reader per socket; nil (the NIC being removed) stops them without
// waiting, for the reason fdbased.Endpoint.Attach gives: the stack holds its
// lock here, and a reader delivering a packet may need it.
func (e *Endpoint) Attach(d stack.NetworkDispatcher) {
	if d == nil {
		e.dispatcher.Store(nil)
		e.Close()
		return
	}
	e.dispatcher.Store(&dispatcherBox{d})
	e.startOnce.Do(func() {
		if e.stopping.Load() {
			return
		}
		for _, q := range e.queues {
			e.wg.Add(1)
			go q.read()
		}
	})
}

// IsAttached implements stack.LinkEndpoint.
func (e *Endpoint) IsAttached() bool { return e.dispatcher.Load() != nil }

// MTU implements stack.LinkEndpoint.
func (e *Endpoint) MTU() uint32 {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.mtu
}

// SetMTU implements stack.LinkEndpoint. An MTU above what a frame holds is
// capped there.
func (e *Endpoint) SetMTU(mtu uint32) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.mtu = min(mtu, uint32(maxFrameLen(e.socks.opts.FrameSize)-header.EthernetMinimumSize))
}

// Capabilities implements stack.LinkEndpoint.
func (e *Endpoint) Capabilities() stack.LinkEndpointCapabilities { return e.caps }

// MaxHeaderLength implements stack.LinkEndpoint.
func (e *Endpoint) MaxHeaderLength() uint16 { return header.EthernetMinimumSize }

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

// Wait implements stack.LinkEndpoint: it returns once every reader has
// stopped (after Close or Attach(nil)).
func (e *Endpoint) Wait() { e.wg.Wait() }

// Close implements stack.LinkEndpoint: it stops the readers and, once any
// write in progress has finished, refuses further writes, so that the
// sockets may be closed after Wait. The sockets themselves are not closed.
func (e *Endpoint) Close() {
	e.closeOnce.Do(func() {
		e.stopping.Store(true)
		e.rx.Close()
		if err := rawfile.Stop(e.stopFD); err != nil {
			e.log.Error("xdp: stop readers", "err", err)
		}
		for _, q := range e.queues {
			q.mu.Lock()
			q.closed = true
			if q.reflush != nil {
				q.reflush.Stop()
			}
			q.mu.Unlock()
		}
		// The stop eventfd stays open: a reader may be about to poll it.
		// It is closed by the last reader to leave, or here if none ran.
		e.startOnce.Do(func() {})
		go func() {
			e.wg.Wait()
			unix.Close(e.stopFD)
		}()
	})
}

// SetOnCloseAction implements stack.LinkEndpoint.
func (*Endpoint) SetOnCloseAction(func()) {}

// ARPHardwareType implements stack.LinkEndpoint.
func (*Endpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareEther }

// AddHeader implements stack.LinkEndpoint.
func (e *Endpoint) AddHeader(pkt *stack.PacketBuffer) {
	eth := header.Ethernet(pkt.LinkHeader().Push(header.EthernetMinimumSize))
	eth.Encode(&header.EthernetFields{
		SrcAddr: pkt.EgressRoute.LocalLinkAddress,
		DstAddr: pkt.EgressRoute.RemoteLinkAddress,
		Type:    pkt.NetworkProtocolNumber,
	})
}

// ParseHeader implements stack.LinkEndpoint.
func (e *Endpoint) ParseHeader(pkt *stack.PacketBuffer) bool {
	hdr, ok := pkt.LinkHeader().Consume(header.EthernetMinimumSize)
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

// Stats returns the endpoint's counters. RxErrors includes descriptors the
// readers refused (see XDPStats for the reasons).
func (e *Endpoint) Stats() dataplane.Stats {
	st := e.counters.Snapshot()
	st.Offloads = &e.report
	for _, q := range e.queues {
		for r, n := range q.sk.BadDescs() {
			if DescError(r) != DescOK {
				st.RxErrors += n
			}
		}
	}
	return st
}

// XDPStats returns the AF_XDP counters. It reads the kernel's, so it must
// not be called after the sockets are closed.
func (e *Endpoint) XDPStats() (XDPStats, error) {
	st := XDPStats{Mode: e.socks.Mode().String(), Queues: len(e.queues)}
	for _, q := range e.queues {
		for r, n := range q.sk.BadDescs() {
			if n > 0 {
				if st.BadDescs == nil {
					st.BadDescs = map[string]uint64{}
				}
				st.BadDescs[DescError(r).String()] += n
			}
		}
		st.Kicks += q.sk.kicks.Load()
		st.KickErrors += q.sk.kickErrors.Load()
		k, err := q.sk.KernelStats()
		if err != nil {
			return st, err
		}
		st.Kernel = st.Kernel.Add(k)
	}
	if e.report.Effective(dataplane.OffloadGRO) {
		g := e.rx.GROStats()
		st.GRO = &g
	}
	return st, nil
}

// Offloads returns what the endpoint decided about each offload (shared:
// do not modify it).
func (e *Endpoint) Offloads() *dataplane.OffloadReport { return &e.report }

// Mode returns how the sockets are bound: BindCopy or BindZeroCopy.
func (e *Endpoint) Mode() BindMode { return e.socks.Mode() }

// NumQueues returns the number of sockets (channels).
func (e *Endpoint) NumQueues() int { return len(e.queues) }
