package sandbox_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/testenv"
	"github.com/sluicenet/sluice/sandbox"
)

// The test binary doubles as the program a sandbox runs: TestMain hands over
// to runHelper when helperEnv names a mode. The helper talks to the test over
// its stdin and stdout: it prints "ready", waits for a line on stdin before
// it starts (so the test can take its baseline), prints "result ..." or
// "error ...", and then stays until its stdin is closed (so the test can
// measure the sandbox at rest with the flows over). The echo client also
// prints "holding" once every connection has echoed, and waits for a line
// before it closes them (so the test can measure idle flows).
const helperEnv = "SLUICE_TEST_HELPER"

// Helper parameters, in the environment.
const (
	helperAddr  = "SLUICE_TEST_ADDR"  // host:port to dial or listen on
	helperConns = "SLUICE_TEST_CONNS" // connections to open at once
	helperSize  = "SLUICE_TEST_SIZE"  // bytes per connection
)

// helperTimeout bounds every helper's connection and wait.
const helperTimeout = 3 * time.Minute

func runHelper(mode string) int {
	var err error
	switch mode {
	case "echo-client":
		err = helperEchoClient()
	case "echo-server":
		err = helperEchoServer()
	case "stream-client":
		err = helperStreamClient()
	case "stream-server":
		err = helperStreamServer()
	default:
		err = fmt.Errorf("unknown helper mode %q", mode)
	}
	if err != nil {
		fmt.Printf("error %v\n", err)
		fmt.Fprintf(os.Stderr, "helper %s: %v\n", mode, err)
		return 1
	}
	return 0
}

func envInt(name string) (int, error) {
	v, err := strconv.Atoi(os.Getenv(name))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return v, nil
}

// awaitGo prints "ready" and waits for the test's go-ahead line.
func awaitGo(in *bufio.Reader) error {
	fmt.Println("ready")
	if _, err := in.ReadString('\n'); err != nil {
		return fmt.Errorf("wait for the go-ahead: %w", err)
	}
	return nil
}

// seeded returns size deterministic bytes for connection i.
func seeded(i, size int) []byte {
	var seed [32]byte
	copy(seed[:], fmt.Sprintf("sluice load %d", i))
	b := make([]byte, size)
	_, _ = io.ReadFull(rand.NewChaCha8(seed), b)
	return b
}

// echoData sends connection i's bytes on c and checks that the same bytes
// come back, leaving the connection open. The caller sets c's deadline.
func echoData(c *net.TCPConn, i, size int) error {
	want := seeded(i, size)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(want)
		werr <- err
	}()
	got := make([]byte, size)
	n, err := io.ReadFull(c, got)
	if e := <-werr; e != nil {
		return fmt.Errorf("connection %d: send: %w", i, e)
	}
	if err != nil {
		return fmt.Errorf("connection %d: read the echo after %d bytes: %w", i, n, err)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("connection %d: the echo differs from what was sent", i)
	}
	return nil
}

// echoClose half-closes c and checks that the peer's FIN follows, with no
// more bytes.
func echoClose(c *net.TCPConn, i int) error {
	_ = c.SetDeadline(time.Now().Add(helperTimeout))
	if err := c.CloseWrite(); err != nil {
		return fmt.Errorf("connection %d: half-close: %w", i, err)
	}
	if rest, err := io.ReadAll(c); err != nil || len(rest) > 0 {
		return fmt.Errorf("connection %d: after the FIN: %d more bytes, %v; want EOF", i, len(rest), err)
	}
	return nil
}

// echoMany opens n connections with dial, waits until all are open at once,
// then echoes size bytes on each concurrently (echoData). When held is not
// nil, it is called once every echo is in, with all the connections still
// open and idle. Then each connection closes (echoClose). It returns the
// bytes verified (each way) and the first errors.
func echoMany(n, size int, dial func() (*net.TCPConn, error), held func()) (int64, []error) {
	var (
		opened, echoed, done sync.WaitGroup
		start                = make(chan struct{})
		hold                 = make(chan struct{})
		verified             atomic.Int64
		mu                   sync.Mutex
		errs                 []error
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if len(errs) < 10 {
			errs = append(errs, err)
		}
	}
	opened.Add(n)
	echoed.Add(n)
	done.Add(n)
	for i := range n {
		go func() {
			defer done.Done()
			c, err := dial()
			opened.Done()
			if err != nil {
				echoed.Done()
				fail(fmt.Errorf("connection %d: dial: %w", i, err))
				return
			}
			defer c.Close()
			<-start
			_ = c.SetDeadline(time.Now().Add(helperTimeout))
			err = echoData(c, i, size)
			echoed.Done()
			if err != nil {
				fail(err)
				return
			}
			<-hold
			if err := echoClose(c, i); err != nil {
				fail(err)
				return
			}
			verified.Add(int64(size))
		}()
	}
	opened.Wait()
	close(start)
	echoed.Wait()
	if held != nil {
		held()
	}
	close(hold)
	done.Wait()
	return verified.Load(), errs
}

