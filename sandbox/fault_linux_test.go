package sandbox_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicenet/sluice/internal/syncbuf"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/netns"
	"github.com/sluicenet/sluice/internal/testenv"
	"github.com/sluicenet/sluice/sandbox"
)

// faultSize is the size of a faulted transfer: at streamTo's pace it takes
// about 10 s, so a fault injected at its first bytes lands mid-transfer.
const faultSize = 64 << 20

// streamServer streams faultSize bytes to every connection it accepts, in
// this process.
type streamServer struct {
	l     net.Listener
	wg    sync.WaitGroup
	ended chan error // one per connection, when its stream ends
	mu    sync.Mutex
	conns []net.Conn // guarded by mu
}

func serveStream(t *testing.T, l net.Listener) *streamServer {
	s := &streamServer{l: l, ended: make(chan error, 64)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				err := streamTo(c.(*net.TCPConn), faultSize)
				c.Close()
				s.ended <- err
			}()
		}
	}()
	t.Cleanup(s.close)
	return s
}

// close stops the server and ends its streams.
func (s *streamServer) close() {
	s.l.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// streamEnded waits up to d for a stream of s to end and returns how.
func (s *streamServer) streamEnded(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case err := <-s.ended:
		return err
	case <-time.After(d):
		t.Fatalf("the server's stream still runs %v after the fault", d)
		return nil
	}
}

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// netNamespaces returns the network namespaces ("net:[inode]") this
// process holds by descriptor.
func netNamespaces() map[string]bool {
	out := map[string]bool{}
	fds, _ := filepath.Glob("/proc/self/fd/*")
	for _, p := range fds {
		if l, err := os.Readlink(p); err == nil && strings.HasPrefix(l, "net:[") {
			out[l] = true
		}
	}
	return out
}

// nsInode returns the inode of "net:[inode]".
func nsInode(ns string) string {
	return strings.TrimSuffix(strings.TrimPrefix(ns, "net:["), "]")
}

// nsPaths returns paths by which processes hold the network namespace ns
// ("net:[inode]"): their threads' namespaces and their descriptors.
func nsPaths(ns string) []string {
	var out []string
	tasks, _ := filepath.Glob("/proc/[0-9]*/task/*/ns/net")
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, p := range append(tasks, fds...) {
		if l, err := os.Readlink(p); err == nil && l == ns {
			out = append(out, p)
		}
	}
	return out
}

// nsCookie returns the cookie of the network namespace at path: unlike its
// inode, which a namespace made after it was freed may get, never reused.
func nsCookie(path string) (uint64, error) {
	var cookie uint64
	err := netns.Do(path, func() error {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		return err
	})
	return cookie, err
}

// cookies returns the cookie of each namespace in held, which must be alive.
func cookies(t *testing.T, held map[string]bool) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for ns := range held {
		paths := nsPaths(ns)
		if len(paths) == 0 {
			t.Fatalf("nobody holds %s", ns)
		}
		c, err := nsCookie(paths[0])
		if err != nil {
			t.Fatalf("cookie of %s: %v", ns, err)
		}
		out[ns] = c
	}
	return out
}

