package sandbox_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/testenv"
	"github.com/sluicenet/sluice/sandbox"
)

// The hostile-sandbox test: the sandboxed command is this test binary,
// re-executed as TestHostileHelper, which sends a bounded stream of
// malformed and adversarial frames from a raw AF_PACKET socket on its eth0.
// The test then checks that sluice is still up, that a normal 10 MB TCP
// flow still arrives intact, that nothing the sandbox must not reach saw a
// packet, and that sluice's memory and descriptors stayed bounded.

// hostileDirEnv names the directory the helper and the test synchronise
// through (files: ready, go, flooded, go2).
const hostileDirEnv = "SLUICE_HOSTILE_DIR"

// Addresses of the hostile test, in the uplink namespace: the data server
// on server4 (lo), a server on a denied address, listeners on the uplink
// namespace's loopback.
var (
	hostileDenied = netip.MustParseAddr("10.99.0.2")
	hostileGW4    = netip.MustParseAddr("10.0.2.2")
	hostileSB4    = netip.MustParseAddr("10.0.2.100")
	hostileGW6    = netip.MustParseAddr("fd00:51ce::2")
	hostileSB6    = netip.MustParseAddr("fd00:51ce::100")
)

const (
	hostileDataPort   = 8080
	hostileDeniedTCP  = 9090
	hostileDeniedUDP  = 9091
	hostileLoopTCP    = 7070
	hostileLoopUDP    = 7071
	hostileDataSize   = 10 << 20
	hostileSYNs       = 20000
	hostileRSSGrowMiB = 256 // bound on sluice's RSS growth across the flood
	hostileRSSMaxMiB  = 768 // bound on its peak RSS (VmHWM)
	hostileFDGrow     = 64  // bound on its descriptor growth
)

// procStatus returns VmRSS and VmHWM of pid in KiB and its open descriptors.
func procStatus(t *testing.T, pid int) (rssKiB, hwmKiB int64, fds int) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("sluice (pid %d) is gone: %v", pid, err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			rssKiB, _ = strconv.ParseInt(f[1], 10, 64)
		case "VmHWM:":
			hwmKiB, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("sluice (pid %d) fds: %v", pid, err)
	}
	return rssKiB, hwmKiB, len(ents)
}

// waitFile waits up to d for path to exist, failing early when stop is
// closed (the other side ended).
func waitFile(path string, d time.Duration, stop <-chan struct{}) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-stop:
			return fmt.Errorf("waiting for %s: the other side ended", filepath.Base(path))
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("waiting for %s: timed out after %v", filepath.Base(path), d)
}

// sniffer counts packets on the uplink namespace's lo that go where the
// sandbox must not reach: the denied address, or the loopback listeners.
type sniffer struct {
	fd   int
	hits atomic.Int64
	seen atomic.Int64
	mu   sync.Mutex
	last string
	done chan struct{}
}

func newSniffer(t *testing.T, ns string) *sniffer {
	s := &sniffer{done: make(chan struct{})}
	testenv.Do(t, ns, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		lo, err := net.InterfaceByName("lo")
		if err != nil {
			unix.Close(fd)
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: lo.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		s.fd = fd
		return nil
	})
	tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
	_ = unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	stop := make(chan struct{})
	go func() {
		defer close(s.done)
		buf := make([]byte, 65536)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, _, err := unix.Recvfrom(s.fd, buf, 0)
			if err != nil {
				continue
			}
			s.seen.Add(1)
			if why := forbidden(buf[:n]); why != "" {
				s.hits.Add(1)
				s.mu.Lock()
				s.last = why
				s.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-s.done
		unix.Close(s.fd)
	})
	return s
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// forbidden says why a frame seen on lo is one the sandbox must not cause,
// or "".
func forbidden(b []byte) string {
	if len(b) < 14 {
		return ""
	}
	p := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.NoCopy)
	var dst netip.Addr
	if ip4, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
		dst, _ = netip.AddrFromSlice(ip4.DstIP.To4())
	} else if ip6, ok := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6); ok {
		dst, _ = netip.AddrFromSlice(ip6.DstIP)
	} else {
		return ""
	}
	if dst == hostileDenied {
		return "a packet to the denied address " + dst.String()
	}
	if !dst.IsLoopback() {
		return ""
	}
	var port uint16
	if tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
		port = uint16(tcp.DstPort)
	} else if udp, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok {
		port = uint16(udp.DstPort)
	}
	if port == hostileLoopTCP || port == hostileLoopUDP {
		return fmt.Sprintf("a packet to the uplink's loopback %s port %d", dst, port)
	}
	return ""
}