// helperEchoClient opens helperConns connections to helperAddr at once and
// echoes helperSize verified bytes on each.
func helperEchoClient() error {
	n, err := envInt(helperConns)
	if err != nil {
		return err
	}
	size, err := envInt(helperSize)
	if err != nil {
		return err
	}
	addr := os.Getenv(helperAddr)
	in := bufio.NewReader(os.Stdin)
	if err := awaitGo(in); err != nil {
		return err
	}
	began := time.Now()
	d := net.Dialer{Timeout: helperTimeout}
	total, errs := echoMany(n, size, func() (*net.TCPConn, error) {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			return nil, err
		}
		return c.(*net.TCPConn), nil
	}, func() {
		// Every connection echoed and is idle: the test measures,
		// then lets them close.
		fmt.Println("holding")
		_, _ = in.ReadString('\n')
	})
	if len(errs) > 0 {
		return fmt.Errorf("%d bytes verified; first errors: %v", total, errors.Join(errs...))
	}
	fmt.Printf("result conns=%d bytes=%d duration=%v\n", n, total, time.Since(began).Round(time.Millisecond))
	_, _ = io.Copy(io.Discard, in)
	return nil
}

// echoConn sends back what it reads on c, then passes the FIN on. It copies
// through a buffer of its own: TCPConn.ReadFrom would splice(2) through
// pooled pipes, which hold descriptors after the connection ends.
func echoConn(c *net.TCPConn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(helperTimeout))
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				_ = c.CloseWrite()
			}
			return
		}
	}
}

// helperEchoServer echoes every connection to helperAddr until its stdin is
// closed.
func helperEchoServer() error {
	l, err := net.Listen("tcp", os.Getenv(helperAddr))
	if err != nil {
		return err
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go echoConn(c.(*net.TCPConn))
		}
	}()
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return l.Close()
}

// Pacing of streamTo: streamChunk bytes every streamPause, about 6 MB/s, so
// that a fault injected once the first bytes arrived lands mid-transfer.
const (
	streamChunk = 64 << 10
	streamPause = 10 * time.Millisecond
)

// streamTo writes size bytes to c at the pace above, each write bounded by
// helperTimeout, then half-closes.
func streamTo(c *net.TCPConn, size int) error {
	buf := seeded(0, streamChunk)
	for sent := 0; sent < size; {
		_ = c.SetWriteDeadline(time.Now().Add(helperTimeout))
		n, err := c.Write(buf[:min(len(buf), size-sent)])
		sent += n
		if err != nil {
			return err
		}
		time.Sleep(streamPause)
	}
	return c.CloseWrite()
}

// helperStreamServer streams helperSize bytes (streamTo) to every
// connection to helperAddr until its stdin is closed or it is killed.
func helperStreamServer() error {
	size, err := envInt(helperSize)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", os.Getenv(helperAddr))
	if err != nil {
		return err
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _ = streamTo(c.(*net.TCPConn), size) }()
		}
	}()
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return l.Close()
}

