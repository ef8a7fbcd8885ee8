//go:build linux

package xdp

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/sluicenet/sluice/internal/netns"
	"github.com/sluicenet/sluice/internal/testenv"
)

// newStack puts a netstack on ep with addrs (each with its prefix) and a
// default route per family. The NIC is removed and the stack closed in
// t.Cleanup, before whatever closes the endpoint's sockets (register that
// earlier).
func newStack(t *testing.T, ep stack.LinkEndpoint, addrs ...netip.Prefix) *stack.Stack {
	t.Helper()
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
	})
	// SACK and receive buffer moderation, as runsc sets them.
	sack := tcpip.TCPSACKEnabled(true)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	mod := tcpip.TCPModerateReceiveBufferOption(true)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &mod)
	t.Cleanup(func() {
		s.RemoveNIC(1)
		s.Close()
		s.Wait()
	})
	if err := s.CreateNIC(1, ep); err != nil {
		t.Fatalf("CreateNIC: %v", err)
	}
	var routes []tcpip.Route
	for _, p := range addrs {
		proto, sub := ipv4.ProtocolNumber, header.IPv4EmptySubnet
		if p.Addr().Is6() {
			proto, sub = ipv6.ProtocolNumber, header.IPv6EmptySubnet
		}
		pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddressWithPrefix{
			Address: tcpip.AddrFromSlice(p.Addr().AsSlice()), PrefixLen: p.Bits()}}
		if err := s.AddProtocolAddress(1, pa, stack.AddressProperties{}); err != nil {
			t.Fatalf("AddProtocolAddress %v: %v", p, err)
		}
		routes = append(routes, tcpip.Route{Destination: sub, NIC: 1})
	}
	s.SetRouteTable(routes)
	return s
}

const transferBytes = 100 << 20

// pattern is a reproducible pseudo-random stream, so both sides can hash
// what they expect without holding 100 MB.
func pattern(seed uint64) io.Reader {
	return io.LimitReader(&prng{rand.NewChaCha8([32]byte{byte(seed), 'x', 'd', 'p'})}, transferBytes)
}

type prng struct{ r *rand.ChaCha8 }

func (p *prng) Read(b []byte) (int, error) { return p.r.Read(b) }

// transfer sends transferBytes each way between a netstack TCP server on
// addr and a kernel client in clientNS, and checks the SHA-256 of both
// streams.
func transfer(t *testing.T, s *stack.Stack, addr netip.Addr, clientNS string) {
	t.Helper()
	proto := ipv4.ProtocolNumber
	network := "tcp4"
	if addr.Is6() {
		proto, network = ipv6.ProtocolNumber, "tcp6"
	}
	const port = 5001
	ln, err := gonet.ListenTCP(s, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(addr.AsSlice()), Port: port}, proto)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	type result struct {
		up  [32]byte
		err error
	}
	srv := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srv <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Minute))
		h := sha256.New()
		if _, err := io.CopyN(h, c, transferBytes); err != nil {
			srv <- result{err: fmt.Errorf("server read: %w", err)}
			return
		}
		var res result
		copy(res.up[:], h.Sum(nil))
		if _, err := io.Copy(c, pattern(2)); err != nil {
			res.err = fmt.Errorf("server write: %w", err)
		}
		srv <- res
	}()

	var conn net.Conn
	testenv.Do(t, clientNS, func() error {
		var err error
		conn, err = net.DialTimeout(network, net.JoinHostPort(addr.String(), strconv.Itoa(port)), 10*time.Second)
		return err
	})
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Minute))
	start := time.Now()
	wantUp := sha256.New()
	if _, err := io.Copy(io.MultiWriter(conn, wantUp), pattern(1)); err != nil {
		t.Fatalf("client write: %v", err)
	}
	gotDown := sha256.New()
	if _, err := io.CopyN(gotDown, conn, transferBytes); err != nil {
		t.Fatalf("client read: %v", err)
	}
	elapsed := time.Since(start)
	wantDown := sha256.New()
	io.Copy(wantDown, pattern(2))
	res := <-srv
	if res.err != nil {
		t.Fatal(res.err)
	}
	if !bytes.Equal(res.up[:], wantUp.Sum(nil)) {
		t.Errorf("upload: server's SHA-256 %x, sent %x", res.up, wantUp.Sum(nil))
	}
	if !bytes.Equal(gotDown.Sum(nil), wantDown.Sum(nil)) {
		t.Errorf("download: client's SHA-256 %x, sent %x", gotDown.Sum(nil), wantDown.Sum(nil))
	}
	t.Logf("%s: %d MB up then %d MB down in %v (%.2f Gbit/s)", addr, transferBytes>>20, transferBytes>>20, elapsed.Round(time.Millisecond),
		2*float64(transferBytes)*8/elapsed.Seconds()/1e9)
}

// ping pings addr from ns count times and reports whether all came back.
func ping(t *testing.T, ns, addr string, count int) bool {
	t.Helper()
	testenv.RequireTool(t, "ping", "nsenter")
	out, err := testenv.Output("nsenter", "--net="+netns.Path(ns), "--", "ping", "-n", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "2", addr)
	if err != nil || !strings.Contains(out, fmt.Sprintf("%d received", count)) {
		t.Logf("ping %s from %s: %v\n%s", addr, ns, err, out)
		return false
	}
	return true
}
