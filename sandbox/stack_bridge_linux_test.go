package sandbox_test

import (
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicenet/sluice/internal/testenv"
	"github.com/sluicenet/sluice/sandbox"
	"github.com/sluicenet/sluice/sandbox/bridge"
)

// bridgeArgs are the flags of a sandbox behind the bridge stack whose
// uplink is ns.
func bridgeArgs(ns string, more ...string) []string {
	return append([]string{"run", "--network", "plugin", "--plugin", "bridge", "--uplink-netns", ns}, more...)
}

// kernelState is what the bridge changes in its uplink namespace and must
// put back.
type kernelState struct {
	forwarding string // ip_forward and ipv6 all.forwarding
	links      string // bridge devices
	tables     string // bridge nftables tables
}

func uplinkState(t *testing.T, ns string) kernelState {
	t.Helper()
	var s kernelState
	s.forwarding = strings.TrimSpace(testenv.Exec(t, ns, "sysctl", "-n", "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"))
	for _, l := range strings.Split(testenv.IP(t, ns, "-o", "link", "show"), "\n") {
		if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(f[1], bridge.UplinkDevPrefix) {
			s.links += f[1] + " "
		}
	}
	for _, l := range strings.Split(testenv.Exec(t, ns, "nft", "list", "tables"), "\n") {
		if strings.Contains(l, bridge.TablePrefix) {
			s.tables += l + " "
		}
	}
	return s
}

// requireBridge skips (or fails in CI) without what the bridge stack needs.
func requireBridge(t *testing.T) string {
	t.Helper()
	testenv.RequireTool(t, "nft", "curl", "sha256sum")
	ns := serverNS(t)
	before := uplinkState(t, ns)
	t.Cleanup(func() {
		if after := uplinkState(t, ns); after != before {
			t.Errorf("the uplink namespace after sluice: %+v; before: %+v", after, before)
		}
	})
	return ns
}

// TestBridgeCurlSHA256 downloads 100 MB with curl through the bridge stack
// over IPv4 and IPv6, in the bridge's dispatch modes, checks the SHA-256,
// the links' counters and that super-frames crossed, and that nothing of
// the kernel side is left in the uplink namespace.
func TestBridgeCurlSHA256(t *testing.T) {
	ns := requireBridge(t)
	const size = 100 << 20
	sum := serveData(t, listen(t, ns, netip.AddrPortFrom(server4, 8080)), size)
	serveData(t, listen(t, ns, netip.AddrPortFrom(server6, 8080)), size)
	for _, tc := range []struct {
		name, url, config string
	}{
		{"ipv4 recvmmsg", "http://10.99.0.1:8080/data", ""},
		{"ipv6 recvmmsg", "http://[fd99::1]:8080/data", ""},
		{"ipv4 mmap", "http://10.99.0.1:8080/data", "dispatch=mmap"},
		{"ipv6 readv two channels", "http://[fd99::1]:8080/data", "dispatch=readv,channels=2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			statsFile := filepath.Join(t.TempDir(), "stats.json")
			args := bridgeArgs(ns, "--stats-file", statsFile, "--plugin-config", tc.config,
				"--", "sh", "-c", "curl -sS -g --max-time 90 "+tc.url+" | sha256sum")
			r := mustRun(t, args...)
			if got := strings.Fields(r.stdout); len(got) == 0 || got[0] != sum {
				t.Fatalf("sha256 inside the sandbox = %q, want %s\nstderr: %s", r.stdout, sum, r.stderr)
			}
			b, err := os.ReadFile(statsFile)
			if err != nil {
				t.Fatal(err)
			}
			var rep sandbox.Report
			if err := json.Unmarshal(b, &rep); err != nil {
				t.Fatalf("stats file %s: %v", b, err)
			}
			if len(rep.Interfaces) != 2 || rep.Interfaces[0].Name != sandbox.StackLinkName || rep.Interfaces[1].Name != bridge.StackDevName {
				t.Fatalf("stats file interfaces: %s; want %s and %s", b, sandbox.StackLinkName, bridge.StackDevName)
			}
			sb, up := rep.Interfaces[0], rep.Interfaces[1]
			if sb.TxBytes < size || up.RxBytes < size {
				t.Errorf("the download crossed %d bytes to the sandbox, %d from the uplink; want at least %d", sb.TxBytes, up.RxBytes, size)
			}
			// Fewer frames than a 1500-byte MTU would need: super-frames
			// crossed whole.
			if sb.TxPackets == 0 || sb.TxPackets > size/1448/2 {
				t.Errorf("%d frames carried %d bytes to the sandbox: super-frames did not cross whole", sb.TxPackets, sb.TxBytes)
			}
			if want := strings.Split(tc.config+",", ",")[0]; strings.HasPrefix(want, "dispatch=") {
				for _, m := range append(sb.Modes, up.Modes...) {
					if m != strings.TrimPrefix(want, "dispatch=") {
						t.Errorf("a channel ran %s, want %s", m, want)
					}
				}
			}
		})
	}
}

