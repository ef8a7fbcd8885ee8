//go:build linux

package xdp

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/gro"
	"github.com/sluicenet/sluice/internal/rawfile"
)

func (o EndpointOptions) validate() error {
	if o.Sockets == nil || o.Sockets.Len() == 0 {
		return fmt.Errorf("xdp: EndpointOptions.Sockets: no sockets")
	}
	max := uint32(maxFrameLen(o.Sockets.opts.FrameSize) - header.EthernetMinimumSize)
	if o.MTU > max {
		return fmt.Errorf("xdp: EndpointOptions.MTU %d: a %d-byte frame holds at most a %d-byte MTU (raise Options.FrameSize to 4096)", o.MTU, o.Sockets.opts.FrameSize, max)
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
// netstack views (optionally through GRO) and delivers them to the stack;
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
	rxValid bool
	log     *slog.Logger

	mu   sync.RWMutex
	mtu  uint32            // guarded by mu
	addr tcpip.LinkAddress // guarded by mu

	dispatcher atomic.Pointer[dispatcherBox]
	counters   dataplane.Counters

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
	out  []dataplane.Frame
	bufs []dataplane.Buffer // backing of the frames' Data
	gro  *gro.GRO

	// Send side.
	mu     sync.Mutex
	closed bool // guarded by mu: no write may touch the rings any more
	lens   []int
	flat   []byte   // a GSO packet made contiguous; guarded by mu
	segs   [][]byte // GSO segment buffers; guarded by mu
	frames [][]byte // per-packet frame buffers; guarded by mu
}

// NewEndpoint creates an endpoint over opts.Sockets. It takes a copy of
// opts; the sockets are borrowed.
func NewEndpoint(opts EndpointOptions) (*Endpoint, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	s := opts.Sockets
	e := &Endpoint{socks: s, closedF: opts.ClosedFunc, rxValid: opts.RXChecksumOffload, log: opts.Logger, addr: opts.Address, mtu: opts.MTU}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.addr == "" {
		e.addr = tcpip.LinkAddress(s.mac)
	}
	if e.mtu == 0 {
		e.mtu = uint32(min(s.mtu, maxFrameLen(s.opts.FrameSize)-header.EthernetMinimumSize))
	}
	e.caps = stack.CapabilityResolutionRequired
	if opts.RXChecksumOffload {
		e.caps |= stack.CapabilityRXChecksumOffload
	}
	if opts.TXChecksumOffload {
		e.caps |= stack.CapabilityTXChecksumOffload
	}
	if opts.GSOMaxSize != 0 {
		e.gsoMax = opts.GSOMaxSize
		e.gsoKind = stack.HostGSOSupported
		if opts.GVisorGSOEnabled {
			e.gsoKind = stack.GVisorGSOSupported
		}
	}
	fd, err := rawfile.NewStopFD()
	if err != nil {
		return nil, fmt.Errorf("xdp: endpoint: %w", err)
	}
	e.stopFD = fd
	for i := 0; i < s.Len(); i++ {
		q := &queue{ep: e, sk: s.Socket(i),
			out:  make([]dataplane.Frame, 0, s.opts.BatchSize),
			bufs: make([]dataplane.Buffer, 0, s.opts.BatchSize)}
		if opts.GRO {
			g, err := gro.New(gro.Options{Ethernet: true})
			if err != nil {
				unix.Close(fd)
				return nil, fmt.Errorf("xdp: endpoint: %w", err)
			}
			q.gro = g
		}
		e.queues = append(e.queues, q)
	}
	return e, nil
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
		if err := rawfile.Stop(e.stopFD); err != nil {
			e.log.Error("xdp: stop readers", "err", err)
		}
		for _, q := range e.queues {
			q.mu.Lock()
			q.closed = true
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
	var groSt gro.Stats
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
		if q.gro != nil {
			g := q.gro.Stats()
			for i := range g.Frames {
				groSt.Frames[i] += g.Frames[i]
			}
			groSt.Packets += g.Packets
			groSt.Coalesced += g.Coalesced
			st.GRO = &groSt
		}
	}
	return st, nil
}

// Mode returns how the sockets are bound: BindCopy or BindZeroCopy.
func (e *Endpoint) Mode() BindMode { return e.socks.Mode() }

// NumQueues returns the number of sockets (channels).
func (e *Endpoint) NumQueues() int { return len(e.queues) }