// counting listeners: TCP accepts and UDP datagrams.
func countTCP(t *testing.T, ns string, addr string, n *atomic.Int64) {
	var l net.Listener
	testenv.Do(t, ns, func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
}

func countUDP(t *testing.T, ns string, addr string, n *atomic.Int64) {
	var c net.PacketConn
	testenv.Do(t, ns, func() error {
		var err error
		c, err = net.ListenPacket("udp", addr)
		return err
	})
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			if _, _, err := c.ReadFrom(buf); err != nil {
				return
			}
			n.Add(1)
		}
	}()
}

// hostileReport is what the helper writes to "flooded": frames per kind,
// and how many of them the sandbox's own kernel refused to send.
type hostileReport struct {
	Sent    map[string]int `json:"sent"`
	Refused map[string]int `json:"refused"`
	Errors  map[string]string
}

func TestHostileSandbox(t *testing.T) {
	testenv.RequireRoot(t)
	if sluiceBin == "" {
		testenv.Skip(t, "requires root to build and run sluice's sandbox")
	}
	ns := serverNS(t)
	testenv.IP(t, ns, "addr", "add", hostileDenied.String()+"/32", "dev", "lo")
	sum := serveData(t, listen(t, ns, netip.AddrPortFrom(server4, hostileDataPort)), hostileDataSize)
	var deniedHits, loopHits atomic.Int64
	countTCP(t, ns, netip.AddrPortFrom(hostileDenied, hostileDeniedTCP).String(), &deniedHits)
	countUDP(t, ns, netip.AddrPortFrom(hostileDenied, hostileDeniedUDP).String(), &deniedHits)
	countTCP(t, ns, fmt.Sprintf("127.0.0.1:%d", hostileLoopTCP), &loopHits)
	countUDP(t, ns, fmt.Sprintf("127.0.0.1:%d", hostileLoopUDP), &loopHits)
	countTCP(t, ns, fmt.Sprintf("[::1]:%d", hostileLoopTCP), &loopHits)
	countUDP(t, ns, fmt.Sprintf("[::1]:%d", hostileLoopUDP), &loopHits)
	sniff := newSniffer(t, ns)

	dir := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	statsFile := filepath.Join(dir, "stats.json")
	corpus := filepath.Join(dir, "corpus")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, sluiceBin, "run", "--uplink-netns", ns, "--mtu", "1500",
		"--deny", hostileDenied.String()+"/32", "--stats-file", statsFile, "--fault-corpus", corpus,
		"--", self, "-test.run", "^TestHostileHelper$", "-test.v", "-test.timeout", "200s")
	cmd.Env = append(os.Environ(), hostileDirEnv+"="+dir)
	var stdout, stderr syncBuf
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var werr error
	go func() { werr = cmd.Wait(); close(exited) }()
	defer func() {
		cancel()
		<-exited
		if t.Failed() {
			t.Logf("sluice stdout:\n%s\nsluice stderr:\n%s", stdout.String(), tail(stderr.String(), 6000))
		}
	}()
	pid := cmd.Process.Pid

	if err := waitFile(filepath.Join(dir, "ready"), 60*time.Second, exited); err != nil {
		t.Fatal(err)
	}
	rss0, _, fds0 := procStatus(t, pid)
	start := time.Now()
	touch(t, filepath.Join(dir, "go"))
	if err := waitFile(filepath.Join(dir, "flooded"), 120*time.Second, exited); err != nil {
		t.Fatal(err)
	}
	floodTime := time.Since(start)
	var rep hostileReport
	b, err := os.ReadFile(filepath.Join(dir, "flooded"))
	if err == nil {
		err = json.Unmarshal(b, &rep)
	}
	if err != nil {
		t.Fatalf("helper's report: %v", err)
	}
	// Let the stack work through what it queued (the flood is faster
	// than it) before measuring.
	time.Sleep(3 * time.Second)
	select {
	case <-exited:
		t.Fatalf("sluice exited during the flood: %v", werr)
	default:
	}
	rss1, hwm1, fds1 := procStatus(t, pid)
	touch(t, filepath.Join(dir, "go2"))
	select {
	case <-exited:
	case <-time.After(3 * time.Minute):
		t.Fatal("the sandbox did not finish the normal flow within 3 minutes")
	}
	if werr != nil {
		t.Errorf("sluice run: %v", werr)
	}

	total, refused := 0, 0
	kinds := make([]string, 0, len(rep.Sent))
	for k, n := range rep.Sent {
		total += n
		refused += rep.Refused[k]
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		t.Logf("frames %-22s sent %6d, refused by the sandbox's kernel %6d %s", k, rep.Sent[k], rep.Refused[k], rep.Errors[k])
	}
	t.Logf("frames sent: %d in %v (%d refused by the sandbox's own kernel before reaching sluice)", total, floodTime.Round(time.Millisecond), refused)
	t.Logf("sluice RSS before %.1f MiB, after %.1f MiB, peak (VmHWM) %.1f MiB; fds before %d, after %d",
		float64(rss0)/1024, float64(rss1)/1024, float64(hwm1)/1024, fds0, fds1)

	// The normal flow after the flood.
	if got := lineValue(stdout.String(), "SHA256 "); got != sum {
		t.Errorf("10 MB download after the flood: SHA-256 %q, want %s", got, sum)
	}
	if rep.Sent["syn-flood"] < hostileSYNs {
		t.Errorf("only %d SYNs sent, want %d", rep.Sent["syn-flood"], hostileSYNs)
	}
	if grow := (rss1 - rss0) / 1024; grow > hostileRSSGrowMiB {
		t.Errorf("sluice's RSS grew by %d MiB during the flood, bound %d MiB", grow, hostileRSSGrowMiB)
	}
	if hwm1/1024 > hostileRSSMaxMiB {
		t.Errorf("sluice's peak RSS %d MiB, bound %d MiB", hwm1/1024, hostileRSSMaxMiB)
	}
	if fds1-fds0 > hostileFDGrow {
		t.Errorf("sluice holds %d descriptors after the flood, %d before: bound +%d", fds1, fds0, hostileFDGrow)
	}

	// Nothing it must not reach was reached. The sniffer and listeners
	// are then shown to see such traffic, so that these zeros mean
	// something.
	if n := deniedHits.Load(); n != 0 {
		t.Errorf("the server on the denied address %s saw %d connections or datagrams", hostileDenied, n)
	}
	if n := loopHits.Load(); n != 0 {
		t.Errorf("the uplink namespace's loopback listeners saw %d connections or datagrams", n)
	}
	if n := sniff.hits.Load(); n != 0 {
		sniff.mu.Lock()
		t.Errorf("%d forbidden packets on the uplink namespace's lo, the last: %s", n, sniff.last)
		sniff.mu.Unlock()
	}
	seen := sniff.seen.Load()
	testenv.Do(t, ns, func() error {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", hostileLoopTCP), 5*time.Second); err == nil {
			c.Close()
		}
		if c, err := net.Dial("udp", netip.AddrPortFrom(hostileDenied, hostileDeniedUDP).String()); err == nil {
			_, _ = c.Write([]byte("control"))
			c.Close()
		}
		return nil
	})
	if !waitUntil(5*time.Second, func() bool {
		return sniff.hits.Load() >= 2 && loopHits.Load() >= 1 && deniedHits.Load() >= 1
	}) {
		t.Errorf("control: the sniffer saw %d forbidden packets, the listeners %d and %d connections: they cannot tell", sniff.hits.Load(), loopHits.Load(), deniedHits.Load())
	}
	t.Logf("uplink lo: %d packets seen during the run, none forbidden", seen)

	// What sluice counted.
	var st sandbox.Report
	if b, err := os.ReadFile(statsFile); err != nil {
		t.Errorf("stats file: %v", err)
	} else if err := json.Unmarshal(b, &st); err != nil {
		t.Errorf("stats file: %v", err)
	}
	for _, s := range st.Interfaces {
		t.Logf("sluice %s: rx packets %d, rx errors %d, rx dropped %d, tx packets %d, faults %d", s.Name, s.RxPackets, s.RxErrors, s.RxDropped, s.TxPackets, s.Faults)
		if s.Faults != 0 {
			files, _ := os.ReadDir(corpus)
			t.Errorf("%s: %d faults contained (a hostile frame made the stack panic); %d frames in the corpus:\n%s", s.Name, s.Faults, len(files), tail(stderr.String(), 4000))
		}
	}
}

