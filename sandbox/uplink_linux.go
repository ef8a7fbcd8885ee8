package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/netns"
)

// Uplink limits and timeouts.
const (
	// tcpMaxInFlight bounds the connections the TCP forwarder holds in
	// the middle of their handshake (dialing the real destination); more
	// SYNs are dropped and retried by the sandbox, as a full backlog does.
	tcpMaxInFlight = 1024
	// dialTimeout bounds connecting to the real destination. The sandbox's
	// own connect keeps retransmitting its SYN meanwhile; past this the
	// flow is reset.
	dialTimeout = 30 * time.Second
	// udpIdleTimeout ends a UDP flow after this long without a datagram
	// either way, between Linux conntrack's 30 s (unreplied) and 120 s
	// (stream) UDP timeouts.
	udpIdleTimeout = 60 * time.Second
	// spliceBufSize is the copy buffer of each direction of a TCP flow:
	// large enough that one read drains what a 64 KiB GSO segment or a
	// few of them delivered, so the byte path costs few system calls.
	spliceBufSize = 256 << 10
	// maxPingsInFlight bounds concurrent forwarded echo requests (one host
	// socket and goroutine each).
	maxPingsInFlight = 64
	// pingTimeout is how long a forwarded echo request waits for its reply.
	pingTimeout = 5 * time.Second
	// descriptorWarnEvery spaces the warnings that the uplink is out of
	// descriptors: under a flood of new flows each refused one would
	// otherwise log a line.
	descriptorWarnEvery = 10 * time.Second
)

// uplink terminates the sandbox's flows in the netstack and re-originates
// each from a host socket in the uplink namespace.
type uplink struct {
	s   *stack.Stack
	nic tcpip.NICID // the sandbox link, where echo replies go out
	// ns is a thread in the uplink namespace (see uplink_ns_linux.go);
	// nil for sluice's own. nsErr says why it could not be started.
	ns       *netns.Thread
	nsErr    error
	nat      map[netip.Addr]netip.Addr
	gateways map[netip.Addr]bool
	subnets  []netip.Prefix
	policy   *Policy // nil allows every flow
	// names is the DNS service (its counters and what it learnt from the
	// answers); nil when the service is off. dns is where the sandbox's
	// queries to a gateway address (port 53) are forwarded; invalid when
	// there is no upstream, and the service then answers SERVFAIL itself.
	dns   netip.AddrPort
	names *nameTable
	log   *slog.Logger
	// dial re-originates flows: host sockets, or the netstack over an XDP
	// NIC (useNetstack).
	dial dialer
	// local are the netstack's own addresses on an XDP uplink NIC;
	// sandboxOnly refuses flows from sources outside the sandbox's
	// subnets (set with an XDP uplink NIC).
	local       map[netip.Addr]bool
	sandboxOnly bool
	// noUpstreamOnce logs the missing upstream once per run.
	noUpstreamOnce sync.Once

	ctx    context.Context // cancelled by close: stops dials in progress
	cancel context.CancelFunc
	pings  chan struct{} // semaphore of maxPingsInFlight
	flows  sync.WaitGroup

	mu    sync.Mutex
	conns map[io.Closer]struct{} // host sockets of live flows; guarded by mu

	// guard counts (in faults) and logs panics contained to the flow
	// goroutine that raised them (contain); nil in tests that build an
	// uplink by hand.
	guard  *dataplane.FaultGuard
	faults dataplane.Counters

	fdWarned atomic.Int64 // when outOfDescriptors last warned, in Unix ns
}

// outOfDescriptors reports whether err says this process is out of file
// descriptors (EMFILE, or ENFILE for the whole system), and if so warns, at
// most once per descriptorWarnEvery: a flow refused for that reason is
// sluice's limit, not the destination's, and the operator can raise it.
func (u *uplink) outOfDescriptors(what string, err error) bool {
	if !errors.Is(err, unix.EMFILE) && !errors.Is(err, unix.ENFILE) {
		return false
	}
	now := time.Now().UnixNano()
	last := u.fdWarned.Load()
	if now-last < int64(descriptorWarnEvery) || !u.fdWarned.CompareAndSwap(last, now) {
		return true
	}
	var lim unix.Rlimit
	_ = unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
	u.log.Warn("uplink: out of file descriptors: new flows are refused until some close; raise sluice's RLIMIT_NOFILE (ulimit -n)",
		"where", what, "limit", lim.Cur, "err", err)
	return true
}

