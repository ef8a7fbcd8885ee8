package sandbox

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	"gvisor.dev/gvisor/pkg/tcpip/link/pipe"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// gatewayPair wires the sandbox's netstack (CreateLinksAndRoutes and the
// uplink, as Start does) to a second gVisor stack playing the sandbox,
// through an in-memory Ethernet pipe instead of a veth. The uplink dials in
// this process's namespace, where the tests only use loopback, through the
// --allow-host-loopback NAT of the gateway address.
type gatewayPair struct {
	args    Args
	gateway *stack.Stack
	links   *Links
	uplink  *uplink
	client  *stack.Stack
}

func newGatewayPair(t *testing.T, flags ...string) *gatewayPair {
	t.Helper()
	c, err := ParseFlags(flags)
	if err != nil {
		t.Fatal(err)
	}
	args, err := Plan(c, HostFacts{})
	if err != nil {
		t.Fatal(err)
	}
	sandboxMAC := tcpip.LinkAddress("\x02\x00\x00\x00\x00\x64")
	a, b := pipe.New(sandboxMAC, tcpipLinkAddress(GatewayMAC), uint32(args.Sandbox.MTU))
	p := &gatewayPair{args: args}

	p.gateway, err = NewStack()
	if err != nil {
		t.Fatal(err)
	}
	p.links, err = CreateLinksAndRoutes(p.gateway, &p.args, func(l FDBasedLink) (OpenedLink, error) {
		return OpenedLink{Endpoint: ethernet.New(b)}, nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var policy *Policy
	if len(c.Allow) > 0 || len(c.Deny) > 0 {
		if policy, err = NewPolicy(c, nil, false); err != nil {
			t.Fatal(err)
		}
	}
	p.uplink = newUplink(p.gateway, p.links.NIC(StackLinkName), p.args, -1, policy, log)

	p.client = stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
	})
	if err := createNIC(p.client, 1, "eth0", ethernet.New(a), stack.NICOptions{Name: "eth0"}, args.Sandbox.Addresses); err != nil {
		t.Fatal(err)
	}
	var routes []tcpip.Route
	for _, gw := range []netip.Addr{args.Sandbox.Gateway4, args.Sandbox.Gateway6} {
		if !gw.IsValid() {
			continue
		}
		d := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if gw.Is6() {
			d = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		rs, err := toRoutes(1, []Route{{Destination: d, Gateway: gw}})
		if err != nil {
			t.Fatal(err)
		}
		routes = append(routes, rs...)
	}
	p.client.SetRouteTable(routes)

	t.Cleanup(func() {
		p.client.Close()
		p.client.Wait()
		p.uplink.close()
		p.links.Stop()
		p.gateway.Close()
		p.gateway.Wait()
		done := make(chan struct{})
		go func() { p.uplink.wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("uplink flows still running 10 s after close")
		}
	})
	return p
}

func fullAddr(a netip.AddrPort) tcpip.FullAddress {
	return tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(a.Addr().AsSlice()), Port: a.Port()}
}

// lengthServer reads each connection to EOF and then answers with the
// SHA-256 of what it read, passing on the half-close both ways.
func lengthServer(t *testing.T, network, addr string) net.Listener {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("no %s loopback here: %v", network, err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				h := sha256.New()
				if _, err := io.Copy(h, c); err != nil {
					return
				}
				_, _ = c.Write(h.Sum(nil))
			}()
		}
	}()
	return l
}

func TestUplinkTCPHalfClose(t *testing.T) {
	p := newGatewayPair(t, "--allow-host-loopback")
	for _, tc := range []struct {
		name, listen string
		gw           netip.Addr
		proto        tcpip.NetworkProtocolNumber
	}{
		{"ipv4", "127.0.0.1:0", p.args.Sandbox.Gateway4, ipv4.ProtocolNumber},
		{"ipv6", "[::1]:0", p.args.Sandbox.Gateway6, ipv6.ProtocolNumber},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := lengthServer(t, "tcp", tc.listen)
			port := uint16(l.Addr().(*net.TCPAddr).Port)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, err := gonet.DialContextTCP(ctx, p.client, fullAddr(netip.AddrPortFrom(tc.gw, port)), tc.proto)
			if err != nil {
				t.Fatalf("dial the gateway: %v", err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			data := bytes.Repeat([]byte("sluice "), 300_000) // 2.1 MB
			if _, err := c.Write(data); err != nil {
				t.Fatal(err)
			}
			// The server answers only after it has seen our FIN: the
			// half-close must cross the uplink while the other
			// direction stays open.
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("read the answer: %v", err)
			}
			want := sha256.Sum256(data)
			if !bytes.Equal(got, want[:]) {
				t.Errorf("server saw other bytes: answer %x, want %x", got, want)
			}
		})
	}
}

