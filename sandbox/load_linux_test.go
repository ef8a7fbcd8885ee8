package sandbox_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/sluicenet/sluice/internal/netns"
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
