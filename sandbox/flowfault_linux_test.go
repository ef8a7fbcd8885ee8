package sandbox

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicenet/sluice/dataplane"
)

// syncLog is a concurrency-safe log sink.
type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncLog) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncLog) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestUplinkContainsFlowFault: a panic in one flow's goroutine (here, in
// the hook that sees a UDP flow's datagrams, as the DNS service's does) ends
// that flow, is counted and logged, and leaves the process and another
// flow running.
func TestUplinkContainsFlowFault(t *testing.T) {
	var logs syncLog
	u := &uplink{}
	u.guard = dataplane.NewFaultGuard(dataplane.FaultOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))}, &u.faults, 1)

	relay := func(see func([]byte)) (net.Conn, net.Conn, chan struct{}) {
		a1, a2 := net.Pipe()
		b1, b2 := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			defer u.contain("udp flow", func() { a2.Close(); b1.Close() })
			relayUDP(a2, b1, time.Minute, see, nil, nil, u.flowFault)
		}()
		return a1, b2, done
	}
	badIn, _, badDone := relay(func(b []byte) {
		if bytes.Contains(b, []byte("boom")) {
			panic("test fault in a flow")
		}
	})
	goodIn, goodOut, goodDone := relay(nil)
	t.Cleanup(func() { goodIn.Close(); goodOut.Close() })

	if _, err := badIn.Write([]byte("boom")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-badDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the faulting flow did not end")
	}
	if n := u.Faults(); n != 1 {
		t.Errorf("Faults() = %d, want 1", n)
	}
	if s := logs.String(); !strings.Contains(s, "test fault in a flow") || !strings.Contains(s, "uplink: flow copy") {
		t.Errorf("fault not logged:\n%s", s)
	}
	// The other flow still relays.
	go func() { _, _ = goodIn.Write([]byte("hello")) }()
	_ = goodOut.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 16)
	n, err := goodOut.Read(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Errorf("other flow: read %q, %v; want hello", buf[:n], err)
	}
	select {
	case <-goodDone:
		t.Error("the other flow ended")
	default:
	}

	// A panic in the flow goroutine itself is contained by contain.
	cleaned := make(chan struct{})
	go func() {
		defer u.contain("tcp flow", func() { close(cleaned) })
		panic("test fault in a flow goroutine")
	}()
	select {
	case <-cleaned:
	case <-time.After(10 * time.Second):
		t.Fatal("cleanup did not run")
	}
	if n := u.Faults(); n != 2 {
		t.Errorf("Faults() = %d, want 2", n)
	}
}
