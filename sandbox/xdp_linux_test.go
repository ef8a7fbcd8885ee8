package sandbox_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicenet/sluice/bpf"
	"github.com/sluicenet/sluice/internal/netns"
	"github.com/sluicenet/sluice/internal/testenv"
	"github.com/sluicenet/sluice/sandbox"
)

// xdpTransferSize is what each --xdp download moves.
const xdpTransferSize = 100 << 20

// readReport reads a --stats-file.
func readReport(t *testing.T, path string) sandbox.Report {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rep sandbox.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("stats file %s: %v", b, err)
	}
	return rep
}

// linkStats returns the counters of the link called name in rep.
func linkStats(t *testing.T, rep sandbox.Report, name string) sandbox.LinkStats {
	t.Helper()
	for _, l := range rep.Interfaces {
		if l.Name == name {
			return l
		}
	}
	t.Fatalf("no link %s in the stats: %+v", name, rep.Interfaces)
	return sandbox.LinkStats{}
}

// checkXDPLink checks that a link ran AF_XDP in copy mode (veth has no
// zero-copy) with queues sockets, and carried at least minTx bytes to the
// sandbox or the LAN.
func checkXDPLink(t *testing.T, st sandbox.LinkStats, queues int, minTx uint64) {
	t.Helper()
	if st.XDP == nil {
		t.Fatalf("%s: no AF_XDP counters in the stats: %+v", st.Name, st)
	}
	if st.XDP.Mode != "copy" || st.XDP.Queues != queues {
		t.Errorf("%s: %d queues in %s mode, want %d in copy mode", st.Name, st.XDP.Queues, st.XDP.Mode, queues)
	}
	if len(st.Modes) != queues {
		t.Errorf("%s: modes %v, want one per queue (%d)", st.Name, st.Modes, queues)
	}
	for _, m := range st.Modes {
		if m != "xdp-copy" {
			t.Errorf("%s: a queue ran %q, want xdp-copy", st.Name, m)
		}
	}
	if st.TxBytes < minTx || st.RxPackets == 0 {
		t.Errorf("%s: counters %+v: want tx bytes >= %d and some rx packets", st.Name, st.Stats, minTx)
	}
	if st.RxErrors != 0 {
		t.Errorf("%s: %d receive errors", st.Name, st.RxErrors)
	}
}

// TestXDPNSDownload: with --xdp ns the stack reads the sandbox's veth with
// AF_XDP. curl in the sandbox downloads 100 MB over IPv4 and IPv6 from a
// server in the uplink namespace and the SHA-256 matches; --stats says
// AF_XDP in copy mode, one socket per --num-network-channels; eth0 gets the
// largest MTU AF_XDP allows on a veth; ping reaches the gateway and the
// server.
func TestXDPNSDownload(t *testing.T) {
	testenv.RequireTool(t, "curl", "sha256sum", "ping", "ip")
	ns := serverNS(t)
	sum := serveData(t, listen(t, ns, netip.AddrPortFrom(server4, 8090)), xdpTransferSize)
	serveData(t, listen(t, ns, netip.AddrPortFrom(server6, 8090)), xdpTransferSize)
	for _, tc := range []struct {
		name   string
		url    string
		queues int
		more   []string
	}{
		{"ipv4", "http://10.99.0.1:8090/data", 1, nil},
		{"ipv6", "http://[fd99::1]:8090/data", 1, nil},
		{"two queues", "http://10.99.0.1:8090/data", 2, []string{"--num-network-channels=2"}},
		{"no gro, no need_wakeup", "http://[fd99::1]:8090/data", 1, []string{"--gvisor-gro=false", "--xdp-need-wakeup=false"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			statsFile := filepath.Join(t.TempDir(), "stats.json")
			args := append([]string{"run", "--uplink-netns", ns, "--xdp", "ns", "--stats", "--stats-file", statsFile}, tc.more...)
			args = append(args, "--", "sh", "-c", "ip -o link show eth0; curl -sS -g --max-time 90 "+tc.url+" | sha256sum")
			r := mustRun(t, args...)
			if !strings.Contains(r.stdout, sum) {
				t.Fatalf("sha256 inside the sandbox: %q, want %s\nstderr: %s", r.stdout, sum, r.stderr)
			}
			if want := "mtu " + strconv.Itoa(sandbox.XDPVethMaxMTU) + " "; !strings.Contains(r.stdout, want) {
				t.Errorf("eth0 inside the sandbox: %q, want %q (the automatic MTU with --xdp ns)", r.stdout, want)
			}
			if !strings.Contains(r.stderr, "AF_XDP: "+strconv.Itoa(tc.queues)+" queues in copy mode") {
				t.Errorf("--stats does not say AF_XDP in copy mode:\n%s", r.stderr)
			}
			rep := readReport(t, statsFile)
			if len(rep.Interfaces) != 1 {
				t.Fatalf("%d interfaces in the stats, want 1: %+v", len(rep.Interfaces), rep.Interfaces)
			}
			checkXDPLink(t, linkStats(t, rep, sandbox.StackLinkName), tc.queues, xdpTransferSize)
		})
	}
	t.Run("ping", func(t *testing.T) {
		for _, addr := range []string{"10.0.2.2", "fd00:51ce::2", server4.String(), server6.String()} {
			r := runSluice(t, "run", "--uplink-netns", ns, "--xdp", "ns", "--", "ping", "-c", "2", "-i", "0.2", "-W", "2", addr)
			if r.code != 0 || !strings.Contains(r.stdout, " 0% packet loss") {
				t.Errorf("ping %s with --xdp ns: exit %d\n%s%s", addr, r.code, r.stdout, r.stderr)
			}
		}
	})
}

