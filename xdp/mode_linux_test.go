//go:build linux

package xdp

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/sluicenet/sluice/bpf"
	"github.com/sluicenet/sluice/internal/testenv"
)

var (
	stack4 = netip.MustParsePrefix("192.0.2.1/24")
	stack6 = netip.MustParsePrefix("2001:db8::1/64")
	peer4  = "192.0.2.2"
	peer6  = "2001:db8::2"
)

// mustLink fails t if err is set, and closes l in t.Cleanup (registered
// before the stack's, so it runs after the NIC is removed).
func mustLink(t *testing.T, l *Link, err error) *Link {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Link.Close: %v", err)
		}
	})
	return l
}

// nsRig is ns mode on a two-queue veth: the stack reads va (in NSA) with
// AF_XDP, the kernel in NSB (the "sandbox") has .2 and ::2 on vb.
func nsRig(t *testing.T, eo EndpointOptions) (*testenv.Veth, *Link) {
	t.Helper()
	v := newVethQ(t, 2)
	testenv.IP(t, v.NSB, "addr", "add", peer4+"/24", "dev", v.B)
	testenv.IP(t, v.NSB, "addr", "add", peer6+"/64", "dev", v.B, "nodad")
	l, err := OpenNS(NSOptions{Netns: v.NSA, Iface: v.A, LinkOptions: LinkOptions{Endpoint: eo}})
	return v, mustLink(t, l, err)
}

// TestNSModeTransfer moves 100 MB each way over TCP, IPv4 and IPv6,
// between a netstack on the AF_XDP endpoint and a kernel peer, with the
// endpoint's GRO on and off, and checks the SHA-256 of every stream.
func TestNSModeTransfer(t *testing.T) {
	testenv.RequireRoot(t)
	for _, gro := range []bool{false, true} {
		t.Run(fmt.Sprintf("gro=%v", gro), func(t *testing.T) {
			// RX checksum offload: the peer's veth leaves checksums
			// partial (tx-checksumming on), and AF_XDP cannot say so.
			v, l := nsRig(t, EndpointOptions{RXChecksumOffload: true, GRO: gro, GSOMaxSize: 1 << 16})
			s := newStack(t, l.Endpoint, stack4, stack6)
			if l.Sockets.Len() != 2 || l.Endpoint.Mode() != BindCopy {
				t.Errorf("%d sockets in %v mode, want 2 in copy mode", l.Sockets.Len(), l.Endpoint.Mode())
			}
			for _, addr := range []netip.Prefix{stack4, stack6} {
				t.Run(addr.Addr().String(), func(t *testing.T) {
					transfer(t, s, addr.Addr(), v.NSB)
				})
			}
			st := l.Endpoint.Stats()
			if st.RxPackets == 0 || st.TxPackets == 0 || st.RxBytes < 2*transferBytes || st.TxBytes < 2*transferBytes {
				t.Errorf("stats do not account for the transfers: %+v", st)
			}
			if st.RxErrors != 0 {
				t.Errorf("%d receive errors", st.RxErrors)
			}
			x, err := l.Endpoint.XDPStats()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("stats %+v xdp %+v", st, x)
			if gro && (x.GRO == nil || x.GRO.Coalesced == 0) {
				t.Errorf("GRO on but nothing coalesced: %+v", x.GRO)
			}
		})
	}
}

func TestNSModePing(t *testing.T) {
	testenv.RequireRoot(t)
	v, l := nsRig(t, EndpointOptions{})
	s := newStack(t, l.Endpoint, stack4, stack6)
	pingBoth(t, v, l)

	// Teardown: nothing of ns mode stays on the veth.
	s.RemoveNIC(1)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := bpf.List(bpf.ListOptions{Netns: v.NSA, Iface: v.A})
	if err != nil || len(st) != 1 || st[0].Mode != bpf.ModeNone {
		t.Errorf("XDP on %s after Close: %+v, %v; want none", v.A, st, err)
	}
	id, err := bpf.NetnsID(v.NSA)
	if err != nil {
		t.Fatal(err)
	}
	if d := bpf.PinDir(bpf.DefaultPinRoot, id, v.A); exists(d) {
		t.Errorf("pin directory %s after Close", d)
	}
	for q := 0; q < 2; q++ {
		if err := bindProbe(v.NSA, v.A, q); err != nil {
			t.Errorf("queue %d after Close: %v", q, err)
		}
	}
	if k := xdpSocketsHeld(t); k != 0 {
		t.Errorf("%d AF_XDP sockets still open after Close", k)
	}
}