// holders describes the processes that hold the namespace ns with cookie:
// only those, not holders of a later namespace that got the same inode.
func holders(ns string, cookie uint64) []string {
	var out []string
	for _, p := range nsPaths(ns) {
		if c, err := nsCookie(p); err == nil && c == cookie {
			pid := strings.Split(p, "/")[2]
			b, _ := os.ReadFile("/proc/" + pid + "/cmdline")
			out = append(out, fmt.Sprintf("%s (%s)", p, bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
		}
	}
	return out
}

// checkNothingLeft waits up to 15 s for every process in pids to be gone and
// every namespace in held (with its cookie) to be held by nobody, then
// checks that nothing is pinned for those namespaces under
// /sys/fs/bpf/sluice (XDP attachments are pinned per namespace inode).
func checkNothingLeft(t *testing.T, pids []int, held map[string]uint64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var left []string
		for _, pid := range pids {
			if pid > 0 {
				if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
					b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
					left = append(left, fmt.Sprintf("process %d (%s)", pid, bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
				}
			}
		}
		for ns, cookie := range held {
			if h := holders(ns, cookie); len(h) > 0 {
				left = append(left, fmt.Sprintf("namespace %s held by %v", ns, h))
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("15 s after the sandbox ended, still there: %v", left)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for ns := range held {
		p := filepath.Join("/sys/fs/bpf/sluice", nsInode(ns))
		if _, err := os.Stat(p); err == nil {
			t.Errorf("pins remain in %s", p)
		}
	}
}

// faultSandbox starts a stream client in a sandbox (in this process) whose
// uplink is uplinkNS, reading from server, and returns once the first bytes
// arrived. It returns the sandbox's own namespaces (stack and command) too.
func faultSandbox(t *testing.T, log *slog.Logger, uplinkNS string, server netip.AddrPort) (*helper, map[string]uint64) {
	t.Helper()
	before := netNamespaces()
	h := startHelper(t, log, []string{"--uplink-netns", uplinkNS}, "stream-client",
		helperAddr+"="+server.String(), helperSize+"="+strconv.Itoa(faultSize))
	h.expect("receiving", time.Minute)
	mine := map[string]bool{}
	for ns := range netNamespaces() {
		if !before[ns] {
			mine[ns] = true
		}
	}
	if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", h.sb.Pid())); err == nil {
		mine[l] = true
	}
	if uplink, err := os.Stat(netns.Path(uplinkNS)); err == nil {
		delete(mine, fmt.Sprintf("net:[%d]", uplink.Sys().(*syscall.Stat_t).Ino))
	}
	if len(mine) != 2 {
		t.Fatalf("the sandbox holds namespaces %v: want the stack's and the command's", mine)
	}
	return h, cookies(t, mine)
}

// endFault waits for the stream client's verdict after a fault, checks that
// it names the failure (want), that the command's status is sluice's, and
// that the sandbox leaves nothing behind: no process, namespace, pin,
// descriptor or goroutine.
func endFault(t *testing.T, h *helper, held map[string]uint64, base usage, want ...string) {
	t.Helper()
	verdict := h.expect("error", time.Minute)
	t.Logf("the command said: %s", verdict)
	if !containsAny(verdict, want) {
		t.Errorf("the command's verdict %q names none of %q", verdict, want)
	}
	pid := h.sb.Pid()
	if code := h.finish(); code != 1 {
		t.Errorf("exit status %d, want the command's 1\nstderr: %s", code, h.errText())
	}
	checkNothingLeft(t, []int{pid}, held)
	u := settle(base, loadSettle)
	t.Logf("before the sandbox: %v; after Close: %v", base, u)
	checkBack(t, "after the fault and Close", base, u)
}

func containsAny(s string, subs []string) bool {
	for _, w := range subs {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

// TestFaultServerLinkDeleted deletes the uplink namespace's veth to the
// server while a download through the uplink flows. The host socket loses
// its route; the command sees the flow stall and says so, and the sandbox
// ends cleanly.
func TestFaultServerLinkDeleted(t *testing.T) {
	requireSluice(t)
	v := testenv.NewVeth(t)
	testenv.IP(t, v.NSA, "addr", "add", "10.98.0.1/24", "dev", v.A)
	testenv.IP(t, v.NSB, "addr", "add", "10.98.0.2/24", "dev", v.B)
	server := netip.MustParseAddrPort("10.98.0.2:7200")
	srv := serveStream(t, listen(t, v.NSB, server))

	base := measure()
	h, held := faultSandbox(t, nil, v.NSA, server)
	testenv.IP(t, v.NSA, "link", "del", v.A)
	endFault(t, h, held, base, "stalled", "reset", "ended early")
	srv.close()
}

// TestFaultServerNamespaceDeleted kills the server and deletes its
// namespace (and with it the veth to the uplink namespace) while a download
// flows.
func TestFaultServerNamespaceDeleted(t *testing.T) {
	requireSluice(t)
	v := testenv.NewVeth(t)
	testenv.IP(t, v.NSA, "addr", "add", "10.98.0.1/24", "dev", v.A)
	testenv.IP(t, v.NSB, "addr", "add", "10.98.0.2/24", "dev", v.B)
	server := netip.MustParseAddrPort("10.98.0.2:7201")
	// The server runs as a process of its own in the namespace: sockets
	// of this process would keep the namespace alive.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	srv := exec.Command("nsenter", "--net="+netns.Path(v.NSB), "--", exe, "-test.run=^$")
	srv.Env = append(os.Environ(), helperEnv+"=stream-server", helperAddr+"="+server.String(), helperSize+"="+strconv.Itoa(faultSize))
	srvIn, err := srv.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	srvOut, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srvIn.Close(); _ = srv.Process.Kill(); _ = srv.Wait() })
	if line, _ := bufio.NewReader(srvOut).ReadString('\n'); line != "ready\n" {
		t.Fatalf("the server said %q", line)
	}

	serverNS := ""
	var serverCookie uint64
	if st, err := os.Stat(netns.Path(v.NSB)); err == nil {
		serverNS = fmt.Sprintf("net:[%d]", st.Sys().(*syscall.Stat_t).Ino)
	}
	if serverCookie, err = nsCookie(netns.Path(v.NSB)); err != nil {
		t.Fatal(err)
	}
	base := measure()
	h, held := faultSandbox(t, nil, v.NSA, server)
	if err := srv.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = srv.Wait()
	if err := netns.Delete(v.NSB); err != nil {
		t.Fatal(err)
	}
	endFault(t, h, held, base, "stalled", "reset", "ended early")
	// With the server's namespace gone, so is its veth: the uplink
	// namespace's end goes with it.
	deadline := time.Now().Add(30 * time.Second)
	for strings.Contains(testenv.IP(t, v.NSA, "-o", "link"), v.A+"@") {
		if time.Now().After(deadline) {
			// Sockets the kernel still winds down (the killed
			// server's, orphaned) may hold a namespace a while; a
			// process holding it is a leak.
			if h := holders(serverNS, serverCookie); len(h) > 0 {
				t.Errorf("%s still in %s 30 s after the server's namespace was deleted; %s is held by %v", v.A, v.NSA, serverNS, h)
			} else {
				t.Logf("%s still in %s 30 s after the server's namespace was deleted, held by no process (the kernel's own sockets)", v.A, v.NSA)
			}
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestFaultStackLinkDeleted deletes the sandbox's own veth at its stack
// side while a download flows. sluice says so on its log; the command
// loses its network (eth0 is the same pair), says so, and the sandbox ends
// cleanly, without sluice spinning meanwhile.
func TestFaultStackLinkDeleted(t *testing.T) {
	requireSluice(t)
	ns := serverNS(t)
	server := netip.AddrPortFrom(server4, 7202)
	srv := serveStream(t, listen(t, ns, server))
	var logs syncbuf.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))

	base := measure()
	h, held := faultSandbox(t, log, ns, server)
	// The stack namespace is held by a descriptor of this process.
	stackNS := ""
	cmdNS, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", h.sb.Pid()))
	fds, _ := filepath.Glob("/proc/self/fd/*")
	for _, p := range fds {
		if l, err := os.Readlink(p); err == nil && held[l] != 0 && l != cmdNS {
			stackNS = fmt.Sprintf("/proc/%d/fd/%s", os.Getpid(), filepath.Base(p))
		}
	}
	if stackNS == "" {
		t.Fatal("found no descriptor of the stack namespace")
	}
	cpu0, wall0 := cpuTime(), time.Now()
	testenv.Run(t, "nsenter", "--net="+stackNS, "--", "ip", "link", "del", sandbox.StackLinkName)
	verdict := h.expect("error", time.Minute)
	cpu, wall := cpuTime()-cpu0, time.Since(wall0)
	t.Logf("the command said: %s", verdict)
	t.Logf("CPU time while the sandbox had no link: %v in %v", cpu.Round(time.Millisecond), wall.Round(time.Millisecond))
	// A dispatcher that spun on its dead socket would burn a whole CPU
	// for the whole stall.
	if cpu > wall/2 {
		t.Errorf("sluice used %v of CPU in the %v the link was gone: it spins", cpu, wall)
	}
	if !containsAny(verdict, []string{"stalled", "unreachable", "reset"}) {
		t.Errorf("the command's verdict %q does not name the loss", verdict)
	}
	pid := h.sb.Pid()
	if code := h.finish(); code != 1 {
		t.Errorf("exit status %d, want the command's 1\nstderr: %s", code, h.errText())
	}
	if got := logs.String(); !strings.Contains(got, "stack-side link was deleted") || !strings.Contains(got, sandbox.StackLinkName) {
		t.Errorf("sluice's log does not say the link was deleted:\n%s", got)
	}
	t.Logf("sluice's log:\n%s", logs.String())
	srv.close()
	checkNothingLeft(t, []int{pid}, held)
	u := settle(base, loadSettle)
	t.Logf("before the sandbox: %v; after Close: %v", base, u)
	checkBack(t, "after the fault and Close", base, u)
}

// runningSluice is the built sluice running a sandbox, with the processes
// and namespaces it made.
type runningSluice struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string // the command's stdout, line by line
	stderr *syncbuf.Buffer
	waited chan struct{} // closed when cmd has been waited for
}

// startSluice runs `sluice run --uplink-netns ns -- argv...` (with ns "",
// `sluice run argv...`) with env added to its environment, which the
// command inherits.
func startSluice(t *testing.T, ns string, env []string, argv ...string) *runningSluice {
	t.Helper()
	requireSluice(t)
	r := &runningSluice{lines: make(chan string, 16), stderr: &syncbuf.Buffer{}, waited: make(chan struct{})}
	args := []string{"run"}
	if ns != "" {
		args = append(args, "--uplink-netns", ns, "--")
	}
	r.cmd = exec.Command(sluiceBin, append(args, argv...)...)
	r.cmd.Env = append(os.Environ(), env...)
	r.cmd.Stderr = r.stderr
	var err error
	if r.stdin, err = r.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := r.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			r.lines <- sc.Text()
		}
		close(r.lines)
	}()
	go func() { _ = r.cmd.Wait(); close(r.waited) }()
	t.Cleanup(func() {
		_ = r.cmd.Process.Kill()
		<-r.waited
	})
	return r
}

// expect waits up to d for a line of the command's starting with prefix.
func (r *runningSluice) expect(t *testing.T, prefix string, d time.Duration) string {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case l, ok := <-r.lines:
			if !ok {
				t.Fatalf("the command's output ended before %q\nstderr: %s", prefix, r.stderr)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-timeout:
			t.Fatalf("no %q from the command within %v\nstderr: %s", prefix, d, r.stderr)
		}
	}
}

// wait waits up to d for sluice to exit and returns its exit status.
func (r *runningSluice) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-r.waited:
	case <-time.After(d):
		t.Fatalf("sluice still runs %v later\nstderr: %s", d, r.stderr)
	}
	return r.cmd.ProcessState.ExitCode()
}

