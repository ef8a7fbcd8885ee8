package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/sluicenet/sluice/fdbased"
	"github.com/sluicenet/sluice/internal/netns"
)

// gsoMaxSize is the GSOMaxSize of the GSO configurations: a veth's
// gso_max_size, which runsc reads from the device, and gVisor's limit for
// software GSO (stack.GVisorGSOMaxSize).
const gsoMaxSize = 1 << 16

// RunTCP runs the tcp scenario (see the package doc) on a topology it
// creates and removes, and returns the rows measured. A measurement that
// fails, a corrupted stream included, is reported on Progress and in the
// returned error (joined), and the others still run; setup failures and
// cancellation of ctx end the run. The topology is removed in every case.
func RunTCP(ctx context.Context, opts TCPOptions) (_ *Report, err error) {
	opts = opts.withDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("bench: tcp %w", ErrNeedRoot)
	}
	topo, err := newTopology(topologyOptions{ipv6: true})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, topo.close()) }()

	rep := &Report{}
	var errs []error
	peerTSO := true // a new veth's default
	pat := newStreamPattern()
	for _, cfg := range opts.Configs() {
		if cfg.PeerTSO != peerTSO {
			if err := setSegmentationOffload(topo.nsB, ifB, cfg.PeerTSO); err != nil {
				return rep, errors.Join(append(errs, err)...)
			}
			peerTSO = cfg.PeerTSO
		}
		for _, impl := range opts.Impls {
			if err := ctx.Err(); err != nil {
				return rep, fmt.Errorf("bench: tcp: %w", err)
			}
			var onSample func(time.Duration, float64)
			if opts.OnSample != nil {
				onSample = func(at time.Duration, gbps float64) {
					opts.OnSample(TCPSample{Impl: impl, Config: cfg, At: at, Gbps: gbps})
				}
			}
			rows, err := runTCPMeasurement(ctx, topo, pat, cfg, impl, opts.Duration, onSample)
			if errors.Is(err, errNotMeasured) {
				// Left out on purpose, as in the dispatch scenario:
				// the reason goes to Progress, not to the error.
				fmt.Fprintf(opts.Progress, "bench: tcp %s impl=%s: %v\n", cfg, impl, err)
				continue
			}
			if err != nil {
				if ctx.Err() != nil {
					return rep, fmt.Errorf("bench: tcp: %w", ctx.Err())
				}
				fmt.Fprintf(opts.Progress, "bench: tcp %s impl=%s: %v\n", cfg, impl, err)
				errs = append(errs, fmt.Errorf("tcp %s impl=%s: %w", cfg, impl, err))
				continue
			}
			rep.Add(rows...)
			fmt.Fprintf(opts.Progress, "bench: tcp %s impl=%s: %s Gbit/s (%s retransmitted segments, peak rss %s MiB)\n",
				cfg, impl, FormatValue(rows[0].Value), FormatCount(rows[2].Value), FormatValue(rows[1].Value))
		}
	}
	return rep, errors.Join(errs...)
}

// runTCPMeasurement measures cfg for impl and returns its tcp_gbps row and
// the rss_mib and retrans rows taken during it.
func runTCPMeasurement(ctx context.Context, topo *topology, pat *streamPattern, cfg TCPConfig, impl string, win time.Duration, onSample func(time.Duration, float64)) ([]Row, error) {
	if err := resetPeakRSS(); err != nil {
		return nil, err
	}
	gbps, retrans, err := measureTCPFlows(ctx, topo, pat, cfg, impl, warmupFor(win), win, onSample)
	if err != nil {
		return nil, err
	}
	rss, err := peakRSSMiB()
	if err != nil {
		return nil, err
	}
	c := cfg.String()
	return []Row{
		{Scenario: ScenarioTCP, Impl: impl, Config: c, Metric: MetricTCPGbps, Value: gbps, Unit: UnitGbps},
		{Scenario: ScenarioTCP, Impl: impl, Config: c, Metric: MetricRSSMiB, Value: rss, Unit: UnitMiB, During: MetricTCPGbps},
		{Scenario: ScenarioTCP, Impl: impl, Config: c, Metric: MetricRetrans, Value: float64(retrans), Unit: UnitSegments, During: MetricTCPGbps},
	}, nil
}