// syncBuf is a bytes.Buffer safe for exec's copying goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

func lineValue(out, prefix string) string {
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), prefix); ok {
			return v
		}
	}
	return ""
}

func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cond()
}

// TestHostileHelper is the sandboxed side of TestHostileSandbox; it does
// nothing unless run by it.
func TestHostileHelper(t *testing.T) {
	dir := os.Getenv(hostileDirEnv)
	if dir == "" {
		t.Skip("run by TestHostileSandbox inside the sandbox")
	}
	never := make(chan struct{})
	ifc, err := net.InterfaceByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	// A first connection resolves the gateway's MAC.
	c, err := net.DialTimeout("tcp", netip.AddrPortFrom(server4, hostileDataPort).String(), 30*time.Second)
	if err != nil {
		t.Fatalf("first connection: %v", err)
	}
	c.Close()
	gwMAC := arpEntry(t, hostileGW4)
	touch(t, filepath.Join(dir, "ready"))
	if err := waitFile(filepath.Join(dir, "go"), 60*time.Second, never); err != nil {
		t.Fatal(err)
	}

	h := newHostileSender(t, ifc, gwMAC)
	h.flood()
	b, _ := json.Marshal(hostileReport{Sent: h.sent, Refused: h.refused, Errors: h.errs})
	if err := os.WriteFile(filepath.Join(dir, "flooded.tmp"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "flooded.tmp"), filepath.Join(dir, "flooded")); err != nil {
		t.Fatal(err)
	}
	if err := waitFile(filepath.Join(dir, "go2"), 60*time.Second, never); err != nil {
		t.Fatal(err)
	}
	// The normal flow: 10 MB over HTTP, a few tries within a minute
	// (connections of the flood may still be draining).
	deadline := time.Now().Add(time.Minute)
	for try := 1; ; try++ {
		got, err := download(fmt.Sprintf("http://%s/data", netip.AddrPortFrom(server4, hostileDataPort)))
		if err == nil {
			fmt.Printf("\nSHA256 %s\n", got)
			return
		}
		if time.Now().After(deadline) || try == 5 {
			t.Fatalf("download after the flood, try %d: %v", try, err)
		}
		t.Logf("download try %d: %v", try, err)
		time.Sleep(2 * time.Second)
	}
}

