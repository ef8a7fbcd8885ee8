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
)

// publish opens the host side of every --publish in the uplink namespace
// and serves it: each accepted connection (each new client of a UDP port)
// becomes a connection from the gateway address into the sandbox through
// the netstack. The sandbox sees the gateway as the peer, not the real
// client: the netstack could spoof the client's address, but the sandbox's
// replies to it would then have to be taken in by a promiscuous NIC and
// matched to the flow, which the plain endpoint does not do. Every listener
// is open when publish returns, so a port in use fails before the command
// starts.
func (u *uplink) publish(ps []Publish, sandbox4, sandbox6 netip.Addr) error {
	if u.sandboxOnly {
		// --xdp redirect/tunnel: the ports are the netstack's.
		return u.publishNetstack(ps, sandbox4, sandbox6)
	}
	type opened struct {
		p   Publish
		dst netip.AddrPort
		c   io.Closer
	}
	var all []opened
	fail := func(err error) error {
		for _, o := range all {
			o.c.Close()
		}
		return err
	}
	for _, p := range ps {
		dst := sandbox4
		if (p.Host.Addr().Is6() && sandbox6.IsValid()) || !dst.IsValid() {
			dst = sandbox6
		}
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
		all = append(all, opened{p, netip.AddrPortFrom(dst, p.SandboxPort), c})
	}
	for _, o := range all {
		if !u.begin(o.c) {
			return fail(errors.New("sandbox: --publish: the uplink is closing"))
		}
		switch l := o.c.(type) {
		case *net.TCPListener:
			go func() { defer u.end(l); u.serveTCP(l, o.dst) }()
		case *net.UDPConn:
			go func() { defer u.end(l); u.serveUDP(l, o.dst) }()
		}
	}
	return nil
}

func (u *uplink) fullAddr(a netip.AddrPort) tcpip.FullAddress {
	return tcpip.FullAddress{NIC: u.nic, Addr: tcpip.AddrFromSlice(a.Addr().AsSlice()), Port: a.Port()}
}

// serveTCP accepts on l until it is closed and splices each connection to
// dst in the sandbox; one the sandbox refuses is reset.
func (u *uplink) serveTCP(l *net.TCPListener, dst netip.AddrPort) {
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
			ctx, cancel := context.WithTimeout(u.ctx, dialTimeout)
			sb, err := gonet.DialContextTCP(ctx, u.s, u.fullAddr(dst), protoOf(dst.Addr()))
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
// flow of its own to dst (a netstack UDP socket), whose replies go back to
// that client, ended after udpIdleTimeout without a datagram.
func (u *uplink) serveUDP(pc *net.UDPConn, dst netip.AddrPort) {
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
			raddr := u.fullAddr(dst)
			f, err = gonet.DialUDP(u.s, nil, &raddr, protoOf(dst.Addr()))
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