// TestNSModeNeedWakeup runs ns mode with XDP_USE_NEED_WAKEUP
// (--xdp-need-wakeup): in copy mode the tx ring always asks for a kick
// and the fill ring never does, so it must work the same.
func TestNSModeNeedWakeup(t *testing.T) {
	testenv.RequireRoot(t)
	v := newVethQ(t, 2)
	testenv.IP(t, v.NSB, "addr", "add", peer4+"/24", "dev", v.B)
	testenv.IP(t, v.NSB, "addr", "add", peer6+"/64", "dev", v.B, "nodad")
	l, err := OpenNS(NSOptions{Netns: v.NSA, Iface: v.A, LinkOptions: LinkOptions{
		Sockets:  Options{NeedWakeup: true},
		Endpoint: EndpointOptions{RXChecksumOffload: true, GRO: true, GSOMaxSize: 1 << 16}}})
	l = mustLink(t, l, err)
	if !l.Sockets.Options().NeedWakeup {
		t.Fatal("sockets not bound with need_wakeup")
	}
	s := newStack(t, l.Endpoint, stack4, stack6)
	pingBoth(t, v, l)
	transfer(t, s, stack4.Addr(), v.NSB)
}

func pingBoth(t *testing.T, v *testenv.Veth, l *Link) {
	t.Helper()
	if !ping(t, v.NSB, stack4.Addr().String(), 3) {
		t.Error("IPv4 ping to the stack failed")
	}
	if !ping(t, v.NSB, stack6.Addr().String(), 3) {
		t.Error("IPv6 ping to the stack failed")
	}
	st, _ := bpf.List(bpf.ListOptions{Netns: v.NSA, Iface: v.A})
	if len(st) != 1 || st[0].ProgramName != "xdp_redirect" {
		t.Errorf("XDP on %s: %+v, want the redirect program", v.A, st)
	}
}

// TestRedirectMode: the stack owns 192.0.2.1 and 2001:db8::1 on the host's
// NIC next to the host's own .2 and ::2. It answers ARP and neighbour
// solicitations for its addresses, pings, and moves 100 MB each way with a
// LAN machine over both families, with checksums verified (no RX offload);
// a connection to the host's control port still reaches the host. Closing
// the link leaves nothing behind.
func TestRedirectMode(t *testing.T) {
	testenv.RequireRoot(t)
	n := newLAN(t)
	l, err := OpenRedirect(RedirectOptions{Netns: n.H, Iface: n.NIC,
		Addrs:       []netip.Addr{stack4.Addr(), stack6.Addr()},
		LinkOptions: LinkOptions{Endpoint: EndpointOptions{GRO: true, GSOMaxSize: 1 << 16}}})
	l = mustLink(t, l, err)
	s := newStack(t, l.Endpoint, stack4, stack6)
	if l.Sockets.Len() != 2 {
		t.Errorf("%d sockets, want one per queue of %s (2)", l.Sockets.Len(), n.NIC)
	}
	if got, want := l.Endpoint.LinkAddress(), l.Sockets.HardwareAddr(); string(got) != string(want) {
		t.Errorf("endpoint MAC %v, want the NIC's %v", got, want)
	}
	for _, a := range []string{stack4.Addr().String(), stack6.Addr().String()} {
		if !ping(t, n.L, a, 3) {
			t.Errorf("ping %s (the stack) from the LAN failed", a)
		}
	}
	for _, a := range []string{n.host4, n.host6} {
		if !ping(t, n.L, a, 2) {
			t.Errorf("ping %s (the host) from the LAN failed", a)
		}
		if !n.controlReachesHost(t, a) {
			t.Errorf("control port on %s did not reach the host stack", a)
		}
	}
	for _, addr := range []netip.Prefix{stack4, stack6} {
		t.Run(addr.Addr().String(), func(t *testing.T) {
			transfer(t, s, addr.Addr(), n.L)
		})
	}
	if st := l.Endpoint.Stats(); st.RxErrors != 0 {
		t.Errorf("%d receive errors: %+v", st.RxErrors, st)
	}

	// Teardown: the NIC goes first (as a stack owner does), then the link.
	s.RemoveNIC(1)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if left := n.waitNoLeftovers(t, "", 5*time.Second); len(left) > 0 {
		t.Errorf("after Close: %v", left)
	}
	if k := xdpSocketsHeld(t); k != 0 {
		t.Errorf("%d AF_XDP sockets still open after Close", k)
	}
	if !ping(t, n.L, n.host4, 1) {
		t.Error("the host is unreachable after Close")
	}
}