// TestXDPBadInput: XDP settings that cannot work fail before the command
// starts, naming the flag.
func TestXDPBadInput(t *testing.T) {
	testenv.RequireRoot(t)
	host := testenv.NewNS(t)
	testenv.IP(t, host, "link", "add", "hv", "type", "veth", "peer", "name", "lv")
	testenv.IP(t, host, "addr", "add", "192.0.2.2/24", "dev", "hv")
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"no such interface", []string{"--uplink-netns", host, "--xdp=redirect:nosuchif", "--uplink-addr=192.0.2.7/24"}, []string{"--xdp redirect:nosuchif", `"nosuchif"`, "uplink namespace " + host}},
		{"tunnel, no such interface", []string{"--uplink-netns", host, "--xdp=tunnel:nosuchif"}, []string{"--xdp tunnel:nosuchif", `"nosuchif"`}},
		{"udp publish with redirect", []string{"--uplink-netns", host, "--xdp=redirect:hv", "--uplink-addr=192.0.2.7/24", "--publish=5353:53/udp"}, []string{"--publish 5353:53/udp with --xdp redirect:hv", "not implemented yet"}},
		{"publish on another address", []string{"--uplink-netns", host, "--xdp=redirect:hv", "--uplink-addr=192.0.2.7/24", "--publish=192.0.2.2:8080:80"}, []string{"--publish", "192.0.2.2 is not one of them"}},
		{"host loopback with tunnel", []string{"--uplink-netns", host, "--xdp=tunnel:hv", "--allow-host-loopback"}, []string{"--allow-host-loopback with --xdp tunnel:hv"}},
		{"gateway off the subnet", []string{"--uplink-netns", host, "--xdp=redirect:hv", "--uplink-addr=192.0.2.7/24", "--uplink-gateway=198.51.100.1"}, []string{"198.51.100.1", "not on the netstack's subnet"}},
		{"unknown mode", []string{"--xdp=bogus"}, []string{`"bogus"`, "ns, redirect:IFACE or tunnel:IFACE"}},
		{"redirect without an interface", []string{"--xdp=redirect"}, []string{"redirect:IFACE"}},
		{"uplink-addr garbage", []string{"--xdp=redirect:lo", "--uplink-addr=garbage"}, []string{`--uplink-addr "garbage"`, "not an address with its prefix length"}},
		{"uplink-addr without a prefix", []string{"--xdp=redirect:lo", "--uplink-addr=192.0.2.7"}, []string{`--uplink-addr "192.0.2.7"`}},
		{"uplink-addr twice for a family", []string{"--xdp=redirect:lo", "--uplink-addr=192.0.2.7/24,192.0.2.8/24"}, []string{"one per family"}},
		{"uplink-addr without xdp", []string{"--uplink-addr=192.0.2.7/24"}, []string{"--uplink-addr needs --xdp redirect:IFACE or tunnel:IFACE"}},
		{"uplink-gateway garbage", []string{"--xdp=redirect:lo", "--uplink-gateway=nope"}, []string{`--uplink-gateway "nope"`}},
		{"ns mtu too large", []string{"--xdp=ns", "--mtu=4000"}, []string{"--mtu 4000", "3506"}},
		{"ns without rx checksum trust", []string{"--xdp=ns", "--rx-checksum-offload=false"}, []string{"--rx-checksum-offload=false with --xdp ns"}},
		{"xdp with network host", []string{"--xdp=ns", "--network=host"}, []string{"--xdp ns needs --network sandbox"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			marker := filepath.Join(t.TempDir(), "ran")
			args := append([]string{"run"}, tc.args...)
			args = append(args, "--", "touch", marker)
			r := runSluice(t, args...)
			if r.code == 0 {
				t.Fatalf("sluice %q succeeded", args)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr %q lacks %q", r.stderr, w)
				}
			}
			if strings.Contains(r.stderr, "panic") {
				t.Errorf("sluice panicked:\n%s", r.stderr)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Error("the command ran")
			}
		})
	}
}

