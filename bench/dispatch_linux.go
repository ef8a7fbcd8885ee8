package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/netns"
)

// ErrNeedRoot is returned when the benchmark runs without the privileges
// it needs to build its namespaces and open packet sockets.
var ErrNeedRoot = errors.New("needs root (CAP_NET_ADMIN, CAP_NET_RAW and CAP_SYS_ADMIN to create network namespaces and packet sockets): run it as root, for example with sudo")

const (
	// tcpSinkPort is the sink's port on the netstack (iperf3's, for
	// familiarity in captures).
	tcpSinkPort = 5201
	// tcpChunk is the size of each write of the kernel TCP sender.
	tcpChunk = 64 << 10
	// maxPPS bounds every frame loop's count at a rate no veth reaches,
	// so the count bound never cuts a real measurement short.
	maxPPS = 100e6
	// stopGrace is how long a measurement waits for its traffic
	// goroutines to notice the end before reporting an error.
	stopGrace = 10 * time.Second
	// dialTimeout bounds the kernel sender's connect to the netstack.
	dialTimeout = 5 * time.Second
)

// measurement is one cell of the dispatch scenario.
type measurement struct {
	metric   string
	mode     dataplane.Mode
	channels int
	impl     string
	window   time.Duration
	warmup   time.Duration
}

// RunDispatch runs the dispatch scenario (see the package doc) on a
// topology it creates and removes, and returns the rows measured. A
// measurement that fails is reported on Progress and in the returned error
// (joined), and the others still run; setup failures and cancellation of
// ctx end the run. The topology is removed in every case.
func RunDispatch(ctx context.Context, opts DispatchOptions) (*Report, error) {
	opts = opts.withDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("bench: dispatch %w", ErrNeedRoot)
	}
	topo, err := newTopology(topologyOptions{})
	if err != nil {
		return nil, err
	}
	defer topo.close()

	rep := &Report{}
	var errs []error
	for _, metric := range opts.Metrics {
		for _, mode := range opts.Modes {
			for _, ch := range opts.Channels {
				for _, impl := range opts.Impls {
					if err := ctx.Err(); err != nil {
						return rep, fmt.Errorf("bench: dispatch: %w", err)
					}
					m := measurement{
						metric: metric, mode: mode, channels: ch, impl: impl,
						window: opts.Duration, warmup: warmupFor(opts.Duration),
					}
					rows, err := runMeasurement(ctx, topo, m)
					if errors.Is(err, errNotMeasured) {
						fmt.Fprintf(opts.Progress, "bench: dispatch %s %s impl=%s: %v\n", metric, dispatchConfig(mode, ch), impl, err)
						continue
					}
					if err != nil {
						if ctx.Err() != nil {
							return rep, fmt.Errorf("bench: dispatch: %w", ctx.Err())
						}
						fmt.Fprintf(opts.Progress, "bench: dispatch %s %s impl=%s: %v\n", metric, dispatchConfig(mode, ch), impl, err)
						errs = append(errs, fmt.Errorf("%s %s impl=%s: %w", metric, dispatchConfig(mode, ch), impl, err))
						continue
					}
					rep.Add(rows...)
					fmt.Fprintf(opts.Progress, "bench: dispatch %s %s impl=%s: %s %s (peak rss %s MiB)\n",
						metric, dispatchConfig(mode, ch), impl, FormatValue(rows[0].Value), rows[0].Unit, FormatValue(rows[1].Value))
				}
			}
		}
	}
	return rep, errors.Join(errs...)
}