// helperStreamClient reads helperAddr (a streamServer) until EOF, checking
// that it gets helperSize bytes; a stall of 10 s without a byte ends it
// with an error that says so. It prints "receiving" once the first bytes
// arrived.
func helperStreamClient() error {
	size, err := envInt(helperSize)
	if err != nil {
		return err
	}
	addr := os.Getenv(helperAddr)
	c, err := net.DialTimeout("tcp", addr, 30*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	const stall = 10 * time.Second
	buf := make([]byte, 64<<10)
	var got int
	announced := false
	for {
		_ = c.SetReadDeadline(time.Now().Add(stall))
		n, err := c.Read(buf)
		got += n
		if got > 0 && !announced {
			fmt.Println("receiving")
			announced = true
		}
		if errors.Is(err, io.EOF) {
			if got != size {
				return fmt.Errorf("stream ended early: %d of %d bytes", got, size)
			}
			fmt.Printf("result bytes=%d\n", got)
			return nil
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return fmt.Errorf("stream stalled: no byte for %v after %d of %d bytes", stall, got, size)
		}
		if err != nil {
			return fmt.Errorf("stream failed after %d of %d bytes: %w", got, size, err)
		}
	}
}

// helper is a sandbox running the test binary in a helper mode, in this
// process (sandbox.Start), so that the test can count this process's
// descriptors and goroutines.
type helper struct {
	t      *testing.T
	sb     *sandbox.Sandbox
	stdin  *os.File // the helper's stdin, our end
	lines  *bufio.Reader
	stdout *os.File // the helper's stdout, our end
	stderr string   // file holding the helper's stderr
}

// startHelper starts a sandbox with flags running the helper mode with env;
// the sandbox logs to log (nil discards).
func startHelper(t *testing.T, log *slog.Logger, flags []string, mode string, env ...string) *helper {
	t.Helper()
	requireSluice(t)
	cfg, err := sandbox.ParseFlags(flags)
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	errPath := filepath.Join(t.TempDir(), "stderr")
	errF, err := os.Create(errPath)
	if err != nil {
		t.Fatal(err)
	}
	defer errF.Close()
	sb, err := sandbox.Start(t.Context(), sandbox.Options{
		Config:   cfg,
		Args:     []string{exe, "-test.run=^$"},
		Env:      append(os.Environ(), append([]string{helperEnv + "=" + mode}, env...)...),
		Stdin:    inR,
		Stdout:   outW,
		Stderr:   errF,
		InitPath: sluiceBin,
		Logger:   log,
	})
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		t.Fatalf("start the sandbox: %v", err)
	}
	h := &helper{t: t, sb: sb, stdin: inW, stdout: outR, lines: bufio.NewReader(outR), stderr: errPath}
	t.Cleanup(h.close)
	return h
}

// line returns the helper's next line of output, waiting up to d.
func (h *helper) line(d time.Duration) string {
	h.t.Helper()
	_ = h.stdout.SetReadDeadline(time.Now().Add(d))
	s, err := h.lines.ReadString('\n')
	if err != nil {
		h.t.Fatalf("helper output: %v (got %q)\nstderr: %s", err, s, h.errText())
	}
	return strings.TrimSuffix(s, "\n")
}

// expect reads the next line and fails unless it starts with prefix.
func (h *helper) expect(prefix string, d time.Duration) string {
	h.t.Helper()
	s := h.line(d)
	if !strings.HasPrefix(s, prefix) {
		h.t.Fatalf("helper said %q, want %q...\nstderr: %s", s, prefix, h.errText())
	}
	return s
}

func (h *helper) send(s string) {
	h.t.Helper()
	if _, err := io.WriteString(h.stdin, s+"\n"); err != nil {
		h.t.Fatalf("write to the helper: %v", err)
	}
}

func (h *helper) errText() string {
	b, _ := os.ReadFile(h.stderr)
	return string(b)
}

// finish closes the helper's stdin, waits (bounded) for it to exit, closes
// the sandbox and returns the exit status.
func (h *helper) finish() int {
	h.t.Helper()
	h.stdin.Close()
	select {
	case <-h.sb.Done():
	case <-time.After(time.Minute):
		h.t.Errorf("the helper did not exit within a minute of its stdin closing")
	}
	code, err := h.sb.Wait()
	if err != nil {
		h.t.Error(err)
	}
	h.close()
	return code
}

func (h *helper) close() {
	h.stdin.Close()
	h.sb.Close()
	h.stdout.Close()
}

// requireSluice skips (fails in CI) without the sluice binary TestMain built.
func requireSluice(t *testing.T) {
	t.Helper()
	if sluiceBin == "" {
		testenv.Skip(t, "requires root to build and run sluice's sandbox")
	}
}

// needDescriptors raises this process's RLIMIT_NOFILE to at least n (as
// root, the hard limit too): a load test holds both ends of its flows here,
// and the commands it starts inherit the hard limit, to which Go programs
// raise their own.
func needDescriptors(t *testing.T, n uint64) {
	t.Helper()
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	lim.Cur, lim.Max = n, max(lim.Max, n)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		testenv.Skip(t, fmt.Sprintf("requires RLIMIT_NOFILE >= %d; raising it failed (CAP_SYS_RESOURCE?): %v", n, err))
	}
}