// TestTunnelMode: the stack takes over the NIC's addresses (192.0.2.2,
// 2001:db8::2) through the tunnel; the host keeps control traffic (port
// 2222). Ping and 100 MB each way over both families reach the stack, the
// control port reaches the host, and Close leaves nothing.
func TestTunnelMode(t *testing.T) {
	testenv.RequireRoot(t)
	n := newLAN(t)
	// The host's replies on the control port need the LAN machine's MAC,
	// and ARP replies are the stack's now, like all non-control traffic:
	// static entries stand in, as an operator would set them.
	lanMAC := ifaceMACString(t, n.L, n.LanIf)
	testenv.IP(t, n.H, "neigh", "replace", n.lan4, "lladdr", lanMAC, "dev", n.NIC)
	testenv.IP(t, n.H, "neigh", "replace", n.lan6, "lladdr", lanMAC, "dev", n.NIC)
	l, err := OpenTunnel(TunnelOptions{Netns: n.H, Iface: n.NIC, PassPorts: []uint16{controlPort},
		LinkOptions: LinkOptions{Endpoint: EndpointOptions{GRO: true, GSOMaxSize: 1 << 16}}})
	l = mustLink(t, l, err)
	take4 := netip.PrefixFrom(mustAddr(n.host4), 24)
	take6 := netip.PrefixFrom(mustAddr(n.host6), 64)
	s := newStack(t, l.Endpoint, take4, take6)
	if got, want := l.Endpoint.LinkAddress(), l.Sockets.HardwareAddr(); string(got) != string(want) {
		t.Errorf("endpoint MAC %v, want the NIC's %v", got, want)
	}
	for _, a := range []string{n.host4, n.host6} {
		if !ping(t, n.L, a, 3) {
			t.Errorf("ping %s (the stack, through the tunnel) failed", a)
		}
		if !n.controlReachesHost(t, a) {
			t.Errorf("control port on %s did not reach the host stack", a)
		}
	}
	for _, addr := range []netip.Prefix{take4, take6} {
		t.Run(addr.Addr().String(), func(t *testing.T) {
			transfer(t, s, addr.Addr(), n.L)
		})
	}
	if st := l.Endpoint.Stats(); st.RxErrors != 0 {
		t.Errorf("%d receive errors: %+v", st.RxErrors, st)
	}
	s.RemoveNIC(1)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if left := n.waitNoLeftovers(t, l.Veth, 5*time.Second); len(left) > 0 {
		t.Errorf("after Close: %v", left)
	}
	if k := xdpSocketsHeld(t); k != 0 {
		t.Errorf("%d AF_XDP sockets still open after Close", k)
	}
}

func ifaceMACString(t *testing.T, ns, dev string) string {
	_, mac := ifaceInfo(t, ns, dev)
	return mac.String()
}

// TestDeviceRemoved: when the veth under an endpoint goes away, each reader
// notices within its idle poll, reports through ClosedFunc and stops; Close
// then tears down what is left without error.
func TestDeviceRemoved(t *testing.T) {
	testenv.RequireRoot(t)
	closed := make(chan tcpip.Error, 4)
	v, l := nsRig(t, EndpointOptions{ClosedFunc: func(e tcpip.Error) { closed <- e }})
	newStack(t, l.Endpoint, stack4)
	testenv.IP(t, v.NSA, "link", "del", v.A)
	for i := 0; i < l.Sockets.Len(); i++ {
		select {
		case e := <-closed:
			if e == nil {
				t.Errorf("reader %d reported a nil error", i)
			}
			t.Logf("reader %d: %v", i, e)
		case <-time.After(5 * time.Second):
			t.Fatalf("reader %d did not report the device's removal", i)
		}
	}
	done := make(chan struct{})
	go func() { l.Endpoint.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("readers still running after the device went away")
	}
}