// newUplink installs the TCP, UDP and ICMP handlers of a on s.
func newUplink(s *stack.Stack, nic tcpip.NICID, a Args, nsFD int, policy *Policy, log *slog.Logger) *uplink {
	u := &uplink{
		s:        s,
		nic:      nic,
		nat:      map[netip.Addr]netip.Addr{},
		gateways: map[netip.Addr]bool{},
		subnets:  a.Uplink.Subnets,
		policy:   policy,
		log:      log,
		pings:    make(chan struct{}, maxPingsInFlight),
		conns:    map[io.Closer]struct{}{},
		local:    map[netip.Addr]bool{},
	}
	u.dial = hostDialer{u}
	u.ctx, u.cancel = context.WithCancel(context.Background())
	u.guard = dataplane.NewFaultGuard(dataplane.FaultOptions{Logger: log}, &u.faults, 1)
	if nsFD >= 0 {
		u.ns, u.nsErr = netns.NewThread(nsFD)
	}
	for _, r := range a.NAT {
		u.nat[r.Dst] = r.To
	}
	for _, g := range a.Uplink.Gateways {
		u.gateways[g] = true
	}
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, tcp.NewForwarder(s, 0, tcpMaxInFlight, u.handleTCP).HandlePacket)
	s.SetTransportProtocolHandler(udp.ProtocolNumber, udp.NewForwarder(s, u.handleUDP).HandlePacket)
	s.SetTransportProtocolHandler(icmp.ProtocolNumber4, u.handleICMPv4)
	s.SetTransportProtocolHandler(icmp.ProtocolNumber6, u.handleICMPv6)
	return u
}

// close stops new flows and dials and closes every host socket; the
// netstack side of each flow ends when the stack closes. Once it returns, no
// flow can begin, so wait may follow.
func (u *uplink) close() {
	u.mu.Lock()
	u.cancel()
	for c := range u.conns {
		c.Close()
	}
	u.mu.Unlock()
}

// wait returns when every flow goroutine has ended. Call it after close.
func (u *uplink) wait() {
	u.flows.Wait()
	if u.ns != nil {
		u.ns.Close()
	}
}

// begin registers a flow (and its host socket c, if not nil) unless the
// uplink is closing. The caller runs the flow and then calls end.
func (u *uplink) begin(c io.Closer) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.ctx.Err() != nil {
		return false
	}
	if c != nil {
		u.conns[c] = struct{}{}
	}
	u.flows.Add(1)
	return true
}

// end is the counterpart of begin.
func (u *uplink) end(c io.Closer) {
	if c != nil {
		u.mu.Lock()
		delete(u.conns, c)
		u.mu.Unlock()
	}
	u.flows.Done()
}

// target returns where a flow to dst is re-originated, or false if it is
// refused: the gateway itself (unless NAT maps it to the uplink's
// loopback), other addresses of the sandbox's subnets, and addresses that
// never leave a host.
func (u *uplink) target(dst netip.Addr) (netip.Addr, bool) {
	if to, ok := u.nat[dst]; ok {
		return to, true
	}
	if u.gateways[dst] || u.local[dst] {
		return netip.Addr{}, false
	}
	for _, p := range u.subnets {
		if p.Contains(dst) {
			return netip.Addr{}, false
		}
	}
	if dst.IsLoopback() || dst.IsMulticast() || dst.IsUnspecified() || dst.IsLinkLocalUnicast() ||
		dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return netip.Addr{}, false
	}
	return dst, true
}

// isDNS reports whether a flow to dst:port is a query to the sandbox's DNS
// service: port 53 of a gateway address, with the service on.
func (u *uplink) isDNS(dst netip.Addr, port uint16) bool {
	return u.names != nil && port == 53 && u.gateways[dst]
}