// xdpLAN is the topology of the redirect and tunnel tests: a "host"
// namespace H (the uplink namespace) whose NIC hv is a two-queue veth to a
// LAN namespace L. The host has 192.0.2.2 and 2001:db8::2 on hv, default
// routes through L (192.0.2.10, 2001:db8::10), and a control listener on
// port 22 of its addresses (SSH, the port tunnel mode leaves to the host).
// L routes and serves: its lo has 198.51.100.1 and 2001:db8:ffff::1, off
// the NIC's subnet, so reaching them takes the default routes.
type xdpLAN struct {
	H, L         string
	lanMAC       string
	sum          string
	ctl4, ctl6   net.Listener
	host4, host6 string
}

const (
	lanServer4 = "198.51.100.1"
	lanServer6 = "2001:db8:ffff::1"
	lanPort    = 8091
)

func newXDPLAN(t *testing.T) *xdpLAN {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "ip", "ethtool", "curl", "sha256sum", "ping")
	n := &xdpLAN{H: testenv.NewNS(t), L: testenv.NewNS(t), host4: "192.0.2.2", host6: "2001:db8::2"}
	testenv.IP(t, n.H, "link", "add", "hv", "numrxqueues", "2", "numtxqueues", "2", "type", "veth",
		"peer", "name", "lv", "netns", n.L, "numrxqueues", "2", "numtxqueues", "2")
	testenv.IP(t, n.H, "addr", "add", n.host4+"/24", "dev", "hv")
	testenv.IP(t, n.H, "addr", "add", n.host6+"/64", "dev", "hv", "nodad")
	testenv.IP(t, n.H, "link", "set", "hv", "up")
	testenv.IP(t, n.L, "addr", "add", "192.0.2.10/24", "dev", "lv")
	testenv.IP(t, n.L, "addr", "add", "2001:db8::10/64", "dev", "lv", "nodad")
	testenv.IP(t, n.L, "addr", "add", lanServer4+"/32", "dev", "lo")
	testenv.IP(t, n.L, "addr", "add", lanServer6+"/128", "dev", "lo", "nodad")
	testenv.IP(t, n.L, "link", "set", "lv", "up")
	testenv.IP(t, n.H, "route", "add", "default", "via", "192.0.2.10", "dev", "hv")
	testenv.IP(t, n.H, "-6", "route", "add", "default", "via", "2001:db8::10", "dev", "hv")
	// The LAN stands in for a wire: frames on a wire carry full
	// checksums, not the partial ones a veth leaves for an offload.
	testenv.Exec(t, n.L, "ethtool", "-K", "lv", "tx", "off")
	var mac string
	testenv.Do(t, n.L, func() error {
		i, err := net.InterfaceByName("lv")
		if err == nil {
			mac = i.HardwareAddr.String()
		}
		return err
	})
	n.lanMAC = mac
	n.sum = serveData(t, listen(t, n.L, netip.MustParseAddrPort(lanServer4+":"+strconv.Itoa(lanPort))), xdpTransferSize)
	serveData(t, listen(t, n.L, netip.AddrPortFrom(netip.MustParseAddr(lanServer6), lanPort)), xdpTransferSize)
	n.ctl4 = listen(t, n.H, netip.MustParseAddrPort(n.host4+":22"))
	n.ctl6 = listen(t, n.H, netip.AddrPortFrom(netip.MustParseAddr(n.host6), 22))
	return n
}

