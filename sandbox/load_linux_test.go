package sandbox_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/netns"
	"github.com/sluicenet/sluice/internal/testenv"
)

// Load: loadConns connections open at once, each echoing loadSize bytes of
// its own seeded data, verified byte for byte.
const (
	loadConns = 1000
	loadSize  = 32 << 10
	// loadSettle bounds the wait for descriptors and goroutines to come
	// back after the flows (a flow's goroutines end a moment after its
	// last byte).
	loadSettle = 30 * time.Second
	// loadDescriptors is what a load test needs in this process: both
	// ends of every flow (sluice's host sockets and the test's server or
	// client sockets), with room to spare.
	loadDescriptors = 4*loadConns + 1024
)

// serveEcho echoes every connection accepted on l (echoConn) until l
// closes.
func serveEcho(l net.Listener) {
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go echoConn(c.(*net.TCPConn))
		}
	}()
}

// TestLoadUplink runs loadConns concurrent connections from inside the
// sandbox through the host uplink to an echo server in the uplink
// namespace, every byte verified, and checks that this process (which runs
// the sandbox) is back to its descriptors and goroutines afterwards: with
// the sandbox still running once the flows are over, and after Close.
func TestLoadUplink(t *testing.T) {
	requireSluice(t)
	needDescriptors(t, loadDescriptors)
	ns := serverNS(t)
	server := netip.AddrPortFrom(server4, 7100)
	serveEcho(listen(t, ns, server))

	u0 := measure()
	h := startHelper(t, nil, []string{"--uplink-netns", ns}, "echo-client",
		helperAddr+"="+server.String(), helperConns+"="+strconv.Itoa(loadConns), helperSize+"="+strconv.Itoa(loadSize))
	h.expect("ready", time.Minute)
	u1 := measure()
	began := time.Now()
	stop := sampleMax()
	h.send("go")
	h.expect("holding", helperTimeout+time.Minute)
	took := time.Since(began)
	peak := stop()
	idle := measure()
	h.send("close")
	res := h.expect("result", helperTimeout)
	u2 := settle(u1, loadSettle)
	t.Logf("%s; echoes took %v", res, took.Round(time.Millisecond))
	t.Logf("sandbox up, before the flows: %v", u1)
	t.Logf("sandbox up, during the flows: at most %v", peak)
	t.Logf("sandbox up, %d flows open and idle: %v", loadConns, idle)
	t.Logf("sandbox up, after the flows:  %v", u2)
	checkBack(t, "sandbox running, flows over", u1, u2)

	if code := h.finish(); code != 0 {
		t.Errorf("helper exit status %d\nstderr: %s", code, h.errText())
	}
	u3 := settle(u0, loadSettle)
	t.Logf("before the sandbox: %v; after Close: %v; peak RSS %d MiB", u0, u3, peak.hwmKiB>>10)
	checkBack(t, "sandbox closed", u0, u3)
	if want := fmt.Sprintf("result conns=%d bytes=%d ", loadConns, loadConns*loadSize); len(res) < len(want) || res[:len(want)] != want {
		t.Errorf("helper reported %q, want %q...", res, want)
	}
}

// TestLoadPublish runs loadConns concurrent connections from the uplink
// namespace through a --publish port to an echo server inside the sandbox,
// every byte verified, with the same leak checks as TestLoadUplink.
func TestLoadPublish(t *testing.T) {
	requireSluice(t)
	needDescriptors(t, loadDescriptors)
	ns := serverNS(t)
	const published = "127.0.0.1:17100"

	u0 := measure()
	h := startHelper(t, nil, []string{"--uplink-netns", ns, "--publish", published + ":7100"}, "echo-server",
		helperAddr+"=:7100")
	h.expect("ready", time.Minute)
	u1 := measure()

	began := time.Now()
	stop := sampleMax()
	var (
		took       time.Duration
		peak, idle usage
	)
	// Each connection is opened on a thread in the uplink namespace; its
	// socket stays there.
	d := net.Dialer{Timeout: helperTimeout}
	total, errs := echoMany(loadConns, loadSize, func() (*net.TCPConn, error) {
		var c net.Conn
		err := netns.Do(ns, func() error {
			var err error
			c, err = d.Dial("tcp", published)
			return err
		})
		if err != nil {
			return nil, err
		}
		return c.(*net.TCPConn), nil
	}, func() {
		took = time.Since(began)
		peak = stop()
		idle = measure()
	})
	if len(errs) > 0 {
		t.Fatalf("%d bytes verified; first errors: %v\nsandbox stderr: %s", total, errors.Join(errs...), h.errText())
	}
	u2 := settle(u1, loadSettle)
	t.Logf("conns=%d bytes=%d each way through --publish; echoes took %v", loadConns, total, took.Round(time.Millisecond))
	t.Logf("sandbox up, before the flows: %v", u1)
	t.Logf("sandbox up, during the flows: at most %v (the test's own client sockets included)", peak)
	t.Logf("sandbox up, %d flows open and idle: %v (the same)", loadConns, idle)
	t.Logf("sandbox up, after the flows:  %v", u2)
	checkBack(t, "sandbox running, flows over", u1, u2)
	if total != loadConns*loadSize {
		t.Errorf("%d bytes verified, want %d", total, loadConns*loadSize)
	}

	if code := h.finish(); code != 0 {
		t.Errorf("helper exit status %d\nstderr: %s", code, h.errText())
	}
	u3 := settle(u0, loadSettle)
	t.Logf("before the sandbox: %v; after Close: %v; peak RSS %d MiB", u0, u3, peak.hwmKiB>>10)
	checkBack(t, "sandbox closed", u0, u3)
}

