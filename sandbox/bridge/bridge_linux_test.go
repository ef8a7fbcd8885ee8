package bridge_test

import (
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/testenv"
	"github.com/sluicenet/sluice/sandbox/bridge"
)

// topo is three namespaces in a row: a client, the bridge, a server. The
// client's c0 is joined to the bridge's a0, the bridge's b0 to the server's
// s0; client and server share one subnet, so frames cross the bridge as on
// a switch.
type topo struct {
	client, br, server string
}

const (
	clientIP  = "10.77.0.1"
	serverIP  = "10.77.0.2"
	clientIP6 = "fd77::1"
	serverIP6 = "fd77::2"
)

func newTopo(t *testing.T) topo {
	t.Helper()
	tp := topo{client: testenv.NewNS(t), br: testenv.NewNS(t), server: testenv.NewNS(t)}
	testenv.IP(t, tp.client, "link", "add", "c0", "type", "veth", "peer", "name", "a0", "netns", tp.br)
	testenv.IP(t, tp.server, "link", "add", "s0", "type", "veth", "peer", "name", "b0", "netns", tp.br)
	testenv.IP(t, tp.client, "addr", "add", clientIP+"/24", "dev", "c0")
	testenv.IP(t, tp.client, "addr", "add", clientIP6+"/64", "dev", "c0", "nodad")
	testenv.IP(t, tp.server, "addr", "add", serverIP+"/24", "dev", "s0")
	testenv.IP(t, tp.server, "addr", "add", serverIP6+"/64", "dev", "s0", "nodad")
	for _, d := range []string{"a0", "b0"} {
		// The bridge's namespace must stay silent on its devices.
		testenv.Exec(t, tp.br, "sysctl", "-q", "-w", "net.ipv6.conf."+d+".disable_ipv6=1")
		testenv.IP(t, tp.br, "link", "set", d, "up")
	}
	testenv.IP(t, tp.client, "link", "set", "c0", "up")
	testenv.IP(t, tp.server, "link", "set", "s0", "up")
	for _, end := range []struct{ ns, dev string }{{tp.client, "c0"}, {tp.br, "a0"}, {tp.br, "b0"}, {tp.server, "s0"}} {
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(testenv.IP(t, end.ns, "-o", "link", "show", "dev", end.dev), "state UP") {
			if time.Now().After(deadline) {
				t.Fatalf("%s in %s not up after 10s", end.dev, end.ns)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return tp
}

// start runs a bridge between a0 and b0 with o (its sides filled in),
// stopped in t.Cleanup.
func (tp topo) start(t *testing.T, o bridge.Options, channels int) *bridge.Bridge {
	t.Helper()
	var fds [2][]int
	for i, dev := range []string{"a0", "b0"} {
		var err error
		fds[i], err = dataplane.OpenPacketSockets(dataplane.SocketOptions{
			NetNS: tp.br, Interface: dev, VnetHdr: true,
			RcvBufBytes: 4 << 20, SndBufBytes: 4 << 20,
		}, channels)
		if err != nil {
			t.Fatal(err)
		}
	}
	o.A = bridge.Side{FDs: fds[0], Name: "a0"}
	o.B = bridge.Side{FDs: fds[1], Name: "b0"}
	b, err := bridge.New(o)
	if err != nil {
		t.Fatal(err)
	}
	b.Start()
	t.Cleanup(func() {
		b.Close()
		b.Wait()
		for _, fs := range fds {
			for _, fd := range fs {
				unix.Close(fd)
			}
		}
	})
	return b
}

// listenIn opens a listener inside ns.
func listenIn(t *testing.T, ns, network, addr string) net.Listener {
	t.Helper()
	var l net.Listener
	testenv.Do(t, ns, func() (err error) { l, err = net.Listen(network, addr); return err })
	t.Cleanup(func() { l.Close() })
	return l
}

func dialIn(t *testing.T, ns, network, addr string) (net.Conn, error) {
	t.Helper()
	var c net.Conn
	var err error
	testenv.Do(t, ns, func() error {
		d := net.Dialer{Timeout: 20 * time.Second}
		c, err = d.Dial(network, addr)
		return nil
	})
	return c, err
}

var seed = [32]byte{'b', 'r', 'i', 'd', 'g', 'e'}

// transfer sends size bytes from the sender's end to the receiver's over a
// fresh TCP connection from client to server (upload: the client sends)
// and returns both ends' SHA-256.
func (tp topo) transfer(t *testing.T, server string, size int64, upload bool) (sent, got [32]byte) {
	t.Helper()
	l := listenIn(t, tp.server, "tcp", net.JoinHostPort(server, "0"))
	var wg sync.WaitGroup
	var srvErr error
	var srvSum [32]byte
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := l.Accept()
		if err != nil {
			srvErr = err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(90 * time.Second))
		srvSum, srvErr = pump(c, size, !upload)
	}()
	c, err := dialIn(t, tp.client, "tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("dial %v: %v", l.Addr(), err)
	}
	c.SetDeadline(time.Now().Add(90 * time.Second))
	cliSum, cliErr := pump(c, size, upload)
	c.Close()
	wg.Wait()
	if cliErr != nil || srvErr != nil {
		t.Fatalf("transfer: client %v, server %v", cliErr, srvErr)
	}
	if upload {
		return cliSum, srvSum
	}
	return srvSum, cliSum
}

// pump sends size deterministic bytes on c (send) or reads until EOF, and
// returns the SHA-256 of what it sent or read.
func pump(c net.Conn, size int64, send bool) ([32]byte, error) {
	h := sha256.New()
	var err error
	if send {
		_, err = io.Copy(io.MultiWriter(c, h), io.LimitReader(rand.NewChaCha8(seed), size))
		if tc, ok := c.(*net.TCPConn); ok && err == nil {
			err = tc.CloseWrite()
		}
		// Wait for the peer's close, so the data is all delivered.
		_, _ = io.Copy(io.Discard, c)
	} else {
		var n int64
		n, err = io.Copy(h, c)
		if err == nil && n != size {
			err = errors.New("short read")
		}
	}
	return [32]byte(h.Sum(nil)), err
}

// gsoWatcher counts super-frames arriving at the server's s0, read from a
// packet socket with PACKET_VNET_HDR: a frame the bridge wrote whole has a
// GSO type and is longer than the MTU, one it (or the kernel) cut is not.
type gsoWatcher struct {
	fd      int
	big     atomic.Uint64 // GSO frames of at least 16 KiB
	largest atomic.Int64
	done    chan struct{}
}

func watchGSO(t *testing.T, ns, dev string) *gsoWatcher {
	t.Helper()
	fd, err := dataplane.OpenPacketSocket(dataplane.SocketOptions{NetNS: ns, Interface: dev, VnetHdr: true, RcvBufBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	w := &gsoWatcher{fd: fd, done: make(chan struct{})}
	// Only what arrives at the device: the server's own super-frames
	// going out would prove nothing.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		t.Fatal(err)
	}
	tv := unix.Timeval{Usec: 100000}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	go func() {
		defer close(w.done)
		buf := make([]byte, 1<<17)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil || n < dataplane.VnetHdrLen {
				continue
			}
			h, _ := dataplane.ParseVnetHdr(buf[:n])
			l := int64(n - dataplane.VnetHdrLen)
			if h.IsGSO() && l >= 16<<10 {
				w.big.Add(1)
			}
			if l > w.largest.Load() {
				w.largest.Store(l)
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-w.done; unix.Close(fd) })
	return w
}

// TestForwardTCPSHA256 moves 100 MB each way between kernel TCP sockets
// through the bridge, in each dispatch mode, and checks the bytes, that
// super-frames crossed whole (the server's device received GSO frames of
// 16 KiB and more, which the MTU-1500 veth could carry no other way) and
// that the bridge counted them.
func TestForwardTCPSHA256(t *testing.T) {
	testenv.RequireRoot(t)
	const size = 100 << 20
	for _, tc := range []struct {
		mode     dataplane.Mode
		channels int
	}{{dataplane.Readv, 1}, {dataplane.RecvMMsg, 1}, {dataplane.PacketMMap, 1}, {dataplane.RecvMMsg, 2}} {
		t.Run(tc.mode.String()+"/channels="+string(rune('0'+tc.channels)), func(t *testing.T) {
			tp := newTopo(t)
			b := tp.start(t, bridge.Options{Mode: tc.mode}, tc.channels)
			w := watchGSO(t, tp.server, "s0")
			for _, server := range []string{serverIP, serverIP6} {
				for _, upload := range []bool{true, false} {
					sent, got := tp.transfer(t, server, size, upload)
					if sent != got {
						t.Fatalf("server %s upload=%v: SHA-256 sent %x, received %x", server, upload, sent, got)
					}
				}
			}
			s := b.Stats()
			if s.Egress.Bytes < 2*size || s.Ingress.Bytes < 2*size {
				t.Errorf("bridge forwarded %d bytes out and %d in, want at least %d each way", s.Egress.Bytes, s.Ingress.Bytes, 2*size)
			}
			if s.Egress.GSOFrames == 0 || s.Ingress.GSOFrames == 0 {
				t.Errorf("bridge forwarded %d GSO frames out and %d in, want some each way", s.Egress.GSOFrames, s.Ingress.GSOFrames)
			}
			if w.big.Load() == 0 {
				t.Errorf("the server's s0 received no GSO frame of 16 KiB or more (largest %d bytes): super-frames were cut", w.largest.Load())
			}
			if s.FlowsAllowed < 4 || s.FlowsDenied != 0 {
				t.Errorf("flows allowed %d, denied %d; want 4 or more allowed, none denied", s.FlowsAllowed, s.FlowsDenied)
			}
			t.Logf("stats: %+v; modes %v; largest frame at s0 %d bytes, %d GSO frames >= 16 KiB", s, fmtModes(b), w.largest.Load(), w.big.Load())
		})
	}
}

func fmtModes(b *bridge.Bridge) string {
	a, bm := b.Modes()
	var s []string
	for _, m := range append(a, bm...) {
		s = append(s, m.String())
	}
	return strings.Join(s, ",")
}

// TestPolicyRefusesAndDrops denies one TCP port and one UDP port: the
// client's connect fails at once with ECONNREFUSED (the bridge's RST), its
// connected UDP socket gets ECONNREFUSED (the bridge's port unreachable),
// an allowed flow still works, and datagrams the server sends to the client
// unasked are dropped and counted.
func TestPolicyRefusesAndDrops(t *testing.T) {
	testenv.RequireRoot(t)
	tp := newTopo(t)
	var decided sync.Map // flows Decide was asked about
	b := tp.start(t, bridge.Options{Mode: dataplane.RecvMMsg, Sources: []netip.Prefix{
		netip.MustParsePrefix("10.77.0.0/28"), netip.MustParsePrefix("fd77::/64"),
	}, Decide: func(f bridge.Flow) bool {
		decided.Store(f.String(), true)
		return f.Dst.Port() != 9
	}}, 1)
	_ = listenIn(t, tp.server, "tcp", net.JoinHostPort(serverIP, "9"))
	for _, srv := range []string{serverIP, serverIP6} {
		c, err := dialIn(t, tp.client, "tcp", net.JoinHostPort(srv, "9"))
		if c != nil {
			c.Close()
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("TCP to denied %s:9: got %v, want ECONNREFUSED", srv, err)
		}
		u, err := dialIn(t, tp.client, "udp", net.JoinHostPort(srv, "9"))
		if err != nil {
			t.Fatal(err)
		}
		u.SetDeadline(time.Now().Add(20 * time.Second))
		_, _ = u.Write([]byte("ping"))
		var buf [16]byte
		_, err = u.Read(buf[:])
		u.Close()
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("UDP to denied %s:9: got %v, want ECONNREFUSED", srv, err)
		}
	}
	// An allowed flow.
	sent, got := tp.transfer(t, serverIP, 1<<20, true)
	if sent != got {
		t.Errorf("allowed flow: SHA-256 mismatch")
	}
	// Unsolicited datagrams from the server to a client socket.
	cl := listenUDP(t, tp.client, net.JoinHostPort(clientIP, "0"))
	var su net.Conn
	testenv.Do(t, tp.server, func() (err error) { su, err = net.Dial("udp", cl.LocalAddr().String()); return err })
	defer su.Close()
	before := b.Stats().Ingress.Dropped
	for range 5 {
		if _, err := su.Write([]byte("unasked")); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for b.Stats().Ingress.Dropped < before+5 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if d := b.Stats().Ingress.Dropped - before; d < 5 {
		t.Errorf("ingress dropped %d of 5 unsolicited datagrams", d)
	}
	cl.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if n, _, err := cl.ReadFrom(make([]byte, 64)); err == nil {
		t.Errorf("the client received %d bytes of an unsolicited datagram", n)
	}
	s := b.Stats()
	if s.FlowsDenied != 4 || s.Egress.Refused < 4 || s.Egress.Answers < 4 {
		t.Errorf("stats %+v: want 4 flows denied, and at least 4 frames refused and answered", s)
	}
	// A spoofed source: dropped before the policy sees it.
	testenv.IP(t, tp.client, "addr", "add", "10.77.0.99/32", "dev", "c0")
	before = b.Stats().Egress.Dropped
	var spoof net.Conn
	testenv.Do(t, tp.client, func() (err error) {
		spoof, err = (&net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP("10.77.0.99")}}).Dial("udp", net.JoinHostPort(serverIP, "7"))
		return err
	})
	defer spoof.Close()
	for range 3 {
		_, _ = spoof.Write([]byte("spoofed"))
	}
	deadline = time.Now().Add(20 * time.Second)
	for b.Stats().Egress.Dropped < before+3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if d := b.Stats().Egress.Dropped - before; d < 3 {
		t.Errorf("egress dropped %d of 3 datagrams from a source outside Sources", d)
	}
	n := 0
	decided.Range(func(k, _ any) bool { n++; return true })
	if n != 5 {
		t.Errorf("Decide saw %d flows, want 5 (two TCP, two UDP denied, one allowed)", n)
	}
}

func listenUDP(t *testing.T, ns, addr string) net.PacketConn {
	t.Helper()
	var c net.PacketConn
	testenv.Do(t, ns, func() (err error) { c, err = net.ListenPacket("udp", addr); return err })
	t.Cleanup(func() { c.Close() })
	return c
}

// TestHookSeesAndDrops checks the hook sees frames both ways, with whole
// super-frames, that a hook's Drop stops a flow, and that a panic while a
// frame is handled costs that frame only.
func TestHookSeesAndDrops(t *testing.T) {
	testenv.RequireRoot(t)
	tp := newTopo(t)
	var out, in, dropped atomic.Uint64
	var largest atomic.Int64
	b := tp.start(t, bridge.Options{Mode: dataplane.RecvMMsg, Hook: func(dir bridge.Direction, f *bridge.Frame) bridge.Verdict {
		if n := len(f.AppendTo(nil)); n != f.Len() {
			t.Errorf("AppendTo gave %d bytes of a %d-byte frame", n, f.Len())
		}
		if int64(f.Len()) > largest.Load() {
			largest.Store(int64(f.Len()))
		}
		if dir == bridge.Egress {
			out.Add(1)
		} else {
			in.Add(1)
		}
		// Drop UDP to port 7 (bytes 36..37 of an untagged IPv4 frame);
		// panic on UDP to port 13, as a parser bug would.
		h := f.Head()
		if len(h) > 37 && h[12] == 0x08 && h[13] == 0 && h[23] == 17 && h[36] == 0 && h[37] == 13 {
			panic("hook fault")
		}
		if len(h) > 37 && h[12] == 0x08 && h[13] == 0 && h[23] == 17 && h[36] == 0 && h[37] == 7 {
			dropped.Add(1)
			return bridge.Drop
		}
		return bridge.Pass
	}}, 1)
	// Faults first: each costs its frame only, and counts.
	f13, err := dialIn(t, tp.client, "udp", net.JoinHostPort(serverIP, "13"))
	if err != nil {
		t.Fatal(err)
	}
	defer f13.Close()
	for range 3 {
		_, _ = f13.Write([]byte("fault"))
	}
	deadline0 := time.Now().Add(20 * time.Second)
	for b.Stats().A.Faults < 3 && time.Now().Before(deadline0) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := b.Stats().A.Faults; n < 3 {
		t.Errorf("side A counted %d faults for 3 frames whose hook panicked", n)
	}
	sent, got := tp.transfer(t, serverIP, 8<<20, true)
	if sent != got {
		t.Fatal("SHA-256 mismatch")
	}
	if out.Load() == 0 || in.Load() == 0 || largest.Load() < 16<<10 {
		t.Errorf("hook saw %d frames out, %d in, largest %d bytes; want both ways and a super-frame", out.Load(), in.Load(), largest.Load())
	}
	srv := listenUDP(t, tp.server, net.JoinHostPort(serverIP, "7"))
	u, err := dialIn(t, tp.client, "udp", net.JoinHostPort(serverIP, "7"))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	for range 3 {
		_, _ = u.Write([]byte("x"))
	}
	deadline := time.Now().Add(20 * time.Second)
	for dropped.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if dropped.Load() < 3 || b.Stats().Egress.Dropped < 3 {
		t.Errorf("hook dropped %d, bridge counted %d; want 3", dropped.Load(), b.Stats().Egress.Dropped)
	}
	srv.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, _, err := srv.ReadFrom(make([]byte, 16)); err == nil {
		t.Error("a datagram the hook dropped reached the server")
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	if _, err := bridge.New(bridge.Options{}); err == nil || !strings.Contains(err.Error(), "no descriptors") {
		t.Errorf("New without descriptors: got %v", err)
	}
	if _, err := bridge.New(bridge.Options{A: bridge.Side{FDs: []int{0}}, B: bridge.Side{FDs: []int{0}}, MaxFlows: -1}); err == nil || !strings.Contains(err.Error(), "MaxFlows") {
		t.Errorf("New with MaxFlows -1: got %v", err)
	}
}