// attachTCP makes impl's endpoint for cfg on va: over one AF_PACKET socket
// in cfg.Mode, or, for ModeXDP, the endpoint of newXDPEndpoint on one
// channel. Host GSO has no xdp figures: AF_XDP carries no virtio-net
// header, so no frame can leave for the kernel to segment (sluice's xdp
// endpoint would segment in software, which is the software row).
func attachTCP(topo *topology, cfg TCPConfig, impl string) (*attached, error) {
	if cfg.Mode == ModeXDP {
		if cfg.GSO == GSOHost {
			return nil, fmt.Errorf("host GSO needs a virtio-net header on each frame, which AF_XDP cannot carry: %w", errNotMeasured)
		}
		xc := xdpConfig{channels: 1, gro: cfg.GRO}
		if cfg.GSO == GSOSoftware {
			xc.gsoMaxSize = gsoMaxSize
		}
		return newXDPEndpoint(topo, impl, xc)
	}
	fds, err := openSockets(topo.nsA, ifA, 1, cfg.GSO == GSOHost)
	if err != nil {
		return nil, err
	}
	ec := endpointConfig{
		fds:               fds,
		mode:              cfg.Mode,
		mtu:               vethMTU,
		addr:              tcpip.LinkAddress(macA),
		rxChecksumOffload: true,
		gro:               cfg.GRO,
	}
	if cfg.GSO != GSONone {
		ec.gsoMaxSize = gsoMaxSize
		ec.softwareGSO = cfg.GSO == GSOSoftware
	}
	ep, release, err := newEndpoint(impl, ec)
	if err != nil {
		closeFDs(fds)
		return nil, err
	}
	a := &attached{fds: fds, ep: ep, release: release}
	if e, ok := ep.(*fdbased.Endpoint); ok {
		// A figure must be of the mode its row names.
		for _, m := range e.Modes() {
			if m != cfg.Mode {
				return nil, errors.Join(fmt.Errorf("bench: sluice's endpoint fell back from %v to %v", cfg.Mode, m), a.close())
			}
		}
	}
	return a, nil
}

// tcpAddrs are the addresses of one IP version, as both sides name them.
type tcpAddrs struct {
	network     string // "tcp4" or "tcp6", for the kernel side
	proto       tcpip.NetworkProtocolNumber
	stack, peer netip.Addr
}

func addrsFor(cfg TCPConfig) tcpAddrs {
	if cfg.IPv6 {
		return tcpAddrs{"tcp6", ipv6.ProtocolNumber, stackAddr6, kernelAddr6}
	}
	return tcpAddrs{"tcp4", ipv4.ProtocolNumber, stackAddr, kernelAddr}
}

// stackFull and peerPort name the netstack's and the kernel's end of a
// flow's listening side.
func (a tcpAddrs) stackFull() tcpip.FullAddress {
	return tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(a.stack.AsSlice()), Port: tcpSinkPort}
}

func (a tcpAddrs) peerFull() tcpip.FullAddress {
	return tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(a.peer.AsSlice()), Port: tcpSinkPort}
}

// measureTCPFlows runs cfg.Flows connections between a netstack on impl's
// endpoint and the kernel in nsB for warmup+win, and returns the payload
// rate the receivers got during win in Gbit/s and the segments the senders
// retransmitted during win. Every receiver checks its stream against the
// pattern the senders write; a difference fails the measurement. onSample,
// if not nil, gets the rate of every TCPSampleInterval of the window.
func measureTCPFlows(ctx context.Context, topo *topology, pat *streamPattern, cfg TCPConfig, impl string, warmup, win time.Duration, onSample func(time.Duration, float64)) (_ float64, _ uint64, err error) {
	a, err := attachTCP(topo, cfg, impl)
	if err != nil {
		return 0, 0, err
	}
	ep := a.ep
	s, err := newSinkStack(ep, true)
	if err != nil {
		return 0, 0, errors.Join(err, a.close())
	}
	defer func() {
		// As in measureTCP: readers first (gVisor's RemoveNIC can
		// deadlock against a reader in flight), then the stack, then
		// the sockets.
		if serr := a.stop(); serr != nil {
			err = errors.Join(err, serr)
			return
		}
		s.RemoveNIC(1)
		s.Close()
		s.Wait()
		err = errors.Join(err, a.close())
	}()

	f := &tcpFlows{pat: pat}
	defer f.stop()
	var retrans func() uint64
	switch cfg.Dir {
	case Up:
		retrans, err = f.startUp(ctx, topo, s, cfg, warmup+win)
	case Down:
		retrans, err = f.startDown(ctx, topo, s, cfg, warmup+win)
	default:
		err = fmt.Errorf("bench: unknown direction %v", cfg.Dir)
	}
	if err != nil {
		f.stop()
		return 0, 0, errors.Join(err, f.wait())
	}
	if onSample != nil {
		done, sampled := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(sampled)
			sampleIntervals(done, time.Now().Add(warmup), win, f.received.Load, onSample)
		}()
		defer func() { close(done); <-sampled }()
	}
	d, elapsed, werr := sampleWindow(ctx, warmup, win, f.received.Load, retrans)
	f.stop()
	if err := errors.Join(f.wait(), f.err()); err != nil {
		return 0, 0, err
	}
	if werr != nil {
		return 0, 0, werr
	}
	if d[0] == 0 {
		return 0, 0, fmt.Errorf("bench: no data arrived during the window")
	}
	return float64(d[0]) * 8 / 1e9 / elapsed.Seconds(), d[1], nil
}

