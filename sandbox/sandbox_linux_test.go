package sandbox_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
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
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/testenv"
	"github.com/sluicenet/sluice/sandbox"
)

// sluiceBin is the sluice binary TestMain builds: the sandbox's child
// re-executes its own executable as init, which in a test binary would be
// the test.
var sluiceBin string

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		// Re-executed as the command of a sandbox under test.
		os.Exit(runHelper(mode))
	}
	code := func() int {
		if os.Geteuid() == 0 {
			dir, err := os.MkdirTemp("", "sluice-sandbox-test")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer os.RemoveAll(dir)
			sluiceBin = filepath.Join(dir, "sluice")
			goTool, err := exec.LookPath("go")
			if err != nil {
				goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
			}
			build := exec.Command(goTool, "build", "-o", sluiceBin, "github.com/sluicenet/sluice/cmd/sluice")
			// Without cgo, as test.sh builds it: sluice run can then
			// drop its capabilities on every thread.
			build.Env = append(os.Environ(), "CGO_ENABLED=0")
			out, err := build.CombinedOutput()
			if err != nil {
				fmt.Fprintf(os.Stderr, "build sluice: %v\n%s", err, out)
				return 1
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

// Addresses of the test's server namespace, on its lo.
var (
	server4 = netip.MustParseAddr("10.99.0.1")
	server6 = netip.MustParseAddr("fd99::1")
)

// serverNS creates a namespace holding server4 and server6 on its lo: the
// uplink of the sandboxes under test dials into it, so nothing reaches the
// real network.
func serverNS(t *testing.T) string {
	t.Helper()
	testenv.RequireRoot(t)
	ns := testenv.NewNS(t)
	testenv.IP(t, ns, "addr", "add", server4.String()+"/32", "dev", "lo")
	testenv.IP(t, ns, "addr", "add", server6.String()+"/128", "dev", "lo", "nodad")
	return ns
}

// listen opens a TCP listener on addr inside ns.
func listen(t *testing.T, ns string, addr netip.AddrPort) net.Listener {
	t.Helper()
	var l net.Listener
	testenv.Do(t, ns, func() error {
		var err error
		l, err = net.Listen("tcp", addr.String())
		return err
	})
	t.Cleanup(func() { l.Close() })
	return l
}

// testSeed seeds the served data.
var testSeed = [32]byte{'s', 'l', 'u', 'i', 'c', 'e'}

// testData is size deterministic bytes and their SHA-256.
func testData(size int64) (io.Reader, string) {
	h := sha256.New()
	_, _ = io.Copy(h, io.LimitReader(rand.NewChaCha8(testSeed), size))
	return io.LimitReader(rand.NewChaCha8(testSeed), size), hex.EncodeToString(h.Sum(nil))
}

// serveData serves /data (size bytes) on l and returns the data's SHA-256.
func serveData(t *testing.T, l net.Listener, size int64) string {
	t.Helper()
	_, sum := testData(size)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/data" {
			http.NotFound(w, r)
			return
		}
		data := io.LimitReader(rand.NewChaCha8(testSeed), size)
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		_, _ = io.Copy(w, data)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return sum
}

type result struct {
	stdout, stderr string
	code           int
}

// runSluice runs the built sluice with args, bounded by two minutes.
func runSluice(t *testing.T, args ...string) result {
	t.Helper()
	if sluiceBin == "" {
		testenv.Skip(t, "requires root to build and run sluice's sandbox")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, sluiceBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("sluice %q: %v", args, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("sluice %q timed out\nstdout: %s\nstderr: %s", args, r.stdout, r.stderr)
	}
	return r
}

func mustRun(t *testing.T, args ...string) result {
	t.Helper()
	r := runSluice(t, args...)
	if r.code != 0 {
		t.Fatalf("sluice %q: exit status %d\nstdout: %s\nstderr: %s", args, r.code, r.stdout, r.stderr)
	}
	return r
}

// TestCurlDownload downloads 50 MB with curl inside the sandbox from an
// HTTP server in the test's namespace, in each dispatch mode, and over
// IPv6, and checks the SHA-256 and the link's counters.
func TestCurlDownload(t *testing.T) {
	testenv.RequireTool(t, "curl", "sha256sum")
	ns := serverNS(t)
	const size = 50 << 20
	sum := serveData(t, listen(t, ns, netip.AddrPortFrom(server4, 8080)), size)
	serveData(t, listen(t, ns, netip.AddrPortFrom(server6, 8080)), size)
	for _, tc := range []struct {
		name string
		mode dataplane.Mode
		url  string
		more []string
	}{
		{"readv", dataplane.Readv, "http://10.99.0.1:8080/data", nil},
		{"recvmmsg", dataplane.RecvMMsg, "http://10.99.0.1:8080/data", nil},
		{"mmap", dataplane.PacketMMap, "http://10.99.0.1:8080/data", nil},
		{"ipv6", dataplane.RecvMMsg, "http://[fd99::1]:8080/data", nil},
		{"ipv6 mmap", dataplane.PacketMMap, "http://[fd99::1]:8080/data", nil},
		{"two channels", dataplane.RecvMMsg, "http://10.99.0.1:8080/data", []string{"--num-network-channels=2"}},
		{"software gso", dataplane.RecvMMsg, "http://10.99.0.1:8080/data", []string{"--gso=false"}},
		{"no gso", dataplane.RecvMMsg, "http://10.99.0.1:8080/data", []string{"--gso=false", "--software-gso=false"}},
		{"mtu 1500", dataplane.RecvMMsg, "http://10.99.0.1:8080/data", []string{"--mtu=1500"}},
		{"mtu 1500 mmap", dataplane.PacketMMap, "http://10.99.0.1:8080/data", []string{"--mtu=1500"}},
		{"fifo qdisc", dataplane.RecvMMsg, "http://10.99.0.1:8080/data", []string{"--qdisc=fifo"}},
		{"tx checksum offload", dataplane.RecvMMsg, "http://10.99.0.1:8080/data", []string{"--tx-checksum-offload"}},
		{"gro", dataplane.RecvMMsg, "http://10.99.0.1:8080/data", []string{"--gvisor-gro"}},
		{"throughput profile", dataplane.RecvMMsg, "http://10.99.0.1:8080/data", []string{"--profile=throughput"}},
		{"latency profile", dataplane.PacketMMap, "http://10.99.0.1:8080/data", []string{"--profile=latency"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			statsFile := filepath.Join(t.TempDir(), "stats.json")
			args := append([]string{"run", "--uplink-netns", ns, "--dispatch", tc.mode.String(), "--stats-file", statsFile}, tc.more...)
			args = append(args, "--", "sh", "-c", "curl -sS -g --max-time 60 "+tc.url+" | sha256sum")
			r := mustRun(t, args...)
			if got := strings.Fields(r.stdout); len(got) == 0 || got[0] != sum {
				t.Fatalf("sha256 inside the sandbox = %q, want %s\nstderr: %s", r.stdout, sum, r.stderr)
			}
			var rep sandbox.Report
			b, err := os.ReadFile(statsFile)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &rep); err != nil {
				t.Fatalf("stats file %s: %v", b, err)
			}
			if len(rep.Interfaces) != 1 {
				t.Fatalf("stats file has %d interfaces, want 1: %s", len(rep.Interfaces), b)
			}
			st := rep.Interfaces[0]
			if st.TxBytes < size || st.RxPackets == 0 {
				t.Errorf("counters %+v: want tx bytes >= %d (the download) and some rx packets", st.Stats, size)
			}
			if st.Offloads == nil || len(st.Offloads.Offloads) == 0 {
				t.Errorf("stats file has no offload report: %s", b)
			}
			for _, m := range st.Modes {
				if m != tc.mode.String() {
					t.Errorf("channel ran %s, want %v", m, tc.mode)
				}
			}
		})
	}
}

// TestPing pings the gateway (answered by the netstack) and the server
// (forwarded from a host socket in the uplink namespace), over IPv4 and
// IPv6, and checks that an address nobody has stays silent.
func TestPing(t *testing.T) {
	testenv.RequireTool(t, "ping")
	ns := serverNS(t)
	for _, tc := range []struct {
		name, addr string
		answered   bool
	}{
		{"gateway4", "10.0.2.2", true},
		{"gateway6", "fd00:51ce::2", true},
		{"server4", server4.String(), true},
		{"server6", server6.String(), true},
		{"nobody4", "10.99.0.77", false},
		{"subnet neighbour", "10.0.2.50", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runSluice(t, "run", "--uplink-netns", ns, "--", "ping", "-c", "2", "-i", "0.2", "-W", "1", tc.addr)
			if tc.answered && (r.code != 0 || !strings.Contains(r.stdout, " 0% packet loss")) {
				t.Errorf("ping %s: exit %d\n%s%s", tc.addr, r.code, r.stdout, r.stderr)
			}
			if !tc.answered && (r.code == 0 || strings.Contains(r.stdout, "bytes from")) {
				t.Errorf("ping %s was answered; nobody has that address\n%s", tc.addr, r.stdout)
			}
		})
	}
}

// TestIperf3 runs iperf3 briefly in both directions between the sandbox and
// a server in the test's namespace.
func TestIperf3(t *testing.T) {
	testenv.RequireTool(t, "iperf3")
	ns := serverNS(t)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"upload", nil},
		{"download", []string{"-R"}},
		{"upload ipv6", []string{"-6"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := server4.String()
			if len(tc.args) > 0 && tc.args[0] == "-6" {
				addr = server6.String()
			}
			port := strconv.Itoa(5301 + len(tc.name))
			srv := exec.Command("ip", "netns", "exec", ns, "iperf3", "-s", "-1", "-B", addr, "-p", port)
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
			waitListening(t, ns, addr, port)
			args := append([]string{"run", "--uplink-netns", ns, "--", "iperf3", "-c", addr, "-p", port, "-t", "2", "-J"}, tc.args...)
			r := mustRun(t, args...)
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

// waitListening waits up to 5 s for a TCP listener on port in ns. It reads
// the namespace's socket table rather than connecting, since a probe
// connection would count as iperf3 -1's one test.
func waitListening(t *testing.T, ns, addr, port string) {
	t.Helper()
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(":%04X ", p)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		found := false
		testenv.Do(t, ns, func() error {
			for _, f := range []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"} {
				b, _ := os.ReadFile(f)
				for _, line := range strings.Split(string(b), "\n") {
					fields := strings.Fields(line)
					// local_address rem_address st: 0A is LISTEN.
					if len(fields) > 3 && strings.HasSuffix(fields[1]+" ", want) && fields[3] == "0A" {
						found = true
					}
				}
			}
			return nil
		})
		if found {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s:%s in %s", addr, port, ns)
}

// TestUDP sends UDP through the uplink (a host socket per flow) to an
// iperf3 server in the test namespace.
func TestUDP(t *testing.T) {
	testenv.RequireTool(t, "iperf3")
	ns := serverNS(t)
	port := "5399"
	srv := exec.Command("ip", "netns", "exec", ns, "iperf3", "-s", "-1", "-B", server4.String(), "-p", port)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	waitListening(t, ns, server4.String(), port)
	r := mustRun(t, "run", "--uplink-netns", ns, "--", "iperf3", "-c", server4.String(), "-p", port, "-u", "-b", "50M", "-t", "1", "-J")
	var rep struct {
		End struct {
			Sum struct {
				Packets     int64   `json:"packets"`
				LostPercent float64 `json:"lost_percent"`
			} `json:"sum"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("iperf3 output: %v\n%s", err, r.stdout)
	}
	if rep.End.Sum.Packets == 0 || rep.End.Sum.LostPercent > 50 {
		t.Errorf("UDP through the uplink: %d packets, %.1f%% lost", rep.End.Sum.Packets, rep.End.Sum.LostPercent)
	}
}

// TestHostLoopback checks that the gateway reaches the uplink namespace's
// loopback only with --allow-host-loopback.
func TestHostLoopback(t *testing.T) {
	testenv.RequireTool(t, "curl")
	ns := serverNS(t)
	serveData(t, listen(t, ns, netip.MustParseAddrPort("127.0.0.1:8081")), 1000)
	r := runSluice(t, "run", "--uplink-netns", ns, "--", "curl", "-sS", "--max-time", "10", "-o", "/dev/null", "http://10.0.2.2:8081/data")
	// curl's exit status 7 is "failed to connect": the netstack resets
	// the SYN to the gateway.
	if r.code != 7 {
		t.Errorf("without --allow-host-loopback: exit %d, stderr %q; want 7 (connection refused)", r.code, r.stderr)
	}
	r = mustRun(t, "run", "--allow-host-loopback", "--uplink-netns", ns, "--", "curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{size_download}", "http://10.0.2.2:8081/data")
	if r.stdout != "1000" {
		t.Errorf("with --allow-host-loopback: downloaded %q bytes, want 1000", r.stdout)
	}
}

func TestExitStatus(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"zero", []string{"run", "--", "true"}, 0},
		{"seven", []string{"run", "--", "sh", "-c", "exit 7"}, 7},
		{"killed by SIGTERM", []string{"run", "--", "sh", "-c", "kill -TERM $$"}, 128 + 15},
		{"killed by SIGKILL", []string{"run", "--network=none", "--", "sh", "-c", "kill -KILL $$"}, 128 + 9},
		{"network none", []string{"run", "--network=none", "--", "sh", "-c", "exit 3"}, 3},
		{"network host", []string{"run", "--network=host", "--", "sh", "-c", "exit 4"}, 4},
		{"not found", []string{"run", "--", "/nonexistent/command"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runSluice(t, tc.args...)
			if r.code != tc.want {
				t.Errorf("sluice %q: exit status %d, want %d\nstderr: %s", tc.args, r.code, tc.want, r.stderr)
			}
		})
	}
}

func TestNetworkModes(t *testing.T) {
	r := mustRun(t, "run", "--network=none", "--", "ip", "-o", "link")
	if strings.Contains(r.stdout, "eth0") || !strings.Contains(r.stdout, "lo:") || !strings.Contains(r.stdout, "UP") {
		t.Errorf("--network none: links\n%s\nwant lo only, up", r.stdout)
	}
	self := hostNS(t)
	r = mustRun(t, "run", "--network=host", "--", "readlink", "/proc/self/ns/net")
	if strings.TrimSpace(r.stdout) != self {
		t.Errorf("--network host: command in %s, want the host's %s", r.stdout, self)
	}
	r = mustRun(t, "run", "--", "readlink", "/proc/self/ns/net")
	if strings.TrimSpace(r.stdout) == self {
		t.Error("--network sandbox: the command runs in the host namespace")
	}
	r = mustRun(t, "run", "--mtu=9000", "--", "ip", "-o", "addr")
	for _, want := range []string{"10.0.2.100/24", "fd00:51ce::100/64"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("sandbox addresses\n%s\nlack %s", r.stdout, want)
		}
	}
	// Not /sys/class/net: sysfs shows the namespace of whoever mounted
	// it, and the sandbox shares sluice's mounts.
	r = mustRun(t, "run", "--mtu=9000", "--", "ip", "-o", "link", "show", "eth0")
	if !strings.Contains(r.stdout, " mtu 9000 ") {
		t.Errorf("--mtu 9000: eth0 is\n%s", r.stdout)
	}
}

// hostNS returns the network namespace this test process runs sluice in.
// It reads the calling thread's: /proc/self is the main thread's, which
// the Go runtime leaves in a test namespace for good when a goroutine that
// unshared one ends on it.
func hostNS(t *testing.T) string {
	t.Helper()
	ns, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// TestSignalsPassedOn sends SIGTERM and SIGINT to sluice and expects the
// command's trap to see them.
func TestSignalsPassedOn(t *testing.T) {
	if sluiceBin == "" {
		testenv.Skip(t, "requires root to build and run sluice's sandbox")
	}
	for _, tc := range []struct {
		sig  syscall.Signal
		want int
	}{{syscall.SIGTERM, 42}, {syscall.SIGINT, 43}} {
		t.Run(tc.sig.String(), func(t *testing.T) {
			cmd := exec.Command(sluiceBin, "run", "--", "sh", "-c",
				`trap "exit 42" TERM; trap "exit 43" INT; echo ready; while :; do sleep 0.05; done`)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cmd.Process.Kill() }()
			line, _ := bufio.NewReader(out).ReadString('\n')
			if line != "ready\n" {
				t.Fatalf("command said %q", line)
			}
			if err := cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("sluice did not exit within 10 s of %v", tc.sig)
			}
			if got := cmd.ProcessState.ExitCode(); got != tc.want {
				t.Errorf("exit status %d after %v, want %d (the command's trap)", got, tc.sig, tc.want)
			}
		})
	}
}

// TestFailsBeforeTheCommandStarts checks that wrong flags and impossible
// settings fail with a message naming the flag, and that the command never
// ran.
func TestFailsBeforeTheCommandStarts(t *testing.T) {
	// A namespace whose routes cover the default subnet.
	v := testenv.NewVeth(t)
	testenv.IP(t, v.NSA, "addr", "add", "10.0.2.1/24", "dev", v.A)
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"overlapping subnet", []string{"--uplink-netns", v.NSA}, []string{"--subnet 10.0.2.0/24", "overlaps", "10.0.2.0/24", "--subnet"}},
		{"bad flag value", []string{"--qdisc=red"}, []string{`"red"`, "--qdisc"}},
		{"bad mtu", []string{"--mtu=100"}, []string{"--mtu 100"}},
		{"pcap in a missing directory", []string{"--pcap-log=/nonexistent/dir/x.pcap"}, []string{"--pcap-log", "no such file or directory"}},
		{"xdp ns mtu too large", []string{"--xdp=ns", "--mtu=9000"}, []string{"--mtu 9000", "--xdp ns", "3506"}},
		{"missing uplink namespace", []string{"--uplink-netns=/nonexistent/ns"}, []string{"--uplink-netns /nonexistent/ns"}},
		{"unknown plugin", []string{"--network=plugin", "--plugin=no-such-stack"}, []string{"--plugin no-such-stack", "no such stack", "registered: ", "netstack"}},
		{"plugin network without a plugin", []string{"--network=plugin"}, []string{"--network plugin needs --plugin NAME"}},
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
			if _, err := os.Stat(marker); err == nil {
				t.Error("the command ran")
			}
		})
	}
}

// nsOf returns the "net:[inode]" of every network namespace pid holds:
// its threads' and its open descriptors'.
func nsOf(pid int) map[string]bool {
	out := map[string]bool{}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/ns/net", pid))
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	for _, p := range append(tasks, fds...) {
		if l, err := os.Readlink(p); err == nil && strings.HasPrefix(l, "net:[") {
			out[l] = true
		}
	}
	return out
}

// heldNamespaces returns every network namespace some process holds (as a
// thread's namespace or an open descriptor) or that is bind-mounted, with
// who holds it.
func heldNamespaces() map[string][]string {
	out := map[string][]string{}
	pids, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range pids {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err != nil {
			continue
		}
		for ns := range nsOf(pid) {
			cmdline, _ := os.ReadFile(p + "/cmdline")
			out[ns] = append(out[ns], fmt.Sprintf("pid %d (%s)", pid, strings.ReplaceAll(string(cmdline), "\x00", " ")))
		}
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mi), "\n") {
		if i := strings.Index(line, "net:["); i >= 0 {
			ns := strings.Fields(line[i:])[0]
			out[ns] = append(out[ns], "a mount: "+line)
		}
	}
	return out
}

// sluiceLinks lists links named like sluice's stack-side veth in every
// namespace this process can see.
func sluiceLinks(t *testing.T) []string {
	t.Helper()
	var found []string
	seen := map[string]bool{}
	pids, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range pids {
		ns, err := os.Readlink(p + "/ns/net")
		if err != nil || seen[ns] {
			continue
		}
		seen[ns] = true
		out, err := exec.Command("nsenter", "--net="+p+"/ns/net", "ip", "-o", "link").CombinedOutput()
		if err != nil {
			continue // the process is gone
		}
		if strings.Contains(string(out), sandbox.StackLinkName) {
			found = append(found, ns+" (pid "+filepath.Base(p)+")")
		}
	}
	return found
}

// childOf waits up to 10 s for a process whose parent is ppid and whose
// command line starts with name, and returns its pid.
func childOf(t *testing.T, ppid int, name string) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		pids, _ := filepath.Glob("/proc/[0-9]*")
		for _, p := range pids {
			b, err := os.ReadFile(p + "/stat")
			if err != nil {
				continue
			}
			// pid (comm) state ppid ...
			f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
			if len(f) < 2 || f[1] != strconv.Itoa(ppid) {
				continue
			}
			cmdline, _ := os.ReadFile(p + "/cmdline")
			if strings.HasPrefix(string(cmdline), name+"\x00") {
				pid, _ := strconv.Atoi(filepath.Base(p))
				return pid
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %s child of %d appeared", name, ppid)
	return 0
}

// TestNothingLeftBehind runs sandboxes that end normally and by SIGKILL of
// sluice, and checks that no process, namespace or veth of theirs remains.
func TestNothingLeftBehind(t *testing.T) {
	if sluiceBin == "" {
		testenv.Skip(t, "requires root to build and run sluice's sandbox")
	}
	testenv.RequireTool(t, "nsenter", "ip")
	netnsBefore := testenv.Run(t, "ip", "netns", "list")
	if links := sluiceLinks(t); len(links) > 0 {
		t.Logf("links named %s exist before the test (another sandbox runs): %v", sandbox.StackLinkName, links)
	}

	for _, kill := range []bool{false, true} {
		t.Run(map[bool]string{false: "normal exit", true: "kill -9"}[kill], func(t *testing.T) {
			// A daemon the command leaves behind (sleep 60 &) must go too.
			cmd := exec.Command(sluiceBin, "run", "--", "sh", "-c", "sleep 60 & exec sleep 2")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
			child := childOf(t, cmd.Process.Pid, "sleep")
			childNS, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", child))
			if err != nil {
				t.Fatal(err)
			}
			// The stack namespace is held by sluice's descriptors.
			held := nsOf(cmd.Process.Pid)
			held[childNS] = true
			// sluice's own threads run in the test's namespace, which
			// stays; so do those the test process holds itself.
			delete(held, hostNS(t))
			for ns := range nsOf(os.Getpid()) {
				delete(held, ns)
			}
			if len(held) < 2 {
				t.Fatalf("sluice holds namespaces %v: want the command's and the stack's", held)
			}
			// By cookie: a namespace made by another test after these
			// were freed may get one of their inodes.
			heldCookies := cookies(t, held)
			if kill {
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
			}
			_ = cmd.Wait()

			deadline := time.Now().Add(10 * time.Second)
			for {
				var left []string
				if _, err := os.Stat(fmt.Sprintf("/proc/%d", child)); err == nil {
					left = append(left, fmt.Sprintf("command pid %d", child))
				}
				for ns, cookie := range heldCookies {
					if h := holders(ns, cookie); len(h) > 0 {
						left = append(left, fmt.Sprintf("namespace %s held by %v", ns, h))
					}
				}
				if len(left) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("10 s after sluice ended, still there: %v", left)
				}
				time.Sleep(50 * time.Millisecond)
			}
			// The stack's veth lives in the namespaces checked above;
			// one created in the wrong place would be in the test's
			// namespace, which is sluice's. (Other namespaces on the
			// machine may hold other tests' sandboxes.)
			if out := testenv.Run(t, "ip", "-o", "link"); strings.Contains(out, sandbox.StackLinkName) {
				t.Errorf("a link named %s remains in sluice's namespace: %s", sandbox.StackLinkName, out)
			}
			// A namespace sluice held must not survive as a named one
			// either (a bind mount under /run/netns holds it without a
			// process). Names other tests made meanwhile have other
			// cookies.
			after, _ := filepath.Glob("/run/netns/*")
			for _, p := range after {
				if strings.Contains(netnsBefore, filepath.Base(p)) {
					continue
				}
				c, err := nsCookie(p)
				if err != nil {
					continue // removed meanwhile, or not a namespace
				}
				for ns, held := range heldCookies {
					if c == held {
						t.Errorf("namespace %s of sluice's remains as %s", ns, p)
					}
				}
			}
		})
	}
}

// TestConcurrentSandboxes runs two sandboxes at once: their private
// namespaces make the same names (sluice0, eth0, 10.0.2.100) coexist.
func TestConcurrentSandboxes(t *testing.T) {
	ns := serverNS(t)
	sum := serveData(t, listen(t, ns, netip.AddrPortFrom(server4, 8082)), 4<<20)
	testenv.RequireTool(t, "curl", "sha256sum")
	var wg sync.WaitGroup
	errs := make(chan string, 2)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := runSluice(t, "run", "--uplink-netns", ns, "--", "sh", "-c", "curl -sS --max-time 30 http://10.99.0.1:8082/data | sha256sum")
			if f := strings.Fields(r.stdout); r.code != 0 || len(f) == 0 || f[0] != sum {
				errs <- fmt.Sprintf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