// usage is what this process holds.
type usage struct {
	fds, goroutines int
	rssKiB, hwmKiB  int
}

func (u usage) String() string {
	return fmt.Sprintf("%d fds, %d goroutines, RSS %d MiB (peak %d MiB)", u.fds, u.goroutines, u.rssKiB>>10, u.hwmKiB>>10)
}

func measure() usage {
	var u usage
	ents, _ := os.ReadDir("/proc/self/fd")
	u.fds = len(ents)
	u.goroutines = runtime.NumGoroutine()
	st, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(st), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "VmRSS:" {
			u.rssKiB, _ = strconv.Atoi(f[1])
		}
		if len(f) >= 2 && f[0] == "VmHWM:" {
			u.hwmKiB, _ = strconv.Atoi(f[1])
		}
	}
	return u
}

// sampleMax measures this process every 50 ms until stop is called, which
// returns the largest descriptor and goroutine counts seen (the sampler's
// own goroutine not counted).
func sampleMax() (stop func() usage) {
	var top usage
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			u := measure()
			u.goroutines--
			top.fds = max(top.fds, u.fds)
			top.goroutines = max(top.goroutines, u.goroutines)
			top.rssKiB = max(top.rssKiB, u.rssKiB)
			top.hwmKiB = max(top.hwmKiB, u.hwmKiB)
			select {
			case <-quit:
				return
			case <-t.C:
			}
		}
	}()
	return func() usage {
		close(quit)
		<-done
		return top
	}
}

// Slack of the leak checks: what may differ between two measurements of a
// process at rest without anything having leaked (a descriptor the runtime
// or a test library opened on first use, a goroutine of the test framework
// between tests).
const (
	fdSlack        = 4
	goroutineSlack = 8
)

// settle waits up to d for this process to come back to base (within the
// slack) and returns the last measurement; the caller asserts it.
func settle(base usage, d time.Duration) usage {
	deadline := time.Now().Add(d)
	for {
		u := measure()
		if u.fds <= base.fds+fdSlack && u.goroutines <= base.goroutines+goroutineSlack {
			return u
		}
		if time.Now().After(deadline) {
			return u
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkBack fails t unless now is back to base within the slack.
func checkBack(t *testing.T, what string, base, now usage) {
	t.Helper()
	if now.fds > base.fds+fdSlack {
		t.Errorf("%s: %d descriptors open, %d before (slack %d): leaked\n%s", what, now.fds, base.fds, fdSlack, fdList())
	}
	if now.goroutines > base.goroutines+goroutineSlack {
		t.Errorf("%s: %d goroutines, %d before (slack %d): leaked\n%s", what, now.goroutines, base.goroutines, goroutineSlack, goroutineDump())
	}
}

// fdList describes this process's open descriptors, for a leak report.
func fdList() string {
	ents, _ := os.ReadDir("/proc/self/fd")
	kinds := map[string]int{}
	for _, e := range ents {
		l, _ := os.Readlink("/proc/self/fd/" + e.Name())
		if i := strings.IndexByte(l, '['); i > 0 {
			l = l[:i]
		}
		kinds[l]++
	}
	return fmt.Sprintf("descriptors by kind: %v", kinds)
}

// goroutineDump counts this process's goroutines by the function each is
// blocked in, for a leak report.
func goroutineDump() string {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	where := map[string]int{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		lines := strings.Split(g, "\n")
		// "goroutine N [state]:", then function, file pairs; the
		// first frame outside the runtime says who it is.
		at := "?"
		for i := 1; i+1 < len(lines); i += 2 {
			if !strings.HasPrefix(lines[i], "runtime.") && !strings.HasPrefix(lines[i], "internal/") && !strings.HasPrefix(lines[i], "sync.") {
				at = lines[i]
				break
			}
		}
		if j := strings.LastIndexByte(at, '('); j > 0 {
			at = at[:j]
		}
		where[at]++
	}
	var out []string
	for k, v := range where {
		if v > 1 {
			out = append(out, fmt.Sprintf("%6d %s", v, k))
		}
	}
	sort.Strings(out)
	return "goroutines by place (more than one):\n" + strings.Join(out, "\n")
}