// noUpstream logs, once, that the DNS service answers SERVFAIL for want of
// an upstream resolver.
func (u *uplink) noUpstream() {
	u.noUpstreamOnce.Do(func() {
		u.log.Warn("sandbox: DNS: no upstream resolver (no usable nameserver in the host's /etc/resolv.conf); answering SERVFAIL; give --dns-upstream ADDR[:PORT]")
	})
}

// inNS runs fn on the thread in the uplink namespace, so that the sockets
// it creates belong there (and keep it) wherever they are used afterwards.
// fn must not block for long: flows wait their turn for the thread.
func (u *uplink) inNS(fn func() error) error {
	if u.nsErr != nil {
		return fmt.Errorf("uplink namespace: %w", u.nsErr)
	}
	if u.ns == nil {
		return fn()
	}
	return u.ns.Do(fn)
}

// contain, deferred at the top of a flow's goroutine, contains a panic to
// that flow: it is counted (Faults()) and logged, and cleanup, if not nil,
// releases what the flow held. It must be deferred itself: recover works
// only in the deferred call.
func (u *uplink) contain(what string, cleanup func()) {
	v := recover()
	if v == nil {
		return
	}
	u.guard.Recovered("uplink: "+what, v, nil, nil)
	if cleanup != nil {
		// The cleanup may find the flow's state half torn down; a
		// second panic must not escape either.
		defer func() { _ = recover() }()
		cleanup()
	}
}

// flowFault accounts for a panic that a flow's copy goroutine recovered.
func (u *uplink) flowFault(v any) { u.guard.Recovered("uplink: flow copy", v, nil, nil) }

// Faults returns the panics contained in flow goroutines so far.
func (u *uplink) Faults() uint64 { return u.faults.Faults.Load() }

// handleTCP runs on a goroutine of its own (the forwarder starts one per
// SYN), as do the flow's copies.
func (u *uplink) handleTCP(r *tcp.ForwarderRequest) {
	completed := false
	defer u.contain("tcp flow setup", func() {
		if !completed {
			r.Complete(true) // frees the forwarder's in-flight slot
		}
	})
	id := r.ID()
	dst, ok := u.target(toAddr(id.LocalAddress))
	dnsFlow := u.isDNS(toAddr(id.LocalAddress), id.LocalPort)
	if dnsFlow {
		// The sandbox's resolver, served by forwarding to the
		// upstream; not subject to the policy, which it feeds.
		u.names.queriesTCP.Add(1)
		if !u.dns.IsValid() {
			u.serveServFailTCP(r)
			completed = true
			return
		}
		dst, ok = u.dns.Addr(), true
	} else if !ok || !u.fromSandbox(toAddr(id.RemoteAddress)) {
		r.Complete(true) // refused: RST the SYN
		completed = true
		return
	}
	// The policy sees the destination the sandbox asked for, before
	// NAT, decided once per flow: here, at its SYN.
	if !dnsFlow && !u.policy.Decide("tcp", netip.AddrPortFrom(toAddr(id.RemoteAddress), id.RemotePort), netip.AddrPortFrom(toAddr(id.LocalAddress), id.LocalPort)) {
		r.Complete(true)
		completed = true
		return
	}
	ctx, cancel := context.WithTimeout(u.ctx, dialTimeout)
	defer cancel()
	port := id.LocalPort
	if dnsFlow {
		port = u.dns.Port()
	}
	host, err := u.dial.dialTCP(ctx, netip.AddrPortFrom(dst, port))
	if err != nil {
		u.outOfDescriptors("TCP dial", err)
		u.log.Debug("uplink: TCP dial failed; resetting the sandbox's SYN", "dst", dst, "port", id.LocalPort, "err", err)
		r.Complete(true)
		completed = true
		return
	}
	var wq waiter.Queue
	ep, tcpipErr := r.CreateEndpoint(&wq)
	if tcpipErr != nil {
		// The sandbox gave up (or the stack is closing) while we
		// dialed.
		u.log.Debug("uplink: TCP handshake with the sandbox failed", "dst", dst, "port", id.LocalPort, "err", tcpipErr.String())
		r.Complete(true)
		completed = true
		host.Close()
		return
	}
	r.Complete(false)
	completed = true
	if !u.begin(host) {
		ep.Abort()
		host.Close()
		return
	}
	go func() {
		defer u.end(host)
		defer u.contain("tcp flow", func() { host.Close(); ep.Abort() })
		var tee io.Writer
		if dnsFlow {
			tee = &dnsStream{t: u.names}
		}
		splice(gonet.NewTCPConn(&wq, ep), ep, host, tee, u.flowFault)
	}()
}