// runMeasurement runs m and returns its row and its rss_mib row.
func runMeasurement(ctx context.Context, topo *topology, m measurement) ([]Row, error) {
	if err := resetPeakRSS(); err != nil {
		return nil, err
	}
	var (
		v    float64
		unit string
		err  error
	)
	switch m.metric {
	case MetricRXPPS:
		v, err = measureRX(ctx, topo, m)
		unit = UnitFramesPerSec
	case MetricTXPPS:
		v, err = measureTX(ctx, topo, m)
		unit = UnitFramesPerSec
	case MetricTCPGbps:
		v, err = measureTCP(ctx, topo, m)
		unit = UnitGbps
	default:
		err = fmt.Errorf("bench: unknown metric %q", m.metric)
	}
	if err != nil {
		return nil, err
	}
	rss, err := peakRSSMiB()
	if err != nil {
		return nil, err
	}
	cfg := dispatchConfig(m.mode, m.channels)
	return []Row{
		{Scenario: "dispatch", Impl: m.impl, Config: cfg, Metric: m.metric, Value: v, Unit: unit},
		{Scenario: "dispatch", Impl: m.impl, Config: cfg, Metric: MetricRSSMiB, Value: rss, Unit: UnitMiB, During: m.metric},
	}, nil
}

// countingDispatcher stands in for the stack: it counts the frames the
// endpoint delivers and drops them, so rx_pps measures the endpoint alone.
type countingDispatcher struct {
	frames atomic.Uint64
}

var _ stack.NetworkDispatcher = (*countingDispatcher)(nil)

// DeliverNetworkPacket implements stack.NetworkDispatcher. The endpoint
// keeps its reference to pkt and releases it after the call.
func (d *countingDispatcher) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {
	d.frames.Add(1)
}

// DeliverLinkPacket implements stack.NetworkDispatcher; there are no packet
// sockets to feed.
func (d *countingDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// attached is an endpoint of one implementation on fresh sockets on va.
type attached struct {
	fds     []int
	ep      stack.LinkEndpoint
	release func() error // frees what ep leaks, once stopped
	stopped bool         // stop completed
}

// attach opens m.channels sockets on va and makes m.impl's endpoint on
// them, not yet attached to anything.
func attach(topo *topology, m measurement) (*attached, error) {
	if m.mode == ModeXDP {
		return attachXDP(topo, m)
	}
	fds, err := openSockets(topo.nsA, ifA, m.channels, false)
	if err != nil {
		return nil, err
	}
	ep, release, err := newEndpoint(m.impl, endpointConfig{
		fds:               fds,
		mode:              m.mode,
		mtu:               vethMTU,
		addr:              tcpip.LinkAddress(macA),
		rxChecksumOffload: true,
	})
	if err != nil {
		closeFDs(fds)
		return nil, err
	}
	return &attached{fds: fds, ep: ep, release: release}, nil
}

// stop stops the endpoint's readers and waits for them, for at most
// stopGrace: a reader stuck delivering must not hang the whole run.
func (a *attached) stop() error {
	if a.stopped {
		return nil
	}
	done := make(chan struct{})
	go func() {
		stopEndpoint(a.ep)
		close(done)
	}()
	select {
	case <-done:
		a.stopped = true
		return nil
	case <-time.After(stopGrace):
		return fmt.Errorf("bench: %T did not stop within %v", a.ep, stopGrace)
	}
}

// close stops the endpoint, then closes the sockets it borrowed. If the
// endpoint did not stop, the sockets stay open: closing them under a
// running reader (an mmap'd ring in particular) is not safe.
func (a *attached) close() error {
	if err := a.stop(); err != nil {
		return err
	}
	rerr := a.release()
	if err := closeFDs(a.fds); err != nil {
		return errors.Join(rerr, fmt.Errorf("bench: close sockets: %w", err))
	}
	return rerr
}

// measureRX is rx_pps: frames from vb delivered to a counting dispatcher.
func measureRX(ctx context.Context, topo *topology, m measurement) (_ float64, err error) {
	a, err := attach(topo, m)
	if err != nil {
		return 0, err
	}
	d := &countingDispatcher{}
	a.ep.Attach(d)
	defer func() { err = errors.Join(err, a.close()) }()

	frames := make([][]byte, numFlows)
	for i := range frames {
		frames[i] = udpFrame(macB, macA, kernelAddr, stackAddr, uint16(srcPortBase+i), discardPort)
	}
	snd, err := newFrameSender(topo.nsB, topo.ifindexB, frames)
	if err != nil {
		return 0, err
	}
	defer snd.close()

	total := m.warmup + m.window
	deadline := time.Now().Add(total)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg      sync.WaitGroup
		sendErr error
	)
	wg.Go(func() {
		_, sendErr = snd.run(sctx, deadline, uint64(total.Seconds()*maxPPS)+uint64(len(frames)))
	})
	rate, werr := window(ctx, m, d.frames.Load)
	cancel()
	if err := waitTimeout(&wg, stopGrace); err != nil {
		// The sender may still be using its socket: leave it open
		// rather than let its number be reused under it.
		snd.fd = -1
		return 0, err
	}
	if werr != nil {
		return 0, werr
	}
	if sendErr != nil {
		return 0, sendErr
	}
	return rate, nil
}