func download(url string) (string, error) {
	cl := &http.Client{Timeout: 45 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return "", err
	}
	if n != hostileDataSize {
		return "", fmt.Errorf("%d bytes, want %d", n, hostileDataSize)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// arpEntry reads ip's MAC from the kernel's neighbour table.
func arpEntry(t *testing.T, ip netip.Addr) net.HardwareAddr {
	b, err := os.ReadFile("/proc/net/arp")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 4 && f[0] == ip.String() {
			mac, err := net.ParseMAC(f[3])
			if err == nil {
				return mac
			}
		}
	}
	t.Fatalf("no ARP entry for %s:\n%s", ip, b)
	return nil
}

// hostileSender writes frames on eth0 from a raw packet socket, counting
// them per kind, paced so that most reach sluice rather than overflow its
// socket.
type hostileSender struct {
	t        *testing.T
	fd, vfd  int // plain and PACKET_VNET_HDR sockets
	ifindex  int
	mac, gw  net.HardwareAddr
	rng      *rand.Rand
	sent     map[string]int
	refused  map[string]int
	errs     map[string]string
	n        int
	deadline time.Time
}

func newHostileSender(t *testing.T, ifc *net.Interface, gw net.HardwareAddr) *hostileSender {
	h := &hostileSender{t: t, ifindex: ifc.Index, mac: ifc.HardwareAddr, gw: gw,
		rng:  rand.New(rand.NewPCG(1, 2)),
		sent: map[string]int{}, refused: map[string]int{}, errs: map[string]string{},
		deadline: time.Now().Add(90 * time.Second)}
	open := func(vnet bool) int {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if vnet {
			if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
				t.Fatal(err)
			}
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifc.Index}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		return fd
	}
	h.fd, h.vfd = open(false), open(true)
	return h
}

