//go:build linux

package dataplane

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/testenv"
)

// Test frames are Ethernet + IPv4 + UDP from 192.0.2.2 to 192.0.2.1
// (TEST-NET-1) whose payload starts with testMagic, a flow number and a
// sequence number, so that a receiver can tell them from anything else the
// kernel sends and check order per flow.
var testMagic = []byte("SLUICE01")

const (
	testHdrLen     = 14 + 20 + 8
	testPayloadOff = testHdrLen
	testMinPayload = 8 + 2 + 4 // magic, flow, seq
)

// udpFrame builds a test frame of flow (its UDP source port is 10000+flow)
// with sequence number seq and a payload of payloadLen bytes (at least
// testMinPayload).
func udpFrame(flow int, seq uint32, payloadLen int) []byte {
	payloadLen = max(payloadLen, testMinPayload)
	b := make([]byte, testHdrLen+payloadLen)
	copy(b[0:6], []byte{0x02, 0, 0, 0, 0, 0x01})  // dst: locally administered
	copy(b[6:12], []byte{0x02, 0, 0, 0, 0, 0x02}) // src
	binary.BigEndian.PutUint16(b[12:], etherTypeIPv4)
	ip := b[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+payloadLen))
	binary.BigEndian.PutUint16(ip[4:], uint16(seq))
	ip[8] = 64
	ip[9] = 17
	copy(ip[12:16], []byte{192, 0, 2, 2})
	copy(ip[16:20], []byte{192, 0, 2, 1})
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
	udp := b[34:42]
	binary.BigEndian.PutUint16(udp[0:], uint16(10000+flow))
	binary.BigEndian.PutUint16(udp[2:], 9000)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+payloadLen))
	p := b[testPayloadOff:]
	copy(p, testMagic)
	binary.BigEndian.PutUint16(p[8:], uint16(flow))
	binary.BigEndian.PutUint32(p[10:], seq)
	for i := testMinPayload; i < len(p); i++ {
		p[i] = byte(i + int(seq))
	}
	return b
}

func ipChecksum(h []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(h); i += 2 {
		s += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// parseTestFrame returns the flow and sequence number of a test frame.
func parseTestFrame(b []byte) (flow int, seq uint32, ok bool) {
	if len(b) < testHdrLen+testMinPayload || !bytes.Equal(b[testPayloadOff:testPayloadOff+8], testMagic) {
		return 0, 0, false
	}
	p := b[testPayloadOff:]
	return int(binary.BigEndian.Uint16(p[8:])), binary.BigEndian.Uint32(p[10:]), true
}

// rxFrame is a delivered frame, copied out of its buffers.
type rxFrame struct {
	data    []byte
	channel int
	hash    uint32
	vnet    VnetHdr
	hasVnet bool
	bufLens []int
}

// collector is a Deliverer that copies every frame, frees its buffers to
// alloc (so that a countingAlloc sees none leak) and lets a test wait for a
// count.
type collector struct {
	alloc Allocator
	mu    sync.Mutex
	got   []rxFrame // guarded by mu
	n     atomic.Int64
	// batchMax is the largest batch seen.
	batchMax atomic.Int64
}

func (c *collector) Deliver(frames []Frame) {
	if int64(len(frames)) > c.batchMax.Load() {
		c.batchMax.Store(int64(len(frames)))
	}
	c.mu.Lock()
	for i := range frames {
		f := &frames[i]
		r := rxFrame{data: make([]byte, f.Len), channel: f.Channel, hash: f.Hash, vnet: f.Vnet, hasVnet: f.HasVnet}
		if n := f.CopyTo(r.data); n != f.Len {
			r.data = r.data[:n] // a test sees the mismatch
		}
		for _, b := range f.Data {
			r.bufLens = append(r.bufLens, len(b.Data))
			if c.alloc != nil {
				c.alloc.Free(b)
			}
		}
		c.got = append(c.got, r)
	}
	c.mu.Unlock()
	c.n.Add(int64(len(frames)))
}

func (c *collector) frames() []rxFrame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]rxFrame(nil), c.got...)
}

// waitFor waits until at least n frames arrived, for at most d.
func (c *collector) waitFor(n int, d time.Duration) bool {
	return waitUntil(d, func() bool { return c.n.Load() >= int64(n) })
}

// waitUntil polls cond every millisecond for at most d.
func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// countingAlloc is a heap allocator that counts the buffers out, so that a
// test can check every buffer came back.
type countingAlloc struct{ out atomic.Int64 }

func (a *countingAlloc) Alloc(size int) Buffer {
	a.out.Add(1)
	return Buffer{Data: make([]byte, size)}
}

func (a *countingAlloc) Free(Buffer) { a.out.Add(-1) }