// sandboxNamespaces returns the namespaces sluice (pid) holds besides the
// test's own and ns (the uplink's): the stack's, plus the command's (cmdPid).
func sandboxNamespaces(t *testing.T, pid, cmdPid int, ns string) map[string]uint64 {
	t.Helper()
	held := nsOf(pid)
	if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", cmdPid)); err == nil {
		held[l] = true
	}
	delete(held, hostNS(t))
	for n := range nsOf(os.Getpid()) {
		delete(held, n)
	}
	if st, err := os.Stat(netns.Path(ns)); err == nil {
		delete(held, fmt.Sprintf("net:[%d]", st.Sys().(*syscall.Stat_t).Ino))
	}
	if len(held) != 2 {
		t.Fatalf("sluice holds namespaces %v: want the stack's and the command's", held)
	}
	return cookies(t, held)
}

// TestFaultSluiceKilled sends SIGKILL to sluice mid-download: the command
// and the guard go, the guard sweeps the namespace, the flow's host socket
// closes (the server's stream is cut), and no namespace or pin is left.
func TestFaultSluiceKilled(t *testing.T) {
	ns := serverNS(t)
	server := netip.AddrPortFrom(server4, 7203)
	srv := serveStream(t, listen(t, ns, server))
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r := startSluice(t, ns, []string{helperEnv + "=stream-client", helperAddr + "=" + server.String(), helperSize + "=" + strconv.Itoa(faultSize)},
		exe, "-test.run=^$")
	r.expect(t, "receiving", time.Minute)
	pid := r.cmd.Process.Pid
	command := childOf(t, pid, exe)
	guard := childOf(t, pid, "sluice\x00"+sandbox.GuardCommand)
	held := sandboxNamespaces(t, pid, command, ns)

	if err := r.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := r.wait(t, 30*time.Second); code != -1 {
		t.Errorf("sluice exit status %d, want death by SIGKILL", code)
	}
	// The server's write fails once the kernel closed sluice's socket.
	err = srv.streamEnded(t, time.Minute)
	t.Logf("the server's stream ended with: %v", err)
	if err == nil {
		t.Error("the server's stream ended without an error: it should have been cut")
	}
	checkNothingLeft(t, []int{command, guard}, held)
}