// send writes one frame of kind; fd selects the socket. EAGAIN and ENOBUFS
// are waited out for a bounded time; other errors count as refused.
func (h *hostileSender) sendOn(fd int, kind string, frame []byte) {
	if time.Now().After(h.deadline) {
		return
	}
	h.sent[kind]++
	for tries := 0; ; tries++ {
		_, err := unix.Write(fd, frame)
		if err == nil {
			break
		}
		if (errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EAGAIN)) && tries < 1000 {
			time.Sleep(100 * time.Microsecond)
			continue
		}
		h.refused[kind]++
		h.errs[kind] = err.Error()
		break
	}
	h.n++
	if h.n%64 == 0 {
		// Pace: about 64 frames per millisecond at most, which the
		// stack mostly keeps up with, so frames reach it rather than
		// overflow its socket.
		time.Sleep(time.Millisecond)
	}
}

func (h *hostileSender) send(kind string, frame []byte) { h.sendOn(h.fd, kind, frame) }

// build serializes layers, fixing lengths and checksums.
func (h *hostileSender) build(ls ...gopacket.SerializableLayer) []byte {
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		h.t.Fatalf("build frame: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func (h *hostileSender) eth(t layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: h.mac, DstMAC: h.gw, EthernetType: t}
}

func ip4(src, dst netip.Addr, proto layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice(), Id: 1}
}

func ip6(src, dst netip.Addr, next layers.IPProtocol) *layers.IPv6 {
	return &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: next, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
}

// tcp4 is an IPv4 TCP segment with flags from src:sport to dst:dport.
func (h *hostileSender) tcp4(src, dst netip.Addr, sport, dport uint16, syn bool, payload []byte) []byte {
	ip := ip4(src, dst, layers.IPProtocolTCP)
	tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Seq: h.rng.Uint32(), SYN: syn, ACK: !syn, Window: 65535}
	_ = tcp.SetNetworkLayerForChecksum(ip)
	return h.build(h.eth(layers.EthernetTypeIPv4), ip, tcp, gopacket.Payload(payload))
}

func (h *hostileSender) tcp6(src, dst netip.Addr, sport, dport uint16, syn bool) []byte {
	ip := ip6(src, dst, layers.IPProtocolTCP)
	tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Seq: h.rng.Uint32(), SYN: syn, ACK: !syn, Window: 65535}
	_ = tcp.SetNetworkLayerForChecksum(ip)
	return h.build(h.eth(layers.EthernetTypeIPv6), ip, tcp)
}

func (h *hostileSender) udp4(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	ip := ip4(src, dst, layers.IPProtocolUDP)
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	_ = udp.SetNetworkLayerForChecksum(ip)
	return h.build(h.eth(layers.EthernetTypeIPv4), ip, udp, gopacket.Payload(payload))
}

func (h *hostileSender) udp6(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	ip := ip6(src, dst, layers.IPProtocolUDP)
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	_ = udp.SetNetworkLayerForChecksum(ip)
	return h.build(h.eth(layers.EthernetTypeIPv6), ip, udp, gopacket.Payload(payload))
}

// frag4 is an IPv4 fragment of a UDP datagram: offset in bytes (a multiple
// of 8), more fragments flag, raw payload bytes.
func (h *hostileSender) frag4(dst netip.Addr, id uint16, off int, more bool, data []byte) []byte {
	ip := ip4(hostileSB4, dst, layers.IPProtocolUDP)
	ip.Id = id
	ip.FragOffset = uint16(off / 8)
	if more {
		ip.Flags = layers.IPv4MoreFragments
	}
	return h.build(h.eth(layers.EthernetTypeIPv4), ip, gopacket.Payload(data))
}

// frag6 is an IPv6 fragment (a Fragment extension header in front of raw
// payload bytes).
func (h *hostileSender) frag6(dst netip.Addr, id uint32, off int, more bool, data []byte) []byte {
	ip := ip6(hostileSB6, dst, layers.IPProtocolIPv6Fragment)
	fh := make([]byte, 8)
	fh[0] = byte(layers.IPProtocolUDP)
	v := uint16(off/8) << 3
	if more {
		v |= 1
	}
	binary.BigEndian.PutUint16(fh[2:], v)
	binary.BigEndian.PutUint32(fh[4:], id)
	return h.build(h.eth(layers.EthernetTypeIPv6), ip, gopacket.Payload(append(fh, data...)))
}