// TestLoadOutOfDescriptors runs the built sluice with a published echo
// server and lowers sluice's RLIMIT_NOFILE under it (prlimit) so that more
// clients arrive than it has descriptors for. sluice must say why it is
// refusing them, keep the published port, and serve a new client once the
// others have gone.
func TestLoadOutOfDescriptors(t *testing.T) {
	ns := serverNS(t)
	const published = "127.0.0.1:17102"
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r := startSluice(t, "", []string{helperEnv + "=echo-server", helperAddr + "=:7100"},
		"--uplink-netns", ns, "--publish", published+":7100", "--", exe, "-test.run=^$")
	r.expect(t, "ready", time.Minute)
	t0 := time.Now()
	pid := r.cmd.Process.Pid
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	const spare = 16
	var old unix.Rlimit
	lim := unix.Rlimit{Cur: uint64(len(fds) + spare), Max: 0}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &old); err != nil {
		t.Fatal(err)
	}
	lim.Max = old.Max
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		t.Fatal(err)
	}
	t.Logf("sluice holds %d descriptors; its limit is now %d (was %d)", len(fds), lim.Cur, old.Cur)

	// Four times as many clients as sluice has spare descriptors, all
	// held open: the first get through, the others wait or fail.
	const clients = 4 * spare
	var conns []*net.TCPConn
	testenv.Do(t, ns, func() error {
		for range clients {
			c, err := net.DialTimeout("tcp", published, 5*time.Second)
			if err != nil {
				return err
			}
			conns = append(conns, c.(*net.TCPConn))
		}
		return nil
	})
	served := 0
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if echoData(c, i, 1000) == nil {
				mu.Lock()
				served++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, c := range conns {
		c.Close()
	}
	t.Logf("%d of %d clients served with %d spare descriptors (%v since start)", served, clients, spare, time.Since(t0).Round(time.Millisecond))
	// A few descriptors more or less than counted may be free (a
	// pipe or timer of the runtime), but not for most clients.
	if served == 0 || served > clients/2 {
		t.Errorf("%d clients served; want some, but not most of %d", served, clients)
	}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &old, nil); err != nil {
		t.Fatal(err)
	}

	// The port still works once descriptors are free again.
	var errLast error
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		testenv.Do(t, ns, func() error {
			c, err := net.DialTimeout("tcp", published, 5*time.Second)
			if err != nil {
				errLast = err
				return nil
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			errLast = echoData(c.(*net.TCPConn), 0, 1000)
			return nil
		})
		if errLast == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("served again after descriptors were freed (%v since start)", time.Since(t0).Round(time.Millisecond))
	if errLast != nil {
		t.Errorf("the published port does not serve after descriptors were freed: %v\nstderr: %s", errLast, r.stderr)
	}
	if s := r.stderr.String(); !strings.Contains(s, "too many open files") || !strings.Contains(s, "RLIMIT_NOFILE") {
		t.Errorf("sluice's stderr does not say it ran out of descriptors:\n%s", s)
	}
	t.Logf("sluice's stderr:\n%s", r.stderr)
	r.stdin.Close()
	if code := r.wait(t, time.Minute); code != 0 {
		t.Errorf("exit status %d\nstderr: %s", code, r.stderr)
	}
}
