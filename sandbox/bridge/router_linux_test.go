package bridge_test

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/netns"
	"github.com/sluicenet/sluice/internal/testenv"
	"github.com/sluicenet/sluice/sandbox/bridge"
)

func openNS(t *testing.T, name string) int {
	t.Helper()
	fd, err := unix.Open(netns.Path(name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func sysctl(t *testing.T, ns, key string) string {
	t.Helper()
	return strings.TrimSpace(testenv.Exec(t, ns, "sysctl", "-n", key))
}

// TestRouterEndToEnd builds the sandbox's topology by hand: a client
// namespace on a veth to the stack namespace, the bridge there, and the
// kernel side into an uplink namespace that routes to a server. The client
// reaches the server over IPv4 and IPv6 through its gateway (the uplink
// namespace's kernel), masqueraded; after Close the uplink namespace has
// no veth, no table, and its forwarding sysctls as before.
func TestRouterEndToEnd(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "nft")
	client, stackNS, uplink, server := testenv.NewNS(t), testenv.NewNS(t), testenv.NewNS(t), testenv.NewNS(t)
	testenv.IP(t, client, "link", "add", "eth0", "type", "veth", "peer", "name", "a0", "netns", stackNS)
	testenv.IP(t, client, "addr", "add", "10.0.2.100/24", "dev", "eth0")
	testenv.IP(t, client, "addr", "add", "fd00:51ce::100/64", "dev", "eth0", "nodad")
	testenv.IP(t, client, "link", "set", "eth0", "up")
	testenv.IP(t, client, "route", "add", "default", "via", "10.0.2.2")
	testenv.IP(t, client, "-6", "route", "add", "default", "via", "fd00:51ce::2")
	testenv.Exec(t, stackNS, "sysctl", "-q", "-w", "net.ipv6.conf.a0.disable_ipv6=1")
	testenv.IP(t, stackNS, "link", "set", "a0", "up")
	testenv.IP(t, uplink, "link", "add", "up0", "type", "veth", "peer", "name", "s0", "netns", server)
	testenv.IP(t, uplink, "addr", "add", "10.88.0.1/24", "dev", "up0")
	testenv.IP(t, uplink, "addr", "add", "fd88::1/64", "dev", "up0", "nodad")
	testenv.IP(t, uplink, "link", "set", "up0", "up")
	testenv.IP(t, server, "addr", "add", "10.88.0.2/24", "dev", "s0")
	testenv.IP(t, server, "addr", "add", "fd88::2/64", "dev", "s0", "nodad")
	testenv.IP(t, server, "link", "set", "s0", "up")

	before := [2]string{sysctl(t, uplink, "net.ipv4.ip_forward"), sysctl(t, uplink, "net.ipv6.conf.all.forwarding")}
	r, err := bridge.SetupRouter(bridge.RouterOptions{
		UplinkNS: openNS(t, uplink), StackNS: openNS(t, stackNS), UplinkName: uplink, MTU: 1500,
		Gateways: []netip.Prefix{netip.MustParsePrefix("10.0.2.2/24"), netip.MustParsePrefix("fd00:51ce::2/64")},
	})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			r.Close()
		}
	}()
	if got := sysctl(t, uplink, "net.ipv4.ip_forward") + sysctl(t, uplink, "net.ipv6.conf.all.forwarding"); got != "11" {
		t.Errorf("forwarding in the uplink namespace: %s, want on for both families", got)
	}
	if out := testenv.Exec(t, uplink, "nft", "list", "table", "inet", r.Table); !strings.Contains(out, "masquerade") {
		t.Errorf("table %s has no masquerade:\n%s", r.Table, out)
	}

	var fds [2][]int
	for i, dev := range []string{"a0", r.StackDev} {
		fds[i], err = dataplane.OpenPacketSockets(dataplane.SocketOptions{NetNS: stackNS, Interface: dev, VnetHdr: true}, 1)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fds[i][0])
	}
	b, err := bridge.New(bridge.Options{Mode: dataplane.RecvMMsg, A: bridge.Side{FDs: fds[0], Name: "a0"}, B: bridge.Side{FDs: fds[1], Name: r.StackDev}})
	if err != nil {
		t.Fatal(err)
	}
	b.Start()
	defer func() { b.Close(); b.Wait() }()

	tp := topo{client: client, server: server}
	for _, srv := range []struct{ addr, masq string }{{"10.88.0.2", "10.88.0.1"}, {"fd88::2", "fd88::1"}} {
		l := listenIn(t, server, "tcp", net.JoinHostPort(srv.addr, "0"))
		peer := make(chan string, 1)
		go func() {
			c, err := l.Accept()
			if err != nil {
				peer <- err.Error()
				return
			}
			peer <- c.RemoteAddr().(*net.TCPAddr).IP.String()
			c.Close()
		}()
		c, err := dialIn(t, client, "tcp", l.Addr().String())
		if err != nil {
			t.Fatalf("dial %v through the router: %v", l.Addr(), err)
		}
		c.Close()
		if got := <-peer; got != srv.masq {
			t.Errorf("the server saw the client as %s, want the router's %s (masquerade)", got, srv.masq)
		}
		sent, got := tp.transfer(t, srv.addr, 20<<20, true)
		if sent != got {
			t.Fatalf("%s: SHA-256 mismatch", srv.addr)
		}
	}
	if s := b.Stats(); s.Egress.GSOFrames == 0 {
		t.Errorf("no super-frame crossed the bridge: %+v", s)
	}

	if err := r.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	closed = true
	if out := testenv.IP(t, uplink, "-o", "link", "show"); strings.Contains(out, bridge.UplinkDevPrefix) {
		t.Errorf("a bridge device is left in the uplink namespace:\n%s", out)
	}
	if out := testenv.Exec(t, uplink, "nft", "list", "tables"); strings.Contains(out, bridge.TablePrefix) {
		t.Errorf("a bridge table is left in the uplink namespace:\n%s", out)
	}
	after := [2]string{sysctl(t, uplink, "net.ipv4.ip_forward"), sysctl(t, uplink, "net.ipv6.conf.all.forwarding")}
	if after != before {
		t.Errorf("forwarding sysctls %v after Close, %v before", after, before)
	}
}