// poolAlloc recycles buffers by size: steady state allocates nothing.
type poolAlloc struct {
	mu   sync.Mutex
	free map[int][][]byte
}

func (p *poolAlloc) Alloc(size int) Buffer {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.free[size]; len(l) > 0 {
		b := l[len(l)-1]
		p.free[size] = l[:len(l)-1]
		return Buffer{Data: b}
	}
	return Buffer{Data: make([]byte, size)}
}

func (p *poolAlloc) Free(b Buffer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.free == nil {
		p.free = map[int][][]byte{}
	}
	d := b.Data[:cap(b.Data)]
	p.free[len(d)] = append(p.free[len(d)], d)
}

// logBuffer is a slog handler target tests can search.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// mustSocketpair returns a connected AF_UNIX pair of type typ, closed in
// t.Cleanup. Datagram and seqpacket pairs keep frame boundaries, which makes
// them a packet socket stand-in that needs no privilege.
func mustSocketpair(t testing.TB, typ int) (int, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	t.Cleanup(func() {
		unix.Close(fds[0])
		unix.Close(fds[1])
	})
	return fds[0], fds[1]
}

// mustPipe returns a non-blocking pipe (read end, write end), closed in
// t.Cleanup unless the test closed them first.
func mustPipe(t testing.TB) (int, int) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatalf("pipe: %v", err)
	}
	t.Cleanup(func() {
		unix.Close(p[0])
		unix.Close(p[1])
	})
	return p[0], p[1]
}

// mustLink creates a link and makes sure it is closed and joined at the end.
func mustLink(t testing.TB, o LinkOptions, d Deliverer) *Link {
	t.Helper()
	l, err := New(o, d)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		l.Close()
		l.Wait()
	})
	return l
}

// writeAll writes each frame to fd as one write, waiting out EAGAIN for at
// most 5 s in total.
func writeAll(t testing.TB, fd int, frames ...[]byte) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, f := range frames {
		for {
			_, err := unix.Write(fd, f)
			if err == nil {
				break
			}
			if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.ENOBUFS) || time.Now().After(deadline) {
				t.Fatalf("write %d-byte frame to fd %d: %v", len(f), fd, err)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
}

// checkGoroutines fails t if the goroutine count does not come back down to
// base within a few seconds.
func checkGoroutines(t testing.TB, base int) {
	t.Helper()
	if !waitUntil(5*time.Second, func() bool { return runtime.NumGoroutine() <= base }) {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Errorf("%d goroutines, %d before the link; stacks:\n%s", runtime.NumGoroutine(), base, buf)
	}
}

// quietVeth is testenv.NewVeth with IPv6 off on both sides, so that the
// kernel sends no router solicitations or MLD reports that a test would have
// to tell from its own frames.
func quietVeth(t testing.TB) *testenv.Veth {
	t.Helper()
	v := testenv.NewVeth(t)
	for _, ns := range []string{v.NSA, v.NSB} {
		testenv.Exec(t, ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	}
	return v
}

// checkFlows checks that got holds exactly the test frames of flows×perFlow,
// each flow in order, and nothing else; it returns how many frames each
// channel delivered.
func checkFlows(t testing.TB, got []rxFrame, flows, perFlow int) map[int]int {
	t.Helper()
	next := make([]uint32, flows)
	perChan := map[int]int{}
	flowChan := map[int]int{}
	var errs []string
	for _, f := range got {
		flow, seq, ok := parseTestFrame(f.data)
		if !ok || flow >= flows {
			errs = append(errs, fmt.Sprintf("unexpected %d-byte frame % x", len(f.data), f.data[:min(len(f.data), 48)]))
			continue
		}
		if seq != next[flow] {
			errs = append(errs, fmt.Sprintf("flow %d: got seq %d, want %d", flow, seq, next[flow]))
		}
		next[flow] = seq + 1
		if c, ok := flowChan[flow]; ok && c != f.channel {
			errs = append(errs, fmt.Sprintf("flow %d on channels %d and %d", flow, c, f.channel))
		}
		flowChan[flow] = f.channel
		perChan[f.channel]++
		if want := FlowHash(f.data, true, 0); f.hash != want {
			errs = append(errs, fmt.Sprintf("flow %d seq %d: Hash %#x, want %#x", flow, seq, f.hash, want))
		}
	}
	for flow, n := range next {
		if int(n) != perFlow {
			errs = append(errs, fmt.Sprintf("flow %d: %d frames, want %d", flow, n, perFlow))
		}
	}
	if len(errs) > 10 {
		errs = append(errs[:10], fmt.Sprintf("... and %d more", len(errs)-10))
	}
	if len(errs) > 0 {
		t.Errorf("delivered frames:\n%s", strings.Join(errs, "\n"))
	}
	return perChan
}