// controlReachesHost connects from L to addr:22 and checks that the host's
// listener l, not the netstack, took the connection and answered.
func (n *xdpLAN) controlReachesHost(t *testing.T, l net.Listener, addr string) bool {
	t.Helper()
	got := make(chan string, 1)
	go func() {
		l.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
		c, err := l.Accept()
		if err != nil {
			got <- ""
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		fmt.Fprintf(c, "host\n")
		got <- line
	}()
	var reply string
	var dialErr error
	testenv.Do(t, n.L, func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, "22"), 10*time.Second)
		if err != nil {
			dialErr = err
			return nil
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "hello\n")
		reply, _ = bufio.NewReader(c).ReadString('\n')
		return nil
	})
	if dialErr != nil {
		t.Logf("dial %s:22 from the LAN: %v", addr, dialErr)
	}
	return <-got == "hello\n" && reply == "host\n"
}

// leftovers lists what an XDP mode may leave in H: an XDP program on hv or
// on any other link, a pin directory, a link other than lo and hv (the
// tunnel veth).
func (n *xdpLAN) leftovers(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, ns := range []string{n.H, n.L} {
		st, err := bpf.List(bpf.ListOptions{Netns: ns})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range st {
			if s.Mode != bpf.ModeNone {
				out = append(out, fmt.Sprintf("XDP program %q (id %d) on %s in %s", s.ProgramName, s.ProgramID, s.Iface, ns))
			}
		}
		id, err := bpf.NetnsID(ns)
		if err != nil {
			t.Fatal(err)
		}
		if d := filepath.Dir(bpf.PinDir(bpf.DefaultPinRoot, id, "x")); exists(d) {
			out = append(out, "pin directory "+d)
		}
	}
	links := testenv.IP(t, n.H, "-o", "link", "show")
	for _, line := range strings.Split(strings.TrimSpace(links), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if name != "lo" && name != "hv" {
			out = append(out, "link "+name+" in H")
		}
	}
	return out
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// waitNoLeftovers polls leftovers for up to d: the kernel releases a dead
// process's objects asynchronously.
func (n *xdpLAN) waitNoLeftovers(t *testing.T, d time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		left := n.leftovers(t)
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestXDPUplink runs the sandbox with --xdp redirect:hv and tunnel:hv,
// the uplink namespace being H. curl in the sandbox downloads 100 MB over
// IPv4 and IPv6 from the LAN through the netstack's NIC on hv (the default
// routes through L), with matching SHA-256; ping works both ways through
// the netstack's ICMP endpoints; while it runs, a connection from the LAN
// to the host's own address on the control port (22) still reaches the
// host's listener. Redirect mode owns --uplink-addr addresses; tunnel mode
// takes over hv's. Afterwards nothing is left: no XDP program, pin or
// tunnel veth.
func TestXDPUplink(t *testing.T) {
	if sluiceBin == "" {
		testenv.Skip(t, "requires root to build and run sluice's sandbox")
	}
	for _, tc := range []struct {
		mode  string
		flags []string
		// addr4 and addr6 are the netstack's addresses on hv.
		addr4, addr6 string
		log          string
	}{
		{"redirect", []string{"--uplink-addr=192.0.2.7/24", "--uplink-addr=2001:db8::7/64"}, "192.0.2.7", "2001:db8::7", "(--uplink-addr)"},
		{"tunnel", nil, "192.0.2.2", "2001:db8::2", "(taken over from hv)"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			n := newXDPLAN(t)
			if tc.mode == "tunnel" {
				// The host's replies on the control port need the LAN
				// machine's MAC, and ARP replies are the netstack's
				// in tunnel mode: a static entry stands in, as an
				// operator would set it.
				testenv.IP(t, n.H, "neigh", "replace", "192.0.2.10", "lladdr", n.lanMAC, "dev", "hv")
				testenv.IP(t, n.H, "neigh", "replace", "2001:db8::10", "lladdr", n.lanMAC, "dev", "hv")
			}
			dir := t.TempDir()
			statsFile := filepath.Join(dir, "stats.json")
			proceed := filepath.Join(dir, "proceed")
			script := fmt.Sprintf(`set -e
curl -sS --max-time 90 http://%[1]s:%[3]d/data | sha256sum
curl -sS -g --max-time 90 http://[%[2]s]:%[3]d/data | sha256sum
ping -c 2 -i 0.2 -W 2 %[1]s
ping -c 2 -i 0.2 -W 2 %[2]s
echo transfers-done
i=0; while [ ! -e %[4]s ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
`, lanServer4, lanServer6, lanPort, proceed)
			args := append([]string{"run", "--uplink-netns", n.H, "--xdp", tc.mode + ":hv", "--stats", "--stats-file", statsFile}, tc.flags...)
			args = append(args, "--", "sh", "-c", script)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, sluiceBin, args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var stdout strings.Builder
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				stdout.WriteString(sc.Text() + "\n")
				if sc.Text() == "transfers-done" {
					break
				}
			}
			if !strings.Contains(stdout.String(), "transfers-done") {
				_ = cmd.Wait()
				t.Fatalf("the sandbox's transfers failed:\nstdout: %s\nstderr: %s", stdout.String(), stderr.String())
			}
			// While the sandbox runs: the control port is the host's.
			if !n.controlReachesHost(t, n.ctl4, n.host4) {
				t.Errorf("control port on %s did not reach the host stack", n.host4)
			}
			if !n.controlReachesHost(t, n.ctl6, n.host6) {
				t.Errorf("control port on %s did not reach the host stack", n.host6)
			}
			// And the netstack answers pings to its own addresses.
			for _, a := range []string{tc.addr4, tc.addr6} {
				o, err := testenv.Output("ip", "netns", "exec", n.L, "ping", "-c", "2", "-i", "0.2", "-W", "2", a)
				if err != nil || !strings.Contains(o, " 0% packet loss") {
					t.Errorf("ping %s (the netstack on hv) from the LAN: %v\n%s", a, err, o)
				}
			}
			if err := os.WriteFile(proceed, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			rest, _ := io.ReadAll(out)
			stdout.Write(rest)
			if err := cmd.Wait(); err != nil {
				t.Fatalf("sluice: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
			}
			if c := strings.Count(stdout.String(), n.sum); c != 2 {
				t.Errorf("%d of 2 downloads had SHA-256 %s:\n%s", c, n.sum, stdout.String())
			}
			if c := strings.Count(stdout.String(), " 0% packet loss"); c != 2 {
				t.Errorf("%d of 2 pings from the sandbox got every reply:\n%s", c, stdout.String())
			}
			if want := "owns " + tc.addr4; !strings.Contains(stderr.String(), want) || !strings.Contains(stderr.String(), tc.log) {
				t.Errorf("stderr does not say the netstack %s %s:\n%s", want, tc.log, stderr.String())
			}
			rep := readReport(t, statsFile)
			if len(rep.Interfaces) != 2 {
				t.Fatalf("%d interfaces in the stats, want the sandbox link and %s: %+v", len(rep.Interfaces), sandbox.UplinkLinkName, rep.Interfaces)
			}
			// uplink0 received the downloads from the LAN.
			up := linkStats(t, rep, sandbox.UplinkLinkName)
			checkXDPLink(t, up, 2, 0)
			if up.RxBytes < 2*xdpTransferSize {
				t.Errorf("%s received %d bytes, want the two downloads (%d)", up.Name, up.RxBytes, 2*xdpTransferSize)
			}
			if left := n.waitNoLeftovers(t, 5*time.Second); len(left) > 0 {
				t.Errorf("after sluice exited: %v", left)
			}
		})
	}
}

// TestXDPUplinkKilled: SIGKILL of sluice in each XDP mode leaves nothing:
// no XDP program on any interface, no pin, no tunnel veth, no stack veth.
func TestXDPUplinkKilled(t *testing.T) {
	if sluiceBin == "" {
		testenv.Skip(t, "requires root to build and run sluice's sandbox")
	}
	for _, tc := range []struct {
		mode  string
		flags []string
	}{
		{"ns", nil},
		{"redirect:hv", []string{"--uplink-addr=192.0.2.7/24"}},
		{"tunnel:hv", nil},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			n := newXDPLAN(t)
			dir := t.TempDir()
			started := filepath.Join(dir, "started")
			args := append([]string{"run", "--uplink-netns", n.H, "--xdp", tc.mode}, tc.flags...)
			args = append(args, "--", "sh", "-c", "touch "+started+"; exec sleep 30")
			cmd := exec.Command(sluiceBin, args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
			deadline := time.Now().Add(30 * time.Second)
			for !exists(started) {
				if time.Now().After(deadline) {
					t.Fatalf("the sandbox did not start:\n%s", stderr.String())
				}
				time.Sleep(50 * time.Millisecond)
			}
			if tc.mode != "ns" {
				if left := n.leftovers(t); len(left) == 0 {
					t.Fatalf("nothing of --xdp %s is visible in H while it runs; the test would prove nothing", tc.mode)
				}
			}
			// The stack namespace (with the veth and, in ns mode, the
			// XDP program on it) is held only by sluice's descriptors.
			held := nsOf(cmd.Process.Pid)
			delete(held, hostNS(t))
			for ns := range nsOf(os.Getpid()) {
				delete(held, ns)
			}
			// The uplink namespace is the test's: sluice holds it (a
			// descriptor, and a thread that opens sockets there) but
			// its mount keeps it until the test removes it.
			if fi, err := os.Stat(netns.Path(n.H)); err == nil {
				delete(held, fmt.Sprintf("net:[%d]", fi.Sys().(*syscall.Stat_t).Ino))
			}
			if len(held) == 0 {
				t.Fatal("sluice holds no namespace of its own")
			}
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
			if left := n.waitNoLeftovers(t, 10*time.Second); len(left) > 0 {
				t.Errorf("after SIGKILL: %v", left)
			}
			deadline = time.Now().Add(10 * time.Second)
			for {
				var left []string
				now := heldNamespaces()
				for ns := range held {
					// Only sluice's own processes count: a dead
					// namespace's inode number is reused at once, and
					// other tests on this machine make namespaces
					// all the time.
					var ours []string
					for _, h := range now[ns] {
						if strings.Contains(h, sluiceBin) || strings.Contains(h, "(sluice ") || strings.Contains(h, "(sleep 30") {
							ours = append(ours, h)
						}
					}
					if len(ours) > 0 {
						left = append(left, fmt.Sprintf("namespace %s held by %v", ns, ours))
					}
				}
				if len(left) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("10 s after SIGKILL: %v", left)
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
}

// TestXDPUplinkServices: DNS and the egress policy work when flows leave
// from the netstack over --xdp redirect. The uplink namespace has no route
// to the LAN's servers (its default route is deleted; --uplink-gateway
// gives the netstack one), so a flow that went out through a host socket
// would fail: every success here went through the netstack's NIC.
func TestXDPUplinkServices(t *testing.T) {
	if sluiceBin == "" {
		testenv.Skip(t, "requires root to build and run sluice's sandbox")
	}
	n := newXDPLAN(t)
	testenv.IP(t, n.H, "route", "del", "default")
	testenv.IP(t, n.L, "addr", "add", "10.99.0.1/32", "dev", "lo")
	testenv.IP(t, n.L, "addr", "add", "10.99.0.2/32", "dev", "lo")
	dnsServer(t, n.L, "10.99.0.1:53")
	serveData(t, listen(t, n.L, netip.MustParseAddrPort("10.99.0.1:8085")), 1000)
	serveData(t, listen(t, n.L, netip.MustParseAddrPort("10.99.0.2:8085")), 1000)
	script := `curl -sS --max-time 10 -o /dev/null -w 'svc %{size_download}\n' http://svc.test:8085/data; echo "svc exit $?"
curl -sS --max-time 10 -o /dev/null http://other.test:8085/data; echo "other exit $?"
curl -sS --max-time 10 -o /dev/null http://10.99.0.2:8085/data; echo "addr exit $?"
ping -c 1 -W 2 10.99.0.1 >/dev/null; echo "ping exit $?"`
	r := mustRun(t, "run", "--uplink-netns", n.H, "--xdp", "redirect:hv", "--uplink-addr", "192.0.2.7/24", "--uplink-gateway", "192.0.2.10",
		"--dns-upstream", "10.99.0.1:53", "--deny", "all", "--allow", "svc.test", "--allow", "10.99.0.1/32", "--log-policy", "--", "sh", "-c", script)
	for _, want := range []string{"svc 1000\nsvc exit 0", "other exit 7", "addr exit 7", "ping exit 0"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s\nstderr: %s", want, r.stdout, r.stderr)
		}
	}
	if !strings.Contains(r.stderr, "-> 10.99.0.1:8085 (--allow svc.test)") || !strings.Contains(r.stderr, "deny tcp 10.0.2.100:") {
		t.Errorf("policy log:\n%s", r.stderr)
	}
}

// TestXDPPublish: with --xdp tunnel (and redirect), --publish listens in
// the netstack on its addresses on the host NIC: a LAN client reaches the
// sandbox's server at the netstack's address, over IPv4 and IPv6.
func TestXDPPublish(t *testing.T) {
	if sluiceBin == "" {
		testenv.Skip(t, "requires root to build and run sluice's sandbox")
	}
	testenv.RequireTool(t, "python3")
	for _, tc := range []struct {
		mode  string
		flags []string
		addrs []string
	}{
		{"redirect:hv", []string{"--uplink-addr=192.0.2.7/24", "--uplink-addr=2001:db8::7/64"}, []string{"192.0.2.7", "[2001:db8::7]"}},
		{"tunnel:hv", nil, []string{"192.0.2.2", "[2001:db8::2]"}},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			n := newXDPLAN(t)
			dir := t.TempDir()
			done := filepath.Join(dir, "done")
			os.WriteFile(filepath.Join(dir, "index.html"), []byte("hello from the sandbox\n"), 0o644)
			script := "cd " + dir + " && python3 -m http.server --bind :: 8080 >/dev/null 2>&1 &\n" +
				"i=0; while [ ! -e " + done + " ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done"
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			args := append([]string{"run", "--uplink-netns", n.H, "--xdp", tc.mode, "--publish", "18080:8080"}, tc.flags...)
			args = append(args, "--", "sh", "-c", script)
			cmd := exec.CommandContext(ctx, sluiceBin, args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				os.WriteFile(done, nil, 0o644)
				if err := cmd.Wait(); err != nil {
					t.Errorf("sluice: %v\nstderr: %s", err, stderr.String())
				}
			}()
			for _, a := range tc.addrs {
				var out string
				deadline := time.Now().Add(30 * time.Second)
				for time.Now().Before(deadline) {
					out, _ = testenv.Output("ip", "netns", "exec", n.L, "curl", "-sS", "-g", "--max-time", "5", "http://"+a+":18080/index.html")
					if strings.Contains(out, "hello from the sandbox") {
						break
					}
					time.Sleep(300 * time.Millisecond)
				}
				if !strings.Contains(out, "hello from the sandbox") {
					t.Errorf("curl http://%s:18080/ from the LAN: %q\nstderr: %s", a, out, stderr.String())
				}
			}
		})
	}
}