// measureTX is tx_pps: prebuilt packets written with WritePackets, counted
// as they arrive on vb.
func measureTX(ctx context.Context, topo *topology, m measurement) (_ float64, err error) {
	a, err := attach(topo, m)
	if err != nil {
		return 0, err
	}
	// Some implementations only write once attached; what comes in (the
	// kernel's ICMP port unreachables, rate limited) is just counted.
	a.ep.Attach(&countingDispatcher{})
	defer func() { err = errors.Join(err, a.close()) }()

	batches := make([][]*stack.PacketBuffer, numFlows)
	for i := range batches {
		for range txBatch {
			batches[i] = append(batches[i], udpPacket(a.ep, macA, macB, stackAddr, kernelAddr, uint16(srcPortBase+i), discardPort))
		}
	}
	defer func() {
		for _, b := range batches {
			for _, p := range b {
				p.DecRef()
			}
		}
	}()

	total := m.warmup + m.window
	deadline := time.Now().Add(total)
	maxFrames := uint64(total.Seconds()*maxPPS) + txBatch
	var written atomic.Uint64
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		writeErr error
	)
	wg.Go(func() {
		writeErr = writeLoop(wctx, a.ep, batches, deadline, maxFrames, &written)
	})
	var counterErr error
	rxB := func() uint64 {
		n, err := topo.rxPacketsB()
		if err != nil && counterErr == nil {
			counterErr = err
		}
		return n
	}
	rate, werr := window(ctx, m, rxB)
	cancel()
	if err := waitTimeout(&wg, stopGrace); err != nil {
		return 0, err
	}
	if err := errors.Join(werr, counterErr, writeErr); err != nil {
		return 0, err
	}
	if written.Load() == 0 {
		return 0, fmt.Errorf("bench: write packets: the endpoint accepted none")
	}
	return rate, nil
}

// writeLoop writes the batches round robin, one flow per WritePackets call
// as a stack's endpoint would, until the deadline, ctx or maxFrames.
// Packets are reused: per the stack.LinkWriter contract the endpoint does
// not release the caller's references, so the same buffers can go again.
func writeLoop(ctx context.Context, ep stack.LinkEndpoint, batches [][]*stack.PacketBuffer, deadline time.Time, maxFrames uint64, written *atomic.Uint64) error {
	var n uint64
	for i := 0; n < maxFrames; i++ {
		if ctx.Err() != nil || !time.Now().Before(deadline) {
			return nil
		}
		var l stack.PacketBufferList
		for _, p := range batches[i%len(batches)] {
			l.PushBack(p)
		}
		k, terr := ep.WritePackets(l)
		n += uint64(k)
		written.Add(uint64(k))
		switch terr.(type) {
		case nil, *tcpip.ErrWouldBlock, *tcpip.ErrNoBufferSpace:
			// A full socket buffer drops the rest of the batch, as it
			// would under a stack; the figure counts arrivals only.
		default:
			return fmt.Errorf("bench: write packets: %s", terr)
		}
	}
	return nil
}

