package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// publish opens the host side of every --publish in the uplink namespace
// and serves it: each accepted connection (each new client of a UDP port)
// becomes a connection into the sandbox through the netstack, to the
// sandbox's address of the client's family (or the other one, when the
// sandbox has only that).
//
// The sandbox sees the real client address and port where it can answer
// it: the connection into the sandbox is made from the client's address,
// which the netstack's NIC may use because it spoofs (a source that is not
// its own) and is promiscuous (it takes in frames for any destination). The
// sandbox's replies reach it because the client is off the sandbox's
// subnet, behind the default route through the gateway. A client the
// sandbox cannot answer so (a loopback or link-local address, an address
// inside the sandbox's subnets, or one of the other family than the
// sandbox's address) is replaced by the gateway, as a NAT would. Every
// listener is open when publish returns, so a port in use fails before the
// command starts.
func (u *uplink) publish(ps []Publish, sandbox4, sandbox6 netip.Addr) error {
	if u.sandboxOnly {
		// --xdp redirect/tunnel: the ports are the netstack's.
		return u.publishNetstack(ps, sandbox4, sandbox6)
	}
	type opened struct {
		p Publish
		c io.Closer
	}
	var all []opened
	fail := func(err error) error {
		for _, o := range all {
			o.c.Close()
		}
		return err
	}
	for _, p := range ps {
		var c io.Closer
		err := u.inNS(func() error {
			var err error
			if p.Proto == "udp" {
				c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(p.Host))
			} else {
				c, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(p.Host))
			}
			return err
		})
		if err != nil {
			return fail(fmt.Errorf("sandbox: --publish %v: %w", p, err))
		}
		all = append(all, opened{p, c})
	}
	for _, o := range all {
		if !u.begin(o.c) {
			return fail(errors.New("sandbox: --publish: the uplink is closing"))
		}
		t := publishTarget{sandbox4: sandbox4, sandbox6: sandbox6, port: o.p.SandboxPort}
		switch l := o.c.(type) {
		case *net.TCPListener:
			go func() { defer u.end(l); u.serveTCP(l, t) }()
		case *net.UDPConn:
			go func() { defer u.end(l); u.serveUDP(l, t) }()
		}
	}
	return nil
}

// publishTarget is the sandbox side of a published port.
type publishTarget struct {
	sandbox4, sandbox6 netip.Addr // invalid when the family is off
	port               uint16
}

// route returns the sandbox's address and port a connection from client
// goes to, and the source it is made from: the client itself when the
// sandbox can answer it there, else invalid (the stack then picks the
// gateway address of dst's family).
func (u *uplink) route(t publishTarget, client netip.AddrPort) (dst, src netip.AddrPort) {
	client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
	a := t.sandbox4
	if (client.Addr().Is6() && t.sandbox6.IsValid()) || !a.IsValid() {
		a = t.sandbox6
	}
	dst = netip.AddrPortFrom(a, t.port)
	if u.answerable(client.Addr(), a) {
		src = client
	}
	return dst, src
}

// answerable reports whether the sandbox at sandbox can be sent packets
// from c and answer them: c is of the same family, a unicast address that
// the sandbox routes through the gateway.
func (u *uplink) answerable(c, sandbox netip.Addr) bool {
	if c.Is4() != sandbox.Is4() || c.IsLoopback() || c.IsUnspecified() || c.IsMulticast() ||
		c.IsLinkLocalUnicast() || c == netip.AddrFrom4([4]byte{255, 255, 255, 255}) || u.gateways[c] {
		return false
	}
	for _, p := range u.subnets {
		if p.Contains(c) {
			return false
		}
	}
	return true
}

// dialSandbox connects a netstack TCP endpoint to dst in the sandbox, from
// src when it is valid: its port if the stack has it free, else another
// port of the same address, else (which the spoofing NIC should never
// leave) the gateway.
func (u *uplink) dialSandbox(ctx context.Context, src, dst netip.AddrPort) (*gonet.TCPConn, error) {
	var wq waiter.Queue
	ep, tcpipErr := u.s.NewEndpoint(tcp.ProtocolNumber, protoOf(dst.Addr()), &wq)
	if tcpipErr != nil {
		return nil, errors.New(tcpipErr.String())
	}
	if src.IsValid() {
		if err := ep.Bind(u.fullAddr(src)); err != nil {
			if err := ep.Bind(u.fullAddr(netip.AddrPortFrom(src.Addr(), 0))); err != nil {
				u.log.Debug("publish: cannot use the client's address; the sandbox sees the gateway", "client", src, "err", err.String())
			}
		}
	}
	waitEntry, notify := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&waitEntry)
	defer wq.EventUnregister(&waitEntry)
	err := ep.Connect(u.fullAddr(dst))
	if _, ok := err.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-ctx.Done():
			ep.Close()
			return nil, ctx.Err()
		case <-notify:
		}
		err = ep.LastError()
	}
	if err != nil {
		ep.Close()
		return nil, errors.New(err.String())
	}
	return gonet.NewTCPConn(&wq, ep), nil
}