// TestBridgeIperf3 runs iperf3 both ways and over both families through
// the bridge stack.
func TestBridgeIperf3(t *testing.T) {
	testenv.RequireTool(t, "iperf3")
	ns := requireBridge(t)
	for i, tc := range []struct {
		name string
		args []string
	}{
		{"upload", nil},
		{"download", []string{"-R"}},
		{"upload ipv6", []string{"-6"}},
		{"download ipv6", []string{"-6", "-R"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := server4.String()
			if len(tc.args) > 0 && tc.args[0] == "-6" {
				addr = server6.String()
			}
			port := strconv.Itoa(5401 + i)
			srv := exec.Command("ip", "netns", "exec", ns, "iperf3", "-s", "-1", "-B", addr, "-p", port)
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
			waitListening(t, ns, addr, port)
			r := mustRun(t, bridgeArgs(ns, append([]string{"--", "iperf3", "-c", addr, "-p", port, "-t", "2", "-J"}, tc.args...)...)...)
			var rep struct {
				End struct {
					SumReceived struct {
						Bytes         int64   `json:"bytes"`
						BitsPerSecond float64 `json:"bits_per_second"`
					} `json:"sum_received"`
				} `json:"end"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
				t.Fatalf("iperf3 output: %v\n%s", err, r.stdout)
			}
			if rep.End.SumReceived.Bytes == 0 {
				t.Fatalf("iperf3 moved nothing:\n%s", r.stdout)
			}
			t.Logf("%s: %.2f Gbit/s", tc.name, rep.End.SumReceived.BitsPerSecond/1e9)
		})
	}
}

// TestBridgePolicyAndCapture denies a CIDR: TCP to it is refused at once
// (curl exit 7, from the bridge's RST), UDP to it gets ECONNREFUSED (from
// its port unreachable), a ping to it goes unanswered while the allowed
// server and the gateway answer, the allowed server is reached, the decisions are
// logged and counted, and --pcap-log holds the allowed flow in a file
// tcpdump reads.
func TestBridgePolicyAndCapture(t *testing.T) {
	testenv.RequireTool(t, "tcpdump", "bash")
	ns := requireBridge(t)
	second := netip.MustParseAddr("10.99.0.2")
	testenv.IP(t, ns, "addr", "add", second.String()+"/32", "dev", "lo")
	serveData(t, listen(t, ns, netip.MustParseAddrPort("10.99.0.1:8084")), 1000)
	serveData(t, listen(t, ns, netip.AddrPortFrom(second, 8084)), 1000)
	// Writes on a connected UDP socket until one fails: the first ICMP
	// error the socket receives fails the next write.
	udp := `exec 3<>/dev/udp/10.99.0.2/9; for i in $(seq 50); do echo x >&3 || exit 0; sleep 0.1; done; echo "udp never refused"`
	script := `curl -sS --max-time 10 -o /dev/null -w 'first %{size_download}\n' http://10.99.0.1:8084/data; echo "first exit $?"
curl -sS --max-time 10 -o /dev/null -w 'second %{size_download}\n' http://10.99.0.2:8084/data; echo "second exit $?"
bash -c '` + udp + `'
ping -c 1 -W 2 10.99.0.1 >/dev/null; echo "ping allowed exit $?"
ping -c 1 -W 2 10.99.0.2 >/dev/null; echo "ping denied exit $?"
ping -c 1 -W 2 10.0.2.2 >/dev/null; echo "ping gateway exit $?"`
	dir := t.TempDir()
	pcap, stats := filepath.Join(dir, "flow.pcap"), filepath.Join(dir, "stats.json")
	r := mustRun(t, bridgeArgs(ns, "--deny", "10.99.0.2/32", "--log-policy", "--pcap-log", pcap, "--stats-file", stats, "--", "sh", "-c", script)...)
	if !strings.Contains(r.stdout, "first 1000\nfirst exit 0") || !strings.Contains(r.stdout, "second exit 7") {
		t.Errorf("stdout %q: want the first downloaded and the second refused (curl exit 7)\nstderr: %s", r.stdout, r.stderr)
	}
	for _, want := range []string{"ping allowed exit 0", "ping denied exit 1", "ping gateway exit 0"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout %q lacks %q", r.stdout, want)
		}
	}
	if strings.Contains(r.stdout, "udp never refused") || !strings.Contains(r.stderr, "Connection refused") {
		t.Errorf("UDP to the denied address was not refused: stdout %q stderr %q", r.stdout, r.stderr)
	}
	for _, want := range []string{
		"sluice: policy: allow tcp 10.0.2.100:", "-> 10.99.0.1:8084 (default)",
		"sluice: policy: deny tcp 10.0.2.100:", "-> 10.99.0.2:8084 (--deny 10.99.0.2/32)",
		"sluice: policy: deny udp 10.0.2.100:", "-> 10.99.0.2:9 (--deny 10.99.0.2/32)",
		"sluice: policy: deny icmp 10.0.2.100:0 -> 10.99.0.2:0 (--deny 10.99.0.2/32)",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("--log-policy: stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	out := testenv.Run(t, "tcpdump", "-nn", "-r", pcap)
	for _, want := range []string{"10.0.2.100.", "> 10.99.0.1.8084: Flags [S]", "10.99.0.1.8084 > 10.0.2.100.", "10.99.0.2.8084 > 10.0.2.100.", "Flags [R.]", "udp port 9 unreachable"} {
		if !strings.Contains(out, want) {
			t.Errorf("tcpdump -r %s lacks %q:\n%s", pcap, want, out)
		}
	}
	b, err := os.ReadFile(stats)
	if err != nil {
		t.Fatal(err)
	}
	var rep sandbox.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	var denied uint64
	for _, p := range rep.Policy {
		if p.Rule == "--deny 10.99.0.2/32" {
			denied = p.Flows
		}
	}
	if denied != 3 {
		t.Errorf("stats: policy %+v, want 3 flows (tcp, udp, icmp) denied by --deny 10.99.0.2/32", rep.Policy)
	}
}

// TestBridgeGatewayIsNotTheHost checks that without --allow-host-loopback
// the sandbox cannot open a connection to the router's own sockets through
// the gateway address.
func TestBridgeGatewayIsNotTheHost(t *testing.T) {
	ns := requireBridge(t)
	serveData(t, listen(t, ns, netip.MustParseAddrPort("0.0.0.0:8086")), 1000)
	r := runSluice(t, bridgeArgs(ns, "--", "curl", "-sS", "--max-time", "10", "http://10.0.2.2:8086/data")...)
	if r.code != 7 {
		t.Errorf("curl to the gateway: exit %d, want 7 (refused)\nstdout %q\nstderr %q", r.code, r.stdout, r.stderr)
	}
}

// TestBridgeBadConfig checks a bad --plugin-config fails before the command
// runs, naming the problem, and leaves nothing behind.
func TestBridgeBadConfig(t *testing.T) {
	ns := requireBridge(t)
	for _, tc := range []struct{ config, want string }{
		{"dispatch=xdp", "dispatch=xdp: want readv, recvmmsg or mmap"},
		{"channels=0", "channels=0: want 1 to 64"},
		{"speed=fast", `unknown key "speed"`},
		{"mmap", `"mmap" is not key=value`},
	} {
		marker := filepath.Join(t.TempDir(), "ran")
		r := runSluice(t, bridgeArgs(ns, "--plugin-config", tc.config, "--", "touch", marker)...)
		if r.code == 0 || !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "--plugin-config") {
			t.Errorf("--plugin-config %s: exit %d, stderr %q; want a failure naming %q", tc.config, r.code, r.stderr, tc.want)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Errorf("--plugin-config %s: the command ran", tc.config)
		}
	}
	for _, flag := range []string{"--dns-upstream=10.99.0.1", "--xdp=ns", "--publish=8080:80"} {
		r := runSluice(t, bridgeArgs(ns, flag, "--", "true")...)
		name, _, _ := strings.Cut(flag, "=")
		if r.code == 0 || !strings.Contains(r.stderr, name) {
			t.Errorf("%s with the bridge: exit %d, stderr %q; want a failure naming %s", flag, r.code, r.stderr, name)
		}
	}
}

// TestBridgeKilled kills sluice with SIGKILL while the bridge runs: the
// kernel side goes anyway (the veth with the stack namespace, the table
// with the nft process's socket, the sysctls restored after it).
func TestBridgeKilled(t *testing.T) {
	ns := requireBridge(t)
	if sluiceBin == "" {
		testenv.Skip(t, "requires root to build and run sluice's sandbox")
	}
	before := uplinkState(t, ns)
	cmd := exec.Command(sluiceBin, bridgeArgs(ns, "--", "sleep", "60")...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	// The table comes first, then forwarding is turned on: wait for the
	// whole kernel side.
	deadline := time.Now().Add(30 * time.Second)
	for {
		running := uplinkState(t, ns)
		if running.tables != "" && running.links != "" && running.forwarding == "1\n1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after start: %+v; want a bridge table, a bridge device and forwarding on", running)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	deadline = time.Now().Add(10 * time.Second)
	for {
		after := uplinkState(t, ns)
		if after == before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s after SIGKILL the uplink namespace is %+v, before it was %+v", after, before)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
