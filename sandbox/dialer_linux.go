package sandbox

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// dialer re-originates the sandbox's flows towards their destinations: from
// host sockets in the uplink namespace (hostDialer, the default), or from
// the netstack itself over its NIC on a host NIC (netstackDialer, with
// --xdp redirect:IFACE and tunnel:IFACE).
type dialer interface {
	// dialTCP connects to dst.
	dialTCP(ctx context.Context, dst netip.AddrPort) (flowConn, error)
	// dialUDP returns a connected UDP socket to dst.
	dialUDP(dst netip.AddrPort) (net.Conn, error)
	// ping sends one echo request to req.to and returns the reply's
	// payload; it gives up after pingTimeout or when ctx ends.
	ping(ctx context.Context, req echoRequest) ([]byte, error)
}

// flowConn is the far side of a spliced TCP flow.
type flowConn interface {
	net.Conn
	// CloseWrite sends a FIN.
	CloseWrite() error
	// Abort resets the connection (RST) and closes it.
	Abort()
}

// hostDialer dials from host sockets, opened in the uplink namespace.
type hostDialer struct{ u *uplink }

func (d hostDialer) dialTCP(ctx context.Context, dst netip.AddrPort) (flowConn, error) {
	c, err := d.u.dialHost(ctx, unix.SOCK_STREAM, dst)
	if err != nil {
		return nil, err
	}
	return hostTCP{c.(*net.TCPConn)}, nil
}

func (d hostDialer) dialUDP(dst netip.AddrPort) (net.Conn, error) {
	return d.u.dialHost(context.Background(), unix.SOCK_DGRAM, dst)
}

func (d hostDialer) ping(_ context.Context, req echoRequest) ([]byte, error) { return d.u.ping(req) }

// hostTCP is a host socket as a flowConn.
type hostTCP struct{ *net.TCPConn }

func (c hostTCP) Abort() {
	// Linger 0: close sends a RST instead of a FIN.
	_ = c.SetLinger(0)
	c.Close()
}

// netstackDialer dials from the netstack, bound to its addresses on the
// NIC nic (the XDP link on the host NIC); the netstack's routes (the
// default routes through that NIC's gateways) take the flows there.
type netstackDialer struct {
	s      *stack.Stack
	nic    tcpip.NICID
	name   string     // the NIC's name, for errors
	local4 netip.Addr // the NIC's addresses; invalid when it has none of a family
	local6 netip.Addr
}

func newNetstackDialer(s *stack.Stack, nic tcpip.NICID, name string, addrs []netip.Prefix) *netstackDialer {
	d := &netstackDialer{s: s, nic: nic, name: name}
	for _, p := range addrs {
		if p.Addr().Is4() && !d.local4.IsValid() {
			d.local4 = p.Addr()
		} else if p.Addr().Is6() && !d.local6.IsValid() {
			d.local6 = p.Addr()
		}
	}
	return d
}

// local returns the NIC's address of dst's family.
func (d *netstackDialer) local(dst netip.Addr) (tcpip.FullAddress, error) {
	a := d.local4
	if dst.Is6() {
		a = d.local6
	}
	if !a.IsValid() {
		return tcpip.FullAddress{}, fmt.Errorf("the netstack has no IPv%d address on %s (give one with --uplink-addr)", familyOf(dst), d.name)
	}
	return tcpip.FullAddress{NIC: d.nic, Addr: tcpip.AddrFromSlice(a.AsSlice())}, nil
}

func (d *netstackDialer) dialTCP(ctx context.Context, dst netip.AddrPort) (flowConn, error) {
	local, err := d.local(dst.Addr())
	if err != nil {
		return nil, err
	}
	// gonet.DialTCPWithBind, keeping the endpoint: a failed flow is
	// passed on as a reset, which needs Abort.
	var wq waiter.Queue
	ep, tcpipErr := d.s.NewEndpoint(tcp.ProtocolNumber, protoOf(dst.Addr()), &wq)
	if tcpipErr != nil {
		return nil, errors.New(tcpipErr.String())
	}
	entry, notify := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	if tcpipErr := ep.Bind(local); tcpipErr != nil {
		ep.Close()
		return nil, fmt.Errorf("bind to %v: %s", toAddr(local.Addr), tcpipErr)
	}
	remote := tcpip.FullAddress{NIC: d.nic, Addr: tcpip.AddrFromSlice(dst.Addr().AsSlice()), Port: dst.Port()}
	tcpipErr = ep.Connect(remote)
	if _, ok := tcpipErr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-ctx.Done():
			ep.Abort()
			return nil, ctx.Err()
		case <-notify:
		}
		tcpipErr = ep.LastError()
	}
	if tcpipErr != nil {
		ep.Close()
		return nil, fmt.Errorf("connect to %v from the netstack: %s", dst, tcpipErr)
	}
	return netstackTCP{gonet.NewTCPConn(&wq, ep), ep}, nil
}