// sampleIntervals calls onSample with the rate of count, in Gbit/s from
// bytes, over each TCPSampleInterval from start until win has passed or
// done is closed. Each tick is placed from start, so that the ticks do not
// drift with scheduling delays; the rate uses the time that really passed.
func sampleIntervals(done <-chan struct{}, start time.Time, win time.Duration, count func() uint64, onSample func(time.Duration, float64)) {
	t := time.NewTimer(time.Until(start))
	defer t.Stop()
	select {
	case <-t.C:
	case <-done:
		return
	}
	c0, t0 := count(), time.Now()
	for at := TCPSampleInterval; at <= win; at += TCPSampleInterval {
		t.Reset(time.Until(start.Add(at)))
		select {
		case <-t.C:
		case <-done:
			return
		}
		c1, t1 := count(), time.Now()
		onSample(at, float64(c1-c0)*8/1e9/t1.Sub(t0).Seconds())
		c0, t0 = c1, t1
	}
}

// tcpFlows is the traffic of one tcp measurement: its connections, the
// goroutines that send and receive on them, and what they counted.
type tcpFlows struct {
	pat      *streamPattern
	received atomic.Uint64 // payload bytes the receivers got, all flows
	stopping atomic.Bool   // set by stop: errors from here on are expected
	wg       sync.WaitGroup

	mu     sync.Mutex
	conns  []net.Conn     // guarded by mu: both ends of every connection
	lns    []net.Listener // guarded by mu
	errs   []error        // guarded by mu: what went wrong before stop
	closed bool           // guarded by mu: stop has run
}

// track registers a connection or listener for stop; after stop it closes
// it at once.
func (f *tcpFlows) track(c net.Conn, ln net.Listener) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		closeConn(c)
		if ln != nil {
			ln.Close()
		}
		return
	}
	if c != nil {
		f.conns = append(f.conns, c)
	}
	if ln != nil {
		f.lns = append(f.lns, ln)
	}
}

// fail records err unless the flows are being stopped, when errors such as
// a reset connection are what stopping does.
func (f *tcpFlows) fail(err error) {
	if f.stopping.Load() {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, err)
}

func (f *tcpFlows) err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return errors.Join(f.errs...)
}

// stop ends the traffic: listeners close, and every connection's deadline
// passes and it closes, the kernel's with a reset so that no TIME_WAIT or
// FIN retransmission outlives the measurement into the next one.
func (f *tcpFlows) stop() {
	f.stopping.Store(true)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	f.closed = true
	for _, ln := range f.lns {
		ln.Close()
	}
	for _, c := range f.conns {
		closeConn(c)
	}
}

// wait waits for the traffic goroutines, for at most stopGrace.
func (f *tcpFlows) wait() error { return waitTimeout(&f.wg, stopGrace) }