func (u *uplink) fullAddr(a netip.AddrPort) tcpip.FullAddress {
	return tcpip.FullAddress{NIC: u.nic, Addr: tcpip.AddrFromSlice(a.Addr().AsSlice()), Port: a.Port()}
}

// serveTCP accepts on l until it is closed and splices each connection to
// the sandbox; one the sandbox refuses is reset.
func (u *uplink) serveTCP(l *net.TCPListener, t publishTarget) {
	var backoff time.Duration
	for {
		c, err := l.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors (EMFILE, ENFILE) or kernel memory:
			// the listener is fine and the clients wait in its
			// backlog, so wait and retry, as net/http's Server does.
			// Returning would close the port for good once the
			// listener is collected.
			if !u.outOfDescriptors("publish: accept", err) {
				u.log.Warn("publish: accept failed; retrying", "port", l.Addr(), "err", err)
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-u.ctx.Done():
				return
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		if !u.begin(c) {
			c.Close()
			return
		}
		go func() {
			defer u.end(c)
			client, _ := netip.ParseAddrPort(c.RemoteAddr().String())
			dst, src := u.route(t, client)
			ctx, cancel := context.WithTimeout(u.ctx, dialTimeout)
			sb, err := u.dialSandbox(ctx, src, dst)
			cancel()
			if err != nil {
				u.log.Debug("publish: the sandbox refused", "dst", dst, "client", c.RemoteAddr(), "err", err)
				_ = c.SetLinger(0)
				c.Close()
				return
			}
			spliceConns(sb, c)
		}()
	}
}

// spliceConns copies both ways between the sandbox's side and the host's,
// passing half-closes on, until both directions end; a failure closes both.
func spliceConns(sb *gonet.TCPConn, host *net.TCPConn) {
	var wg sync.WaitGroup
	var once sync.Once
	abort := func() {
		once.Do(func() {
			_ = host.SetLinger(0)
			host.Close()
			sb.Close()
		})
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := copyStream(sb, host); err != nil || sb.CloseWrite() != nil {
			abort()
		}
	}()
	go func() {
		defer wg.Done()
		if err := copyStream(host, sb); err != nil || host.CloseWrite() != nil {
			abort()
		}
	}()
	wg.Wait()
	sb.Close()
	host.Close()
}

// serveUDP reads datagrams on pc until it is closed; each client gets a
// flow of its own into the sandbox (a netstack UDP socket, from the
// client's address where route allows), whose replies go back to that
// client, ended after udpIdleTimeout without a datagram.
func (u *uplink) serveUDP(pc *net.UDPConn, t publishTarget) {
	var mu sync.Mutex
	flows := map[netip.AddrPort]*gonet.UDPConn{}
	defer func() {
		mu.Lock()
		for _, f := range flows {
			f.Close()
		}
		mu.Unlock()
	}()
	buf := make([]byte, 64<<10)
	for {
		n, client, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		mu.Lock()
		f := flows[client]
		if f == nil {
			dst, src := u.route(t, client)
			raddr := u.fullAddr(dst)
			var laddr *tcpip.FullAddress
			if src.IsValid() {
				a := u.fullAddr(src)
				laddr = &a
			}
			f, err = gonet.DialUDP(u.s, laddr, &raddr, protoOf(dst.Addr()))
			if err != nil && laddr != nil {
				// The client's port is taken in the stack: the
				// gateway instead.
				f, err = gonet.DialUDP(u.s, nil, &raddr, protoOf(dst.Addr()))
			}
			if err != nil {
				mu.Unlock()
				u.log.Debug("publish: UDP flow into the sandbox failed", "dst", dst, "client", client, "err", err)
				continue
			}
			if !u.begin(f) {
				mu.Unlock()
				f.Close()
				return
			}
			flows[client] = f
			go func() {
				defer u.end(f)
				rb := make([]byte, 64<<10)
				for {
					_ = f.SetReadDeadline(time.Now().Add(udpIdleTimeout))
					m, err := f.Read(rb)
					if err != nil {
						break
					}
					if _, err := pc.WriteToUDPAddrPort(rb[:m], client); err != nil {
						break
					}
				}
				mu.Lock()
				delete(flows, client)
				mu.Unlock()
				f.Close()
			}()
		}
		mu.Unlock()
		_, _ = f.Write(buf[:n])
	}
}