// splice copies both ways between the sandbox's connection (sb, over the
// netstack endpoint ep) and the host socket until both directions have
// ended. A direction that ends cleanly passes the half-close on (FIN); one
// that fails resets both connections, as a kernel forwarding the flow would
// see the RST.
//
// tee, when not nil, sees every byte from the host to the sandbox. fault,
// when not nil, is told of a panic in either direction, which then fails
// like an error (both connections reset).
func splice(sb *gonet.TCPConn, ep tcpip.Endpoint, host flowConn, tee io.Writer, fault func(any)) {
	errc := make(chan error, 2)
	contain := func() {
		if v := recover(); v != nil {
			if fault != nil {
				fault(v)
			}
			errc <- fmt.Errorf("sandbox: flow fault: %v", v)
		}
	}
	go func() {
		defer contain()
		err := copyStream(host, sb)
		if err == nil {
			err = host.CloseWrite()
		}
		errc <- err
	}()
	go func() {
		defer contain()
		var src io.Reader = host
		if tee != nil {
			src = io.TeeReader(host, tee)
		}
		err := copyStream(sb, src)
		if err == nil {
			err = sb.CloseWrite()
		}
		errc <- err
	}()
	failed := false
	for range 2 {
		if err := <-errc; err != nil && !failed {
			failed = true
			// Unblock the other direction and pass the reset on.
			host.Abort()
			ep.Abort()
		}
	}
	sb.Close()
	host.Close()
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, spliceBufSize); return &b }}

// copyStream copies src to dst until EOF (nil) or an error. It is io.Copy
// without the ReaderFrom/WriterTo shortcuts, which would pick their own
// 32 KiB buffers.
func copyStream(dst io.Writer, src io.Reader) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (u *uplink) handleUDP(r *udp.ForwarderRequest) bool {
	id := r.ID()
	dst, ok := u.target(toAddr(id.LocalAddress))
	port := id.LocalPort
	dnsFlow := u.isDNS(toAddr(id.LocalAddress), id.LocalPort)
	if dnsFlow {
		if !u.dns.IsValid() {
			return u.serveServFailUDP(r)
		}
		dst, port, ok = u.dns.Addr(), u.dns.Port(), true
	}
	if !ok || !u.fromSandbox(toAddr(id.RemoteAddress)) {
		return false // the stack answers with ICMP port unreachable
	}
	// Decided once per flow: later datagrams of an allowed flow go to
	// its endpoint and do not come here. A denied one is answered with
	// ICMP port unreachable, as a refused one is.
	if !dnsFlow && !u.policy.Decide("udp", netip.AddrPortFrom(toAddr(id.RemoteAddress), id.RemotePort), netip.AddrPortFrom(toAddr(id.LocalAddress), id.LocalPort)) {
		return false
	}
	host, err := u.dial.dialUDP(netip.AddrPortFrom(dst, port))
	if err != nil {
		u.outOfDescriptors("UDP socket", err)
		u.log.Debug("uplink: UDP socket failed", "dst", dst, "port", id.LocalPort, "err", err)
		return false
	}
	var wq waiter.Queue
	ep, tcpipErr := r.CreateEndpoint(&wq)
	if tcpipErr != nil {
		u.log.Debug("uplink: UDP endpoint failed", "dst", dst, "port", id.LocalPort, "err", tcpipErr.String())
		host.Close()
		return true
	}
	sb := gonet.NewUDPConn(&wq, ep)
	if !u.begin(host) {
		sb.Close()
		host.Close()
		return true
	}
	go func() {
		defer u.end(host)
		defer u.contain("udp flow", func() { sb.Close(); host.Close() })
		var toSandbox, fromSandbox func([]byte)
		var hostFailed func()
		if dnsFlow {
			// An upstream that refuses (ICMP port unreachable) or
			// cannot be reached gets the last query answered
			// SERVFAIL, so that the sandbox's resolver fails at once
			// rather than after its timeout.
			var mu sync.Mutex
			var lastQuery []byte
			fromSandbox = func(q []byte) {
				u.names.queriesUDP.Add(1)
				mu.Lock()
				lastQuery = append(lastQuery[:0], q...)
				mu.Unlock()
			}
			toSandbox = u.names.learn
			hostFailed = func() {
				mu.Lock()
				q := lastQuery
				mu.Unlock()
				if a := u.names.servFail(q); a != nil {
					u.names.upstreamFailed.Add(1)
					_, _ = sb.Write(a)
				}
			}
		}
		relayUDP(sb, host, udpIdleTimeout, fromSandbox, toSandbox, hostFailed, u.flowFault)
	}()
	return true
}