func TestUplinkRefusesGatewayWithoutNAT(t *testing.T) {
	p := newGatewayPair(t) // no --allow-host-loopback
	l := lengthServer(t, "tcp", "127.0.0.1:0")
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := gonet.DialContextTCP(ctx, p.client, fullAddr(netip.AddrPortFrom(p.args.Sandbox.Gateway4, port)), ipv4.ProtocolNumber)
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("dial the gateway without --allow-host-loopback: %v, want connection refused", err)
	}
}

func TestUplinkUDP(t *testing.T) {
	p := newGatewayPair(t, "--allow-host-loopback")
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(bytes.ToUpper(buf[:n]), from)
		}
	}()
	port := uint16(pc.LocalAddr().(*net.UDPAddr).Port)
	raddr := fullAddr(netip.AddrPortFrom(p.args.Sandbox.Gateway4, port))
	c, err := gonet.DialUDP(p.client, nil, &raddr, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, msg := range []string{"hello", "again, same flow"} {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read the echo of %q: %v", msg, err)
		}
		if got := string(buf[:n]); got != strings.ToUpper(msg) {
			t.Errorf("echo of %q = %q", msg, got)
		}
	}
}

func TestUplinkTarget(t *testing.T) {
	c := DefaultConfig()
	c.AllowHostLoopback = true
	args, err := Plan(c, HostFacts{})
	if err != nil {
		t.Fatal(err)
	}
	u := &uplink{nat: map[netip.Addr]netip.Addr{}, gateways: map[netip.Addr]bool{}, subnets: args.Uplink.Subnets}
	for _, r := range args.NAT {
		u.nat[r.Dst] = r.To
	}
	for _, g := range args.Uplink.Gateways {
		u.gateways[g] = true
	}
	for _, tc := range []struct {
		dst, want string // want "" means refused
	}{
		{"10.0.2.2", "127.0.0.1"},
		{"fd00:51ce::2", "::1"},
		{"10.0.2.50", ""},
		{"fd00:51ce::77", ""},
		{"127.0.0.1", ""},
		{"::1", ""},
		{"224.0.0.251", ""},
		{"ff02::1", ""},
		{"255.255.255.255", ""},
		{"169.254.1.1", ""},
		{"fe80::1", ""},
		{"0.0.0.0", ""},
		{"192.0.2.10", "192.0.2.10"},
		{"2001:db8::10", "2001:db8::10"},
	} {
		got, ok := u.target(netip.MustParseAddr(tc.dst))
		switch {
		case tc.want == "" && ok:
			t.Errorf("target(%s) = %v, want refused", tc.dst, got)
		case tc.want != "" && (!ok || got.String() != tc.want):
			t.Errorf("target(%s) = %v, %v; want %s", tc.dst, got, ok, tc.want)
		}
	}
	// Without the NAT, the gateway is refused.
	u.nat = map[netip.Addr]netip.Addr{}
	if got, ok := u.target(netip.MustParseAddr("10.0.2.2")); ok {
		t.Errorf("target(gateway) without NAT = %v, want refused", got)
	}
}