// measureTCP is tcp_gbps: a kernel TCP sender in nsB to a netstack sink on
// the endpoint.
func measureTCP(ctx context.Context, topo *topology, m measurement) (_ float64, err error) {
	a, err := attach(topo, m)
	if err != nil {
		return 0, err
	}
	s, err := newSinkStack(a.ep, false)
	if err != nil {
		a.close()
		return 0, err
	}
	defer func() {
		// The readers stop before the NIC goes: gVisor's RemoveNIC
		// holds the stack's lock while it waits for them, and a reader
		// delivering a frame needs that lock (ipv4's HandlePacket calls
		// FindNICNameFromID), so removing a NIC with traffic in flight
		// can deadlock. Then the stack's goroutines, then the sockets.
		if serr := a.stop(); serr != nil {
			err = errors.Join(err, serr)
			return
		}
		s.RemoveNIC(1)
		s.Close()
		s.Wait()
		err = errors.Join(err, a.close())
	}()

	ln, err := gonet.ListenTCP(s, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(stackAddr.As4()), Port: tcpSinkPort}, ipv4.ProtocolNumber)
	if err != nil {
		return 0, fmt.Errorf("bench: listen on the netstack: %w", err)
	}
	var (
		received atomic.Uint64
		wg       sync.WaitGroup
		mu       sync.Mutex
		sinkConn net.Conn // guarded by mu
	)
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		mu.Lock()
		sinkConn = c
		mu.Unlock()
		buf := make([]byte, tcpChunk)
		for {
			n, err := c.Read(buf)
			received.Add(uint64(n))
			if err != nil {
				return
			}
		}
	})

	var conn net.Conn
	err = netns.Do(topo.nsB, func() error {
		// The socket is created on this thread, inside nsB, and keeps
		// that namespace when used from other goroutines.
		d := net.Dialer{Timeout: dialTimeout}
		var err error
		conn, err = d.DialContext(ctx, "tcp4", net.JoinHostPort(stackAddr.String(), strconv.Itoa(tcpSinkPort)))
		return err
	})
	if err != nil {
		ln.Close()
		wg.Wait()
		return 0, fmt.Errorf("bench: connect from %s to the netstack: %w", topo.nsB, err)
	}
	// The clock starts once connected: the handshake is not part of the
	// measurement.
	total := m.warmup + m.window
	deadline := time.Now().Add(total)
	var sendErr error
	wg.Go(func() {
		if err := conn.SetWriteDeadline(deadline); err != nil {
			sendErr = err
			return
		}
		chunk := make([]byte, tcpChunk)
		// Bounded by the deadline and, as a backstop, by a count no
		// link reaches: 100 Gbit/s over the whole run.
		maxChunks := int(total.Seconds()*100e9/8/tcpChunk) + 1
		for range maxChunks {
			if _, err := conn.Write(chunk); err != nil {
				if !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, net.ErrClosed) {
					sendErr = err
				}
				return
			}
		}
	})
	rate, werr := window(ctx, m, received.Load)
	// Stop both ends: the sender's socket, the listener (in case Accept
	// never returned) and the sink's read.
	conn.Close()
	ln.Close()
	mu.Lock()
	if sinkConn != nil {
		sinkConn.SetReadDeadline(time.Now())
	}
	mu.Unlock()
	if err := waitTimeout(&wg, stopGrace); err != nil {
		return 0, err
	}
	if werr != nil {
		return 0, werr
	}
	if sendErr != nil {
		return 0, fmt.Errorf("bench: tcp sender: %w", sendErr)
	}
	return rate * 8 / 1e9, nil
}