// fixIPv4Csum recomputes the IPv4 header checksum of frame (header at 14)
// after a deliberate change to another field.
func fixIPv4Csum(f []byte) {
	ihl := int(f[14]&0x0f) * 4
	if ihl < 20 || 14+ihl > len(f) {
		return
	}
	binary.BigEndian.PutUint16(f[24:], 0)
	var s uint32
	for i := 14; i < 14+ihl; i += 2 {
		s += uint32(binary.BigEndian.Uint16(f[i:]))
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	binary.BigEndian.PutUint16(f[24:], ^uint16(s))
}

// flood sends every kind of hostile frame.
func (h *hostileSender) flood() {
	rng := h.rng
	syn := h.tcp4(hostileSB4, server4, 40000, 20000, true, nil)
	syn6 := h.tcp6(hostileSB6, server6, 40000, 20000, true)
	udp := h.udp4(hostileSB4, hostileGW4, 40000, 9, []byte("hello"))

	// Truncated headers.
	for range 50 {
		h.send("eth-header-only", syn[:14])
		h.send("trunc-ipv4-header", syn[:14+10])
		h.send("trunc-ipv6-header", syn6[:14+20])
		h.send("trunc-tcp-header", syn[:14+20+8])
		h.send("trunc-tcp6-header", syn6[:14+40+6])
		h.send("trunc-udp-header", udp[:14+20+4])
	}
	// Wrong lengths.
	for range 50 {
		for _, tc := range []struct {
			kind string
			mod  func(f []byte)
		}{
			{"ipv4-totlen-long", func(f []byte) { binary.BigEndian.PutUint16(f[16:], 1400); fixIPv4Csum(f) }},
			{"ipv4-totlen-short", func(f []byte) { binary.BigEndian.PutUint16(f[16:], 12); fixIPv4Csum(f) }},
			{"ipv4-ihl-short", func(f []byte) { f[14] = 0x43; fixIPv4Csum(f) }},
			{"ipv4-ihl-long", func(f []byte) { f[14] = 0x4f; fixIPv4Csum(f) }},
			{"ipv4-version-6", func(f []byte) { f[14] = 0x65; fixIPv4Csum(f) }},
		} {
			f := append([]byte(nil), syn...)
			tc.mod(f)
			h.send(tc.kind, f)
		}
		long := append([]byte(nil), syn6...)
		binary.BigEndian.PutUint16(long[14+4:], 1400)
		h.send("ipv6-paylen-long", long)
		short := append([]byte(nil), syn6...)
		binary.BigEndian.PutUint16(short[14+4:], 3)
		h.send("ipv6-paylen-short", short)
		u := append([]byte(nil), udp...)
		binary.BigEndian.PutUint16(u[14+20+4:], 400) // UDP length past the datagram
		h.send("udp-length-long", u)
	}
	// Bad checksums.
	for i := range 100 {
		f := h.tcp4(hostileSB4, server4, uint16(41000+i), hostileDataPort, true, nil)
		f[14+20+16] ^= 0xff
		h.send("bad-tcp-checksum", f)
		f = h.tcp4(hostileSB4, server4, uint16(41000+i), hostileDataPort, true, nil)
		f[24] ^= 0xff
		h.send("bad-ipv4-checksum", f)
		f = h.udp4(hostileSB4, hostileGW4, uint16(41000+i), 9, []byte("bad checksum"))
		f[14+20+6] ^= 0xff
		h.send("bad-udp-checksum", f)
	}
	// IP fragments: overlapping (teardrop-like), never completed (a
	// reassembly memory attack), and tiny.
	data := make([]byte, 64)
	for i := range 500 {
		id := uint16(1000 + i)
		h.send("frag4-overlapping", h.frag4(hostileGW4, id, 0, true, data[:24]))
		h.send("frag4-overlapping", h.frag4(hostileGW4, id, 8, true, data[:24]))
		h.send("frag4-overlapping", h.frag4(hostileGW4, id, 16, false, data[:8]))
		h.send("frag6-overlapping", h.frag6(hostileGW6, uint32(id), 0, true, data[:24]))
		h.send("frag6-overlapping", h.frag6(hostileGW6, uint32(id), 8, false, data[:24]))
	}
	for i := range 3000 {
		h.send("frag4-incomplete", h.frag4(hostileGW4, uint16(10000+i), 0, true, data[:56]))
		if i%3 == 0 {
			h.send("frag6-incomplete", h.frag6(hostileGW6, uint32(10000+i), 0, true, data[:56]))
		}
	}
	for i := range 200 {
		h.send("frag4-tiny", h.frag4(hostileGW4, uint16(20000+i), 8*(i%8), true, data[:8]))
		h.send("frag4-past-64k", h.frag4(hostileGW4, uint16(30000+i), 65528, false, data[:56]))
	}
	// The stack is slower than the sender: let it drain its queue, so
	// that the frames above are handled, not dropped behind the flood.
	time.Sleep(time.Second)
	// The SYN flood: to the server's closed ports, to unreachable hosts of
	// its network, to the denied address; a quarter from spoofed
	// addresses of the sandbox's subnet. Plus IPv6.
	for i := range hostileSYNs {
		src := hostileSB4
		if i%4 == 3 {
			src = netip.AddrFrom4([4]byte{10, 0, 2, byte(110 + rng.IntN(140))})
		}
		var dst netip.Addr
		switch i % 3 {
		case 0:
			dst = server4
		case 1:
			dst = netip.AddrFrom4([4]byte{10, 99, 0, byte(3 + rng.IntN(250))})
		case 2:
			dst = hostileDenied
		}
		h.send("syn-flood", h.tcp4(src, dst, uint16(1024+rng.IntN(60000)), uint16(20000+rng.IntN(20000)), true, nil))
	}
	for range 2000 {
		h.send("syn-flood-ipv6", h.tcp6(hostileSB6, server6, uint16(1024+rng.IntN(60000)), uint16(20000+rng.IntN(20000)), true))
	}
	// Again, so that the frames below reach the stack: whether they go
	// where they must not is what the test checks.
	time.Sleep(3 * time.Second)
	// ARP and NDP spoofing of the gateway's addresses.
	other := net.HardwareAddr{0x02, 0xba, 0xd0, 0, 0, 1}
	for i := range 200 {
		mac := h.mac
		if i%2 == 1 {
			mac = other
		}
		bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
		reply := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPReply, SourceHwAddress: mac, SourceProtAddress: hostileGW4.AsSlice(),
			DstHwAddress: h.gw, DstProtAddress: hostileGW4.AsSlice()}
		e := h.eth(layers.EthernetTypeARP)
		h.send("arp-spoof-gateway", h.build(e, reply))
		req := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPRequest, SourceHwAddress: mac, SourceProtAddress: hostileGW4.AsSlice(),
			DstHwAddress: make(net.HardwareAddr, 6), DstProtAddress: hostileSB4.AsSlice()}
		e = h.eth(layers.EthernetTypeARP)
		e.DstMAC = bcast
		h.send("arp-spoof-gateway", h.build(e, req))

		ip := ip6(hostileGW6, netip.MustParseAddr("ff02::1"), layers.IPProtocolICMPv6)
		ip.HopLimit = 255
		icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeNeighborAdvertisement, 0)}
		_ = icmp.SetNetworkLayerForChecksum(ip)
		na := &layers.ICMPv6NeighborAdvertisement{Flags: 0x20 | 0x40, TargetAddress: hostileGW6.AsSlice(),
			Options: layers.ICMPv6Options{{Type: layers.ICMPv6OptTargetAddress, Data: mac}}}
		e = h.eth(layers.EthernetTypeIPv6)
		e.DstMAC = net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}
		h.send("ndp-spoof-gateway", h.build(e, ip, icmp, na))
		ip = ip6(hostileGW6, hostileSB6, layers.IPProtocolICMPv6)
		ip.HopLimit = 255
		icmp = &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeNeighborSolicitation, 0)}
		_ = icmp.SetNetworkLayerForChecksum(ip)
		ns := &layers.ICMPv6NeighborSolicitation{TargetAddress: hostileGW6.AsSlice(),
			Options: layers.ICMPv6Options{{Type: layers.ICMPv6OptSourceAddress, Data: mac}}}
		h.send("ndp-spoof-gateway", h.build(h.eth(layers.EthernetTypeIPv6), ip, icmp, ns))
	}
	// Frames to the host's loopback and to the denied network.
	lo4, lo6 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")
	for i := range 100 {
		sport := uint16(42000 + i)
		h.send("to-loopback", h.tcp4(hostileSB4, lo4, sport, hostileLoopTCP, true, nil))
		h.send("to-loopback", h.udp4(hostileSB4, lo4, sport, hostileLoopUDP, []byte("loop")))
		h.send("to-loopback", h.tcp4(lo4, lo4, sport, hostileLoopTCP, true, nil))
		h.send("to-loopback", h.tcp6(hostileSB6, lo6, sport, hostileLoopTCP, true))
		h.send("to-loopback", h.udp6(hostileSB6, lo6, sport, hostileLoopUDP, []byte("loop")))
		h.send("to-denied", h.tcp4(hostileSB4, hostileDenied, sport, hostileDeniedTCP, true, nil))
		h.send("to-denied", h.udp4(hostileSB4, hostileDenied, sport, hostileDeniedUDP, []byte("denied")))
	}
	// The sandbox's kernel sockets too, as a program would.
	for range 10 {
		if c, err := net.DialTimeout("tcp", netip.AddrPortFrom(hostileDenied, hostileDeniedTCP).String(), 2*time.Second); err == nil {
			c.Close()
		}
		if c, err := net.Dial("udp", netip.AddrPortFrom(hostileDenied, hostileDeniedUDP).String()); err == nil {
			_, _ = c.Write([]byte("denied"))
			c.Close()
		}
		if c, err := net.DialTimeout("tcp", netip.AddrPortFrom(hostileGW4, hostileLoopTCP).String(), 2*time.Second); err == nil {
			c.Close()
		}
		h.sent["socket-connects"] += 3
	}
	// Oversized: above the 1500-byte MTU (the kernel refuses these on a
	// plain packet socket), and 64 KiB frames behind virtio_net_hdrs
	// with lengths that do not add up.
	for range 20 {
		for _, n := range []int{1515, 1600, 9000} {
			f := make([]byte, n)
			copy(f, syn)
			h.send("oversized-plain", f)
		}
	}
	big := make([]byte, 65000)
	copy(big, h.tcp4(hostileSB4, server4, 43000, 20001, false, make([]byte, 1400)))
	binary.BigEndian.PutUint16(big[16:], uint16(len(big)-14))
	fixIPv4Csum(big)
	for i := range 20 {
		for _, v := range []struct {
			kind string
			hdr  [10]byte // flags, gso_type, hdr_len, gso_size, csum_start, csum_offset (little endian)
		}{
			{"vnet-gso-size-0", vnetHdr(1, 1, 54, 0, 34, 16)},
			{"vnet-gso-size-1", vnetHdr(1, 1, 54, 1, 34, 16)},
			{"vnet-hdr-len-past-frame", vnetHdr(1, 1, 65500, 1448, 34, 16)},
			{"vnet-csum-start-past", vnetHdr(1, 1, 54, 1448, 65400, 16)},
			{"vnet-udp-type-on-tcp", vnetHdr(1, 5, 42, 1448, 34, 6)},
			{"vnet-tcpv6-type-on-v4", vnetHdr(1, 4, 74, 1448, 54, 16)},
			{"vnet-no-gso-64k", vnetHdr(0, 0, 0, 0, 0, 0)},
		} {
			f := append(v.hdr[:], big...)
			if i%2 == 1 {
				// And an IPv4 total length that disagrees.
				binary.BigEndian.PutUint16(f[10+16:], 200)
			}
			h.sendOn(h.vfd, v.kind, f)
		}
	}
}

// vnetHdr encodes a virtio_net_hdr (little endian, as the kernel reads it
// on this host).
func vnetHdr(flags, gsoType uint8, hdrLen, gsoSize, csumStart, csumOff uint16) [10]byte {
	var b [10]byte
	b[0], b[1] = flags, gsoType
	binary.LittleEndian.PutUint16(b[2:], hdrLen)
	binary.LittleEndian.PutUint16(b[4:], gsoSize)
	binary.LittleEndian.PutUint16(b[6:], csumStart)
	binary.LittleEndian.PutUint16(b[8:], csumOff)
	return b
}