func TestEchoReply(t *testing.T) {
	payload := []byte("abcdefghijklmnopqrstuvwxyz0123456789")
	for _, tc := range []struct{ src, dst string }{
		{"10.0.2.100", "192.0.2.1"},
		{"fd00:51ce::100", "2001:db8::1"},
	} {
		req := echoRequest{
			src: netip.MustParseAddr(tc.src), dst: netip.MustParseAddr(tc.dst),
			ident: 0x1234, seq: 7, payload: payload,
		}
		b := echoReply(req, payload)
		src := tcpip.AddrFromSlice(req.dst.AsSlice())
		dst := tcpip.AddrFromSlice(req.src.AsSlice())
		if req.src.Is4() {
			ip := header.IPv4(b)
			if !ip.IsValid(len(b)) || !ip.IsChecksumValid() {
				t.Fatalf("IPv4 header invalid: %x", b[:20])
			}
			if ip.SourceAddress() != src || ip.DestinationAddress() != dst || ip.TransportProtocol() != header.ICMPv4ProtocolNumber {
				t.Errorf("IPv4 header %v -> %v proto %d", ip.SourceAddress(), ip.DestinationAddress(), ip.TransportProtocol())
			}
			ic := header.ICMPv4(ip.Payload())
			if checksum.Checksum(ic, 0) != 0xffff {
				t.Error("ICMPv4 checksum wrong")
			}
			if ic.Type() != header.ICMPv4EchoReply || ic.Ident() != 0x1234 || ic.Sequence() != 7 || !bytes.Equal(ic.Payload(), payload) {
				t.Errorf("ICMPv4 reply: type %d ident %#x seq %d payload %q", ic.Type(), ic.Ident(), ic.Sequence(), ic.Payload())
			}
			continue
		}
		ip := header.IPv6(b)
		if !ip.IsValid(len(b)) || ip.SourceAddress() != src || ip.DestinationAddress() != dst {
			t.Fatalf("IPv6 header invalid: %x", b[:40])
		}
		ic := header.ICMPv6(ip.Payload())
		want := header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
			Header: ic, Src: src, Dst: dst,
		})
		if ic.Checksum() != want {
			t.Errorf("ICMPv6 checksum %#x, want %#x", ic.Checksum(), want)
		}
		if ic.Type() != header.ICMPv6EchoReply || ic.Ident() != 0x1234 || ic.Sequence() != 7 || !bytes.Equal(ic.Payload(), payload) {
			t.Errorf("ICMPv6 reply: type %d ident %#x seq %d", ic.Type(), ic.Ident(), ic.Sequence())
		}
	}
}

func TestRelayUDPIdleTimeout(t *testing.T) {
	a1, a2 := net.Pipe()
	b1, b2 := net.Pipe()
	done := make(chan struct{})
	go func() { relayUDP(a2, b1, 100*time.Millisecond, nil, nil, nil, nil); close(done) }()
	// Traffic keeps the flow alive past the timeout...
	for range 3 {
		go func() { buf := make([]byte, 10); _, _ = b2.Read(buf) }()
		if _, err := a1.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(60 * time.Millisecond)
	}
	select {
	case <-done:
		t.Fatal("relay ended although traffic flowed")
	default:
	}
	// ...and silence ends it.
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("relay still running 5 s into silence with a 100 ms idle timeout")
	}
	if _, err := a1.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("write after the relay ended: %v, want closed", err)
	}
}

// TestUplinkPolicy checks that a denied TCP flow is reset at its SYN and a
// denied UDP flow never reaches its server, while allowed ones pass.
func TestUplinkPolicy(t *testing.T) {
	l := lengthServer(t, "tcp", "127.0.0.1:0")
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	p := newGatewayPair(t, "--allow-host-loopback", "--deny", "all", "--allow", fmt.Sprintf("10.0.2.2:%d/tcp", port))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := gonet.DialContextTCP(ctx, p.client, fullAddr(netip.AddrPortFrom(p.args.Sandbox.Gateway4, port)), ipv4.ProtocolNumber)
	if err != nil {
		t.Fatalf("allowed flow: %v", err)
	}
	c.Close()
	_, err = gonet.DialContextTCP(ctx, p.client, fullAddr(netip.AddrPortFrom(p.args.Sandbox.Gateway6, port)), ipv6.ProtocolNumber)
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("denied flow (IPv6 gateway, not allowed): %v, want connection refused (RST)", err)
	}
	st := p.uplink.policy.Stats()
	if st[0].Flows != 1 || st[1].Flows != 1 {
		t.Errorf("policy stats %+v, want one allowed and one denied", st)
	}

	// UDP: the datagram is dropped with ICMP port unreachable, so the
	// server sees nothing.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	uport := uint16(pc.LocalAddr().(*net.UDPAddr).Port)
	raddr := fullAddr(netip.AddrPortFrom(p.args.Sandbox.Gateway4, uport))
	uc, err := gonet.DialUDP(p.client, nil, &raddr, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	if _, err := uc.Write([]byte("denied")); err != nil {
		t.Fatal(err)
	}
	_ = pc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, _, err := pc.ReadFrom(make([]byte, 100)); err == nil {
		t.Errorf("a denied UDP flow reached the server (%d bytes)", n)
	}
}