// newSinkStack builds the netstack of tcp_gbps on ep: IPv4, ARP and TCP,
// 192.0.2.1/24 on NIC 1; with withIPv6 also IPv6 and 2001:db8::1/64.
func newSinkStack(ep stack.LinkEndpoint, withIPv6 bool) (*stack.Stack, error) {
	netProtos := []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol}
	if withIPv6 {
		// ipv6.NewProtocol's zero DAD configuration makes the address
		// usable at once.
		netProtos = append(netProtos, ipv6.NewProtocol)
	}
	s := stack.New(stack.Options{
		NetworkProtocols:   netProtos,
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
	})
	// SACK and receive-buffer moderation are what runsc turns on
	// (runsc/boot/loader.go), so the figures compare with its.
	sack := tcpip.TCPSACKEnabled(true)
	if terr := s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); terr != nil {
		s.Close()
		return nil, fmt.Errorf("bench: enable SACK: %s", terr)
	}
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	if terr := s.SetTransportProtocolOption(tcp.ProtocolNumber, &moderate); terr != nil {
		s.Close()
		return nil, fmt.Errorf("bench: enable receive buffer moderation: %s", terr)
	}
	if terr := s.CreateNIC(1, ep); terr != nil {
		s.Close()
		return nil, fmt.Errorf("bench: create NIC: %s", terr)
	}
	addr := tcpip.AddrFrom4(stackAddr.As4())
	pa := tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: addr, PrefixLen: prefixLen},
	}
	if terr := s.AddProtocolAddress(1, pa, stack.AddressProperties{}); terr != nil {
		s.RemoveNIC(1)
		s.Close()
		return nil, fmt.Errorf("bench: add %s: %s", stackAddr, terr)
	}
	routes := []tcpip.Route{{Destination: pa.AddressWithPrefix.Subnet(), NIC: 1}}
	if withIPv6 {
		pa6 := tcpip.ProtocolAddress{
			Protocol:          ipv6.ProtocolNumber,
			AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFrom16(stackAddr6.As16()), PrefixLen: prefixLen6},
		}
		if terr := s.AddProtocolAddress(1, pa6, stack.AddressProperties{}); terr != nil {
			s.RemoveNIC(1)
			s.Close()
			return nil, fmt.Errorf("bench: add %s: %s", stackAddr6, terr)
		}
		routes = append(routes, tcpip.Route{Destination: pa6.AddressWithPrefix.Subnet(), NIC: 1})
	}
	s.SetRouteTable(routes)
	return s, nil
}

// window waits out the warm-up, samples count, waits out the window and
// samples again, and returns the rate per second over the window.
func window(ctx context.Context, m measurement, count func() uint64) (float64, error) {
	d, elapsed, err := sampleWindow(ctx, m.warmup, m.window, count)
	if err != nil {
		return 0, err
	}
	return float64(d[0]) / elapsed.Seconds(), nil
}

// sampleWindow waits out warmup, samples every counter, waits out win and
// samples them again, and returns how much each grew and the time that
// passed between the two samples. The first counter is sampled last at the
// start and first at the end, so the time measured covers it best.
func sampleWindow(ctx context.Context, warmup, win time.Duration, counters ...func() uint64) ([]uint64, time.Duration, error) {
	if err := sleepCtx(ctx, warmup); err != nil {
		return nil, 0, err
	}
	c0 := make([]uint64, len(counters))
	for i := len(counters) - 1; i >= 0; i-- {
		c0[i] = counters[i]()
	}
	t0 := time.Now()
	if err := sleepCtx(ctx, win); err != nil {
		return nil, 0, err
	}
	t1 := time.Now()
	d := make([]uint64, len(counters))
	for i, c := range counters {
		c1 := c()
		if c1 < c0[i] {
			return nil, 0, fmt.Errorf("bench: counter went backwards (%d -> %d)", c0[i], c1)
		}
		d[i] = c1 - c0[i]
	}
	return d, t1.Sub(t0), nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitTimeout waits for wg, or reports the goroutines that did not stop.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) error {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-time.After(d):
		return fmt.Errorf("bench: traffic goroutines still running %v after the end of the window", d)
	}
}