// relayUDP moves datagrams both ways until neither side has sent one for
// idle, or either side fails.
//
// fromSandbox and toSandbox, when not nil, see each datagram of their
// direction before it is passed on. hostFailed, when not nil, is called
// once if the host socket fails (a send that fails, or a receive that
// reports an ICMP error such as port unreachable), while sb is still open.
// fault, when not nil, is told of a panic in either direction, which then
// ends the flow.
func relayUDP(sb, host net.Conn, idle time.Duration, fromSandbox, toSandbox func([]byte), hostFailed func(), fault func(any)) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	var once, failOnce sync.Once
	stop := func() {
		once.Do(func() {
			sb.Close()
			host.Close()
		})
	}
	failed := func() {
		if hostFailed != nil {
			failOnce.Do(hostFailed)
		}
	}
	pump := func(dst, src net.Conn, see func([]byte)) {
		defer stop()
		defer func() {
			if v := recover(); v != nil && fault != nil {
				fault(v)
			}
		}()
		buf := make([]byte, 64<<10)
		for {
			_ = src.SetReadDeadline(time.Unix(0, last.Load()).Add(idle))
			n, err := src.Read(buf)
			if err != nil {
				var ne net.Error
				timeout := errors.As(err, &ne) && ne.Timeout()
				if timeout && time.Since(time.Unix(0, last.Load())) < idle {
					continue // the other direction was active
				}
				if src == host && !timeout {
					failed()
				}
				return
			}
			last.Store(time.Now().UnixNano())
			if see != nil {
				see(buf[:n])
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				if dst == host {
					failed()
				}
				return
			}
		}
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pump(host, sb, fromSandbox) }()
	go func() { defer wg.Done(); pump(sb, host, toSandbox) }()
	wg.Wait()
}

// serveServFailTCP accepts a DNS-over-TCP connection of the sandbox and
// answers its queries with SERVFAIL (the service has no upstream).
func (u *uplink) serveServFailTCP(r *tcp.ForwarderRequest) {
	u.noUpstream()
	var wq waiter.Queue
	ep, tcpipErr := r.CreateEndpoint(&wq)
	if tcpipErr != nil {
		r.Complete(true)
		return
	}
	r.Complete(false)
	c := gonet.NewTCPConn(&wq, ep)
	if !u.begin(c) {
		c.Close()
		return
	}
	go func() {
		defer u.end(c)
		defer u.contain("dns flow", func() { c.Close() })
		u.names.serveServFailTCP(c, udpIdleTimeout)
	}()
}

// serveServFailUDP answers a UDP DNS flow of the sandbox with SERVFAIL
// (the service has no upstream).
func (u *uplink) serveServFailUDP(r *udp.ForwarderRequest) bool {
	u.noUpstream()
	var wq waiter.Queue
	ep, tcpipErr := r.CreateEndpoint(&wq)
	if tcpipErr != nil {
		return true
	}
	c := gonet.NewUDPConn(&wq, ep)
	if !u.begin(c) {
		c.Close()
		return true
	}
	go func() {
		defer u.end(c)
		defer u.contain("dns flow", func() { c.Close() })
		u.names.serveServFailUDP(c, udpIdleTimeout)
	}()
	return true
}
