package main

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sluicenet/sluice/bpf"
	"github.com/sluicenet/sluice/internal/testenv"
)

// TestXDPTunnel builds the tunnel topology on two veth pairs:
//
//	P: va 192.0.2.1 ==== vb (H's "NIC", 192.0.2.2 for control traffic)
//	H: t0 ==== t1 in S, the "user-space stack" side, 192.0.2.2 and
//	   2001:db8::2 with vb's MAC, as a stack that takes over a NIC has
//
// tunnel-host on vb sends everything to t0 except TCP to port 2222;
// tunnel-veth on t0 sends S's frames out of vb. Ping (v4 and v6) from P
// is answered by S through both redirects; TCP to 2222 reaches H's stack,
// TCP to 2223 reaches S's even though H listens there too.
func TestXDPTunnel(t *testing.T) {
	root := testPinRoot(t)
	v := testenv.NewVeth(t)
	p, h := v.NSA, v.NSB
	s := testenv.NewNS(t)
	testenv.IP(t, h, "link", "add", "t0", "type", "veth", "peer", "name", "t1", "netns", s)
	nicMAC := mac(t, h, v.B)
	testenv.IP(t, s, "link", "set", "t1", "address", nicMAC)
	testenv.IP(t, h, "link", "set", "t0", "up")
	testenv.IP(t, s, "link", "set", "t1", "up")
	// Frames must carry full checksums, as frames from a real wire do: a
	// veth's CHECKSUM_PARTIAL skb that native XDP redirects becomes an
	// xdp_frame with nothing left to finish the checksum, and the
	// receiver drops the segment. So P (standing in for the wire) and S
	// (standing in for a user-space stack, which computes checksums
	// itself) checksum in software. ICMP is always checksummed in
	// software, which is why ping works regardless and TCP does not.
	testenv.RequireTool(t, "ethtool")
	testenv.Exec(t, s, "ethtool", "-K", "t1", "tx", "off")
	testenv.Exec(t, p, "ethtool", "-K", v.A, "tx", "off")
	testenv.IP(t, p, "addr", "add", "192.0.2.1/24", "dev", v.A)
	testenv.IP(t, p, "addr", "add", "2001:db8::1/64", "dev", v.A, "nodad")
	testenv.IP(t, h, "addr", "add", "192.0.2.2/24", "dev", v.B)
	testenv.IP(t, s, "addr", "add", "192.0.2.2/24", "dev", "t1")
	testenv.IP(t, s, "addr", "add", "2001:db8::2/64", "dev", "t1", "nodad")
	// H's own replies need P's MAC, and ARP replies to H are redirected
	// to S like all non-control traffic: a static entry stands in.
	testenv.IP(t, h, "neigh", "replace", "192.0.2.1", "lladdr", mac(t, p, v.A), "dev", v.B)

	out := mustXDP(t, root, "attach", "--netns", h, "-i", v.B, "-p", "tunnel", "--peer", "t0", "--pass-port", "2222", "--mode", "driver")
	for _, want := range []string{"attached tunnel-host to vb", "attached tunnel-veth to t0", "attached pass (peer helper", "to t1", "to va"} {
		if !strings.Contains(out, want) {
			t.Errorf("attach output lacks %q:\n%s", want, out)
		}
	}

	if !ping(t, p, "192.0.2.2", 3) {
		t.Error("IPv4 ping through the tunnel fails")
	}
	if !ping(t, p, "2001:db8::2", 3) {
		t.Error("IPv6 ping through the tunnel fails")
	}

	hostL := listen(t, h, "2222", "2223")
	stackL := listen(t, s, "2223")
	if who := dialAndSee(t, p, "192.0.2.2:2222", hostL, stackL); who != "host" {
		t.Errorf("control port 2222 reached %s, want the host stack", who)
	}
	if who := dialAndSee(t, p, "192.0.2.2:2223", hostL, stackL); who != "stack" {
		t.Errorf("port 2223 reached %s, want the stack behind the tunnel", who)
	}

	hs := status(t, root, h, v.B)
	vs := status(t, root, h, "t0")
	if hs.Counters == nil || hs.Counters.Redirected.Packets == 0 || hs.Counters.Passed.Packets == 0 {
		t.Errorf("tunnel-host counters %+v, want redirected and passed frames", hs.Counters)
	}
	if vs.Counters == nil || vs.Counters.Redirected.Packets == 0 {
		t.Errorf("tunnel-veth counters %+v, want redirected frames", vs.Counters)
	}
	if hs.Mode != bpf.ModeDriver || vs.Mode != bpf.ModeDriver {
		t.Errorf("modes %s/%s, want driver", hs.Mode, vs.Mode)
	}

	// Detaching the veth half removes the whole tunnel, helpers included.
	out = mustXDP(t, root, "detach", "--netns", h, "-i", "t0")
	if n := strings.Count(out, "removed "); n != 4 {
		t.Errorf("detach removed %d directories, want 4 (vb, t0 and the two peer helpers):\n%s", n, out)
	}
	for _, x := range []struct{ ns, dev string }{{h, v.B}, {h, "t0"}, {s, "t1"}, {p, v.A}} {
		if st := status(t, root, x.ns, x.dev); st.Mode != bpf.ModeNone {
			t.Errorf("%s after detach: %+v, want nothing attached", x.dev, st)
		}
	}
	noPins(t, root)
}

// listen opens TCP listeners on the given ports in ns, all addresses.
func listen(t *testing.T, ns string, ports ...string) map[string]net.Listener {
	t.Helper()
	ls := map[string]net.Listener{}
	testenv.Do(t, ns, func() error {
		for _, port := range ports {
			l, err := net.Listen("tcp4", ":"+port)
			if err != nil {
				return err
			}
			t.Cleanup(func() { l.Close() })
			ls[port] = l
		}
		return nil
	})
	return ls
}

// dialAndSee connects from ns to addr and reports whose listener accepted
// the connection: "host", "stack", or "nobody".
func dialAndSee(t *testing.T, ns, addr string, host, stack map[string]net.Listener) string {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	got := make(chan string, 2)
	for who, ls := range map[string]map[string]net.Listener{"host": host, "stack": stack} {
		l, ok := ls[port]
		if !ok {
			continue
		}
		go func() {
			l.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err == nil && line == "hello\n" {
				got <- who
			}
		}()
	}
	var c net.Conn
	testenv.Do(t, ns, func() error {
		var err error
		c, err = net.DialTimeout("tcp4", addr, 5*time.Second)
		return err
	})
	defer c.Close()
	fmt.Fprintf(c, "hello\n")
	select {
	case who := <-got:
		return who
	case <-time.After(5 * time.Second):
		return "nobody"
	}
}