// netstackTCP is a netstack connection as a flowConn.
type netstackTCP struct {
	*gonet.TCPConn
	ep tcpip.Endpoint
}

func (c netstackTCP) Abort() {
	c.ep.Abort()
	c.Close()
}

func (d *netstackDialer) dialUDP(dst netip.AddrPort) (net.Conn, error) {
	local, err := d.local(dst.Addr())
	if err != nil {
		return nil, err
	}
	remote := tcpip.FullAddress{NIC: d.nic, Addr: tcpip.AddrFromSlice(dst.Addr().AsSlice()), Port: dst.Port()}
	return gonet.DialUDP(d.s, &local, &remote, protoOf(dst.Addr()))
}

// ping sends the echo request from a netstack ICMP endpoint (a "ping
// socket": the stack sets the identifier, its bound port, and the
// checksum) and waits for the reply the stack hands that endpoint.
func (d *netstackDialer) ping(ctx context.Context, req echoRequest) ([]byte, error) {
	local, err := d.local(req.to)
	if err != nil {
		return nil, err
	}
	proto, netProto, echo, reply := icmp.ProtocolNumber6, protoOf(req.to), byte(header.ICMPv6EchoRequest), byte(header.ICMPv6EchoReply)
	if req.to.Is4() {
		proto, echo, reply = icmp.ProtocolNumber4, byte(header.ICMPv4Echo), byte(header.ICMPv4EchoReply)
	}
	var wq waiter.Queue
	ep, tcpipErr := d.s.NewEndpoint(proto, netProto, &wq)
	if tcpipErr != nil {
		return nil, fmt.Errorf("ICMP endpoint: %s", tcpipErr)
	}
	c := gonet.NewUDPConn(&wq, ep)
	defer c.Close()
	if tcpipErr := ep.Bind(local); tcpipErr != nil {
		return nil, fmt.Errorf("bind to %v: %s", toAddr(local.Addr), tcpipErr)
	}
	if tcpipErr := ep.Connect(tcpip.FullAddress{NIC: d.nic, Addr: tcpip.AddrFromSlice(req.to.AsSlice())}); tcpipErr != nil {
		return nil, fmt.Errorf("connect to %v: %s", req.to, tcpipErr)
	}
	msg := make([]byte, 8+len(req.payload))
	msg[0] = echo
	binary.BigEndian.PutUint16(msg[6:], req.seq)
	copy(msg[8:], req.payload)
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(pingTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	buf := make([]byte, 64<<10)
	for {
		// Short slices, so that closing the uplink does not wait for
		// the whole timeout.
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if time.Now().After(deadline) {
			return nil, errors.New("timed out")
		}
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := c.Read(buf)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			continue
		}
		if err != nil {
			return nil, err
		}
		b := buf[:n]
		if len(b) < 8 || b[0] != reply || binary.BigEndian.Uint16(b[6:]) != req.seq {
			continue
		}
		return append([]byte(nil), b[8:]...), nil
	}
}

// useNetstack makes the uplink re-originate flows from the netstack over
// the XDP link l (NIC nic) instead of host sockets. The link's own
// addresses are the netstack's, not destinations: flows to them are
// refused and echo requests to them answered by the stack. And since that
// NIC faces a network, the handlers take only flows the sandbox began:
// a LAN host's connection to the NIC's address is no flow of the
// sandbox's to re-originate.
func (u *uplink) useNetstack(nic tcpip.NICID, l XDPLink) {
	u.dial = newNetstackDialer(u.s, nic, l.Interface, l.Addresses)
	for _, p := range l.Addresses {
		u.local[p.Addr()] = true
	}
	u.sandboxOnly = true
}

// fromSandbox reports whether src is an address of the sandbox's subnets;
// without an XDP uplink NIC every source is taken as the sandbox's.
func (u *uplink) fromSandbox(src netip.Addr) bool {
	if !u.sandboxOnly {
		return true
	}
	for _, p := range u.subnets {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

// uplinkXDPLink returns the redirect or tunnel link of a, if any.
func uplinkXDPLink(a *Args) (XDPLink, bool) {
	for _, l := range a.XDPLinks {
		if l.Mode == XDPRedirect || l.Mode == XDPTunnel {
			return l, true
		}
	}
	return XDPLink{}, false
}
