package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
)

// publishNetstack is publish with an XDP uplink NIC (--xdp redirect or
// tunnel): the host NIC's traffic for the netstack's addresses reaches the
// netstack, not the uplink namespace's sockets, so the published ports
// listen in the netstack, on its addresses on that NIC. An unspecified
// HOSTADDR listens on each of them; a given one must be one of them. TCP
// only: UDP fails with ErrNotImplemented. Every listener is open when it
// returns.
func (u *uplink) publishNetstack(ps []Publish, sandbox4, sandbox6 netip.Addr) error {
	d, ok := u.dial.(*netstackDialer)
	if !ok {
		return errors.New("sandbox: --publish: no XDP uplink NIC")
	}
	type opened struct {
		l   *gonet.TCPListener
		dst netip.AddrPort
	}
	var all []opened
	fail := func(err error) error {
		for _, o := range all {
			o.l.Close()
		}
		return err
	}
	for _, p := range ps {
		if p.Proto != "tcp" {
			return fail(fmt.Errorf("sandbox: --publish %v: UDP through the netstack's NIC on %s is %w; publish TCP, or use --xdp ns", p, d.name, ErrNotImplemented))
		}
		var addrs []netip.Addr
		switch h := p.Host.Addr(); {
		case h.IsUnspecified():
			for _, a := range []netip.Addr{d.local4, d.local6} {
				if a.IsValid() {
					addrs = append(addrs, a)
				}
			}
		case h == d.local4 || h == d.local6:
			addrs = []netip.Addr{h}
		default:
			return fail(fmt.Errorf("sandbox: --publish %v: with --xdp the netstack listens on its own addresses on %s (%s); %v is not one of them", p, d.name, joinAddrs(d.local4, d.local6), h))
		}
		for _, a := range addrs {
			dst := sandbox4
			if (a.Is6() && sandbox6.IsValid()) || !dst.IsValid() {
				dst = sandbox6
			}
			l, err := gonet.ListenTCP(u.s, tcpip.FullAddress{NIC: d.nic, Addr: tcpip.AddrFromSlice(a.AsSlice()), Port: p.Host.Port()}, protoOf(a))
			if err != nil {
				return fail(fmt.Errorf("sandbox: --publish %v on %v: %w", p, a, err))
			}
			all = append(all, opened{l, netip.AddrPortFrom(dst, p.SandboxPort)})
		}
	}
	for _, o := range all {
		if !u.begin(o.l) {
			return fail(errors.New("sandbox: --publish: the uplink is closing"))
		}
		go func() { defer u.end(o.l); u.serveNetstackTCP(o.l, o.dst) }()
	}
	return nil
}

func joinAddrs(as ...netip.Addr) string {
	var ps []netip.Prefix
	for _, a := range as {
		if a.IsValid() {
			ps = append(ps, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return joinPrefixes(ps)
}

// serveNetstackTCP accepts on l until it is closed and splices each
// connection to dst in the sandbox; one the sandbox refuses is reset.
func (u *uplink) serveNetstackTCP(l *gonet.TCPListener, dst netip.AddrPort) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		client := c.(*gonet.TCPConn)
		if !u.begin(client) {
			client.Close()
			return
		}
		go func() {
			defer u.end(client)
			ctx, cancel := context.WithTimeout(u.ctx, dialTimeout)
			sb, err := gonet.DialContextTCP(ctx, u.s, u.fullAddr(dst), protoOf(dst.Addr()))
			cancel()
			if err != nil {
				u.log.Debug("publish: the sandbox refused", "dst", dst, "client", client.RemoteAddr(), "err", err)
				client.Close()
				return
			}
			spliceNetstack(sb, client)
		}()
	}
}

// spliceNetstack is spliceConns between two netstack connections.
func spliceNetstack(a, b *gonet.TCPConn) {
	var wg sync.WaitGroup
	var once sync.Once
	abort := func() { once.Do(func() { a.Close(); b.Close() }) }
	pump := func(dst, src *gonet.TCPConn) {
		defer wg.Done()
		if err := copyStream(dst, src); err != nil || dst.CloseWrite() != nil {
			abort()
		}
	}
	wg.Add(2)
	go pump(a, b)
	go pump(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}