// TestFaultCommandExitsWithFlowsOpen runs a command that starts a download
// in the background and exits with status 3 while it flows: sluice exits
// with 3, the guard ends the background download, its flow closes, and
// nothing is left.
func TestFaultCommandExitsWithFlowsOpen(t *testing.T) {
	ns := serverNS(t)
	server := netip.AddrPortFrom(server4, 7204)
	srv := serveStream(t, listen(t, ns, server))
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The download runs in the background (its stdin /dev/null); the
	// shell exits once the test writes a line to its stdin.
	r := startSluice(t, ns, []string{helperEnv + "=stream-client", helperAddr + "=" + server.String(), helperSize + "=" + strconv.Itoa(faultSize)},
		"sh", "-c", `"$0" -test.run='^$' & read x; echo "the command exits, its download still running" >&2; exit 3`, exe)
	r.expect(t, "receiving", time.Minute)
	pid := r.cmd.Process.Pid
	shell := childOf(t, pid, "sh")
	download := childOf(t, shell, exe)
	guard := childOf(t, pid, "sluice\x00"+sandbox.GuardCommand)
	held := sandboxNamespaces(t, pid, shell, ns)

	if _, err := io.WriteString(r.stdin, "exit\n"); err != nil {
		t.Fatal(err)
	}
	if code := r.wait(t, time.Minute); code != 3 {
		t.Errorf("sluice exit status %d, want the command's 3\nstderr: %s", code, r.stderr)
	}
	if !strings.Contains(r.stderr.String(), "the command exits, its download still running") {
		t.Errorf("stderr %q lacks the command's last word", r.stderr)
	}
	err = srv.streamEnded(t, time.Minute)
	t.Logf("the server's stream ended with: %v", err)
	if err == nil {
		t.Error("the server's stream completed: the background download should have been cut")
	}
	checkNothingLeft(t, []int{shell, download, guard}, held)
}