// closeConn makes c's blocked reads and writes return, then closes it; a
// kernel socket is reset rather than shut down.
func closeConn(c net.Conn) {
	_ = c.SetDeadline(time.Now())
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// send writes the pattern to c in 64 KiB chunks until the deadline, stop,
// or, as a backstop, as many bytes as 100 Gbit/s would carry until the
// deadline.
func (f *tcpFlows) send(c net.Conn, deadline time.Time) {
	if err := c.SetWriteDeadline(deadline); err != nil {
		f.fail(fmt.Errorf("bench: tcp sender: %w", err))
		return
	}
	maxBytes := uint64(max(time.Until(deadline).Seconds(), 0)*100e9/8) + tcpChunk
	for off := uint64(0); off < maxBytes; {
		n, err := c.Write(f.pat.at(off, tcpChunk))
		off += uint64(n)
		if err != nil {
			if !isTimeout(err) {
				f.fail(fmt.Errorf("bench: tcp sender: %w", err))
			}
			return
		}
	}
}

// sink reads c until it fails or the deadline passes, checking every byte
// against the pattern and counting it.
func (f *tcpFlows) sink(c net.Conn, deadline time.Time) {
	if err := c.SetReadDeadline(deadline); err != nil {
		f.fail(fmt.Errorf("bench: tcp receiver: %w", err))
		return
	}
	chk := streamChecker{p: f.pat}
	buf := make([]byte, tcpChunk)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if cerr := chk.check(buf[:n]); cerr != nil {
				// Corruption is reported even while stopping.
				f.mu.Lock()
				f.errs = append(f.errs, cerr)
				f.mu.Unlock()
				return
			}
			f.received.Add(uint64(n))
		}
		if err != nil {
			if !isTimeout(err) {
				f.fail(fmt.Errorf("bench: tcp receiver: %w", err))
			}
			return
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// startUp starts the up direction: a netstack listener with a sink per
// accepted connection, cfg.Flows kernel connections from nsB to it, each
// with a sender, all until total from now. It returns the retransmission
// counter of the senders: the kernel's, summed over its sockets.
func (f *tcpFlows) startUp(ctx context.Context, topo *topology, s *stack.Stack, cfg TCPConfig, total time.Duration) (func() uint64, error) {
	ad := addrsFor(cfg)
	ln, err := gonet.ListenTCP(s, ad.stackFull(), ad.proto)
	if err != nil {
		return nil, fmt.Errorf("bench: listen on the netstack: %w", err)
	}
	f.track(nil, ln)
	// The sinks' deadline is a backstop: stop ends them before it.
	sinkDeadline := time.Now().Add(dialTimeout + total + stopGrace)
	f.wg.Go(func() {
		for range cfg.Flows {
			c, err := ln.Accept()
			if err != nil {
				f.fail(fmt.Errorf("bench: accept on the netstack: %w", err))
				return
			}
			f.track(c, nil)
			f.wg.Go(func() { f.sink(c, sinkDeadline) })
		}
	})

	var conns []*net.TCPConn
	target := netip.AddrPortFrom(ad.stack, tcpSinkPort).String()
	err = netns.Do(topo.nsB, func() error {
		// The sockets are created on this thread, inside nsB, and keep
		// that namespace when used from other goroutines.
		d := net.Dialer{Timeout: dialTimeout}
		for range cfg.Flows {
			c, err := d.DialContext(ctx, ad.network, target)
			if err != nil {
				return err
			}
			f.track(c, nil)
			conns = append(conns, c.(*net.TCPConn))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bench: connect from %s to the netstack: %w", topo.nsB, err)
	}
	// The clock starts once every flow is connected: the handshakes are
	// not part of the measurement.
	deadline := time.Now().Add(total)
	for _, c := range conns {
		f.wg.Go(func() { f.send(c, deadline) })
	}
	return func() uint64 {
		var sum uint64
		for _, c := range conns {
			r, err := kernelRetrans(c)
			if err != nil {
				f.fail(err)
			}
			sum += r
		}
		return sum
	}, nil
}

// startDown starts the down direction: a kernel listener in nsB with a
// sink per accepted connection, cfg.Flows netstack connections to it, each
// with a sender, all until total from now. It returns the retransmission
// counter of the senders: the netstack's.
func (f *tcpFlows) startDown(ctx context.Context, topo *topology, s *stack.Stack, cfg TCPConfig, total time.Duration) (func() uint64, error) {
	ad := addrsFor(cfg)
	var ln net.Listener
	err := netns.Do(topo.nsB, func() error {
		var err error
		ln, err = (&net.ListenConfig{}).Listen(ctx, ad.network, netip.AddrPortFrom(ad.peer, tcpSinkPort).String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("bench: listen in %s: %w", topo.nsB, err)
	}
	f.track(nil, ln)
	sinkDeadline := time.Now().Add(dialTimeout + total + stopGrace)
	f.wg.Go(func() {
		for range cfg.Flows {
			c, err := ln.Accept()
			if err != nil {
				f.fail(fmt.Errorf("bench: accept in %s: %w", topo.nsB, err))
				return
			}
			f.track(c, nil)
			f.wg.Go(func() { f.sink(c, sinkDeadline) })
		}
	})

	var conns []net.Conn
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	for range cfg.Flows {
		c, err := gonet.DialContextTCP(dctx, s, ad.peerFull(), ad.proto)
		if err != nil {
			return nil, fmt.Errorf("bench: connect from the netstack to %s: %w", ad.peer, err)
		}
		f.track(c, nil)
		conns = append(conns, c)
	}
	deadline := time.Now().Add(total)
	for _, c := range conns {
		f.wg.Go(func() { f.send(c, deadline) })
	}
	stats := s.Stats().TCP.Retransmits
	return stats.Value, nil
}

// kernelRetrans returns the segments the kernel retransmitted on c over its
// lifetime (TCP_INFO tcpi_total_retrans).
func kernelRetrans(c *net.TCPConn) (uint64, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("bench: tcp_info: %w", err)
	}
	var (
		info *unix.TCPInfo
		ierr error
	)
	if err := rc.Control(func(fd uintptr) {
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil {
		return 0, fmt.Errorf("bench: tcp_info: %w", err)
	}
	if ierr != nil {
		return 0, fmt.Errorf("bench: tcp_info: %w", os.NewSyscallError("getsockopt TCP_INFO", ierr))
	}
	return uint64(info.Total_retrans), nil
}
