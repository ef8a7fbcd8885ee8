//go:build linux

package dataplane

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// These tests use AF_UNIX socketpairs and pipes as descriptors, which keeps
// them free of privilege; the veth tests in link_veth_linux_test.go run the
// same paths on packet sockets.

func TestLinkReceiveSocketpair(t *testing.T) {
	sizes := []int{14, 60, 127, 128, 129, 300, 1500, 4000, 9000}
	for _, mode := range []Mode{Readv, RecvMMsg} {
		for _, procs := range []int{1, 3} {
			t.Run(mode.String()+"/procs="+string(rune('0'+procs)), func(t *testing.T) {
				a, b := mustSocketpair(t, unix.SOCK_DGRAM)
				alloc := &countingAlloc{}
				c := &collector{alloc: alloc}
				l := mustLink(t, LinkOptions{FDs: []int{a}, Mode: mode, EthernetHeader: true, ProcessorsPerChannel: procs, Allocator: alloc}, c)
				if got := l.Mode(0); got != mode {
					t.Fatalf("Mode(0) = %v, want %v", got, mode)
				}
				l.Start()
				var want [][]byte
				var nbytes uint64
				for i, size := range sizes {
					f := make([]byte, size)
					for j := range f {
						f[j] = byte(i*7 + j)
					}
					want = append(want, f)
					nbytes += uint64(size)
				}
				writeAll(t, b, want...)
				if !c.waitFor(len(want), 10*time.Second) {
					t.Fatalf("got %d frames, want %d", c.n.Load(), len(want))
				}
				got := c.frames()
				var gotData [][]byte
				for _, f := range got {
					gotData = append(gotData, f.data)
				}
				if procs > 1 {
					// Their bytes are not IP: the "ethertypes" differ,
					// so frames hash to different processors and only
					// the set is fixed, not the order.
					sortBytes(want)
					sortBytes(gotData)
				}
				if diff := cmp.Diff(want, gotData); diff != "" {
					t.Errorf("frames (-want +got):\n%s", diff)
				}
				// Only the buffers a frame needs are handed over.
				for _, f := range got {
					want := chainLens(DefaultBufferShape, len(f.data))
					if diff := cmp.Diff(want, f.bufLens); diff != "" {
						t.Errorf("%d-byte frame: buffer lengths (-want +got):\n%s", len(f.data), diff)
					}
				}
				if st := l.Stats(); st.RxPackets != uint64(len(want)) || st.RxBytes != nbytes || st.RxErrors != 0 || st.RxDropped != 0 {
					t.Errorf("Stats = %+v, want %d packets, %d bytes, no errors", st, len(want), nbytes)
				}
				l.Close()
				l.Wait()
				if n := alloc.out.Load(); n != 0 {
					t.Errorf("%d buffers not freed after Wait", n)
				}
			})
		}
	}
}

func sortBytes(b [][]byte) { slices.SortFunc(b, bytes.Compare) }

// chainLens is how a frame of n bytes spreads over buffers of shape.
func chainLens(shape []int, n int) []int {
	var l []int
	for _, s := range shape {
		if n <= 0 {
			break
		}
		l = append(l, min(s, n))
		n -= s
	}
	return l
}

func TestLinkMalformedFrames(t *testing.T) {
	good := udpFrame(0, 0, 100)
	vnet := func(h VnetHdr, frame []byte) []byte {
		b := make([]byte, VnetHdrLen+len(frame))
		h.Encode(b)
		copy(b[VnetHdrLen:], frame)
		return b
	}
	cases := []struct {
		name  string
		opts  LinkOptions
		bad   []byte
		good  []byte
		wantV VnetHdr
	}{
		{name: "runt ethernet", opts: LinkOptions{EthernetHeader: true}, bad: good[:13], good: good},
		{name: "empty ip", opts: LinkOptions{}, bad: []byte{}, good: good[14:]},
		{name: "over MaxFrameSize", opts: LinkOptions{EthernetHeader: true, MaxFrameSize: 100}, bad: udpFrame(0, 0, 200), good: udpFrame(0, 1, 40)},
		// MaxFrameSize equal to the whole chain: recvmmsg sees MSG_TRUNC;
		// readv cannot, which is why the readv case below leaves room.
		{name: "truncated", opts: LinkOptions{EthernetHeader: true, BufferShape: []int{64, 64}}, bad: udpFrame(0, 0, 200), good: udpFrame(0, 1, 40)},
		{name: "vnet header cut", opts: LinkOptions{EthernetHeader: true, VnetHdr: true}, bad: []byte{1, 2, 3}, good: vnet(VnetHdr{}, good)},
		{name: "vnet bad gso type", opts: LinkOptions{EthernetHeader: true, VnetHdr: true},
			bad:   vnet(VnetHdr{GSOType: 0x42}, good),
			good:  vnet(VnetHdr{Flags: VnetFlagNeedsCsum, CsumStart: 34, CsumOffset: 6}, good),
			wantV: VnetHdr{Flags: VnetFlagNeedsCsum, CsumStart: 34, CsumOffset: 6}},
		{name: "vnet csum outside frame", opts: LinkOptions{EthernetHeader: true, VnetHdr: true},
			bad: vnet(VnetHdr{Flags: VnetFlagNeedsCsum, CsumStart: 2000, CsumOffset: 6}, good), good: vnet(VnetHdr{}, good)},
	}
	for _, mode := range []Mode{Readv, RecvMMsg} {
		for _, tc := range cases {
			if tc.name == "truncated" && mode == Readv {
				continue
			}
			t.Run(mode.String()+"/"+tc.name, func(t *testing.T) {
				// A datagram pair: readv reads one message, and an
				// empty message is a runt, not end of file.
				a, b := mustSocketpair(t, unix.SOCK_DGRAM)
				alloc := &countingAlloc{}
				c := &collector{alloc: alloc}
				o := tc.opts
				o.FDs, o.Mode, o.Allocator = []int{a}, mode, alloc
				l := mustLink(t, o, c)
				l.Start()
				writeAll(t, b, tc.bad, tc.bad, tc.good)
				if !c.waitFor(1, 10*time.Second) {
					t.Fatalf("the good frame after the bad ones never arrived; Stats %+v", l.Stats())
				}
				got := c.frames()
				wantData := tc.good
				if o.VnetHdr {
					wantData = tc.good[VnetHdrLen:]
				}
				if len(got) != 1 || !cmp.Equal(got[0].data, wantData) {
					t.Fatalf("delivered %d frames, want only the good one", len(got))
				}
				if got[0].hasVnet != o.VnetHdr || got[0].vnet != tc.wantV {
					t.Errorf("vnet = %v %+v, want %v %+v", got[0].hasVnet, got[0].vnet, o.VnetHdr, tc.wantV)
				}
				st := l.Stats()
				if st.RxErrors != 2 || st.RxPackets != 1 || st.RxBytes != uint64(len(wantData)) {
					t.Errorf("Stats = %+v, want 2 errors, 1 packet of %d bytes", st, len(wantData))
				}
				l.Close()
				l.Wait()
				if n := alloc.out.Load(); n != 0 {
					t.Errorf("%d buffers not freed after Wait", n)
				}
			})
		}
	}
}

func TestLinkFallback(t *testing.T) {
	a, _ := mustSocketpair(t, unix.SOCK_DGRAM)
	r, _ := mustPipe(t)
	cases := []struct {
		name    string
		fd      int
		mode    Mode
		want    Mode
		logHas  []string
		noFault bool
	}{
		{"mmap on unix socket", a, PacketMMap, RecvMMsg, []string{"requested=mmap using=recvmmsg", "not an AF_PACKET socket"}, false},
		{"mmap on pipe", r, PacketMMap, Readv, []string{"requested=mmap using=recvmmsg", "requested=recvmmsg using=readv", "not a socket"}, false},
		{"recvmmsg on pipe", r, RecvMMsg, Readv, []string{"requested=recvmmsg using=readv", "not a socket"}, false},
		{"readv on socket", a, Readv, Readv, nil, true},
		{"recvmmsg on socket", a, RecvMMsg, RecvMMsg, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var log logBuffer
			// Two channels on the same descriptor: the reason is
			// logged once, not per channel.
			l := mustLink(t, LinkOptions{FDs: []int{tc.fd, tc.fd}, Mode: tc.mode, Logger: log.logger()}, &collector{})
			for i := range 2 {
				if got := l.Mode(i); got != tc.want {
					t.Errorf("Mode(%d) = %v, want %v", i, got, tc.want)
				}
			}
			out := log.String()
			for _, s := range tc.logHas {
				if n := strings.Count(out, s); n != 1 {
					t.Errorf("log has %q %d times, want once; log:\n%s", s, n, out)
				}
			}
			if tc.noFault && out != "" {
				t.Errorf("unexpected log:\n%s", out)
			}
			if tc.noFault != (l.chans[0].fallbackErr == nil) {
				t.Errorf("fallbackErr = %v", l.chans[0].fallbackErr)
			}
			if !tc.noFault && !errors.Is(l.chans[0].fallbackErr, ErrNotSupported) {
				t.Errorf("fallbackErr = %v, want ErrNotSupported", l.chans[0].fallbackErr)
			}
			if got := l.Mode(2); got != Mode(-1) {
				t.Errorf("Mode(2) = %v, want Mode(-1)", got)
			}
		})
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	a, _ := mustSocketpair(t, unix.SOCK_DGRAM)
	r, w := mustPipe(t)
	unix.Close(w)
	closed := r + 1000 // not open
	cases := []struct {
		name string
		opts LinkOptions
		d    Deliverer
		want string
	}{
		{"no fds", LinkOptions{}, &collector{}, "FDs is empty"},
		{"negative fd", LinkOptions{FDs: []int{-1}}, &collector{}, "FDs[0] = -1"},
		{"closed fd", LinkOptions{FDs: []int{a, closed}}, &collector{}, "FDs[1]"},
		{"nil deliverer", LinkOptions{FDs: []int{a}}, nil, "Deliverer is nil"},
		{"bad shape", LinkOptions{FDs: []int{a}, BufferShape: []int{128, 0}}, &collector{}, "BufferShape[1]"},
		{"frame over shape", LinkOptions{FDs: []int{a}, BufferShape: []int{128}, MaxFrameSize: 200}, &collector{}, "MaxFrameSize 200"},
		{"processors", LinkOptions{FDs: []int{a}, ProcessorsPerChannel: 1000}, &collector{}, "ProcessorsPerChannel 1000"},
		{"mode", LinkOptions{FDs: []int{a}, Mode: 7}, &collector{}, "Mode"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l, err := New(tc.opts, tc.d)
			if err == nil {
				l.Close()
				t.Fatalf("New succeeded, want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestNewDoesNotModifyOptions(t *testing.T) {
	a, _ := mustSocketpair(t, unix.SOCK_DGRAM)
	fds := []int{a}
	shape := []int{256, 2048}
	o := LinkOptions{FDs: fds, BufferShape: shape}
	before := o
	l := mustLink(t, o, &collector{})
	if !cmp.Equal(before, o, cmp.Comparer(func(a, b *int) bool { return a == b })) || fds[0] != a || shape[0] != 256 || len(fds) != 1 {
		t.Errorf("options changed: %+v -> %+v", before, o)
	}
	fds[0] = -1
	shape[0] = 1
	if l.opts.FDs[0] != a || l.opts.BufferShape[0] != 256 {
		t.Errorf("link shares the caller's slices: %v %v", l.opts.FDs, l.opts.BufferShape)
	}
}

// A reader blocked in poll returns when the link closes, and every goroutine
// the link started is gone after Wait.
func TestCloseUnblocksReaders(t *testing.T) {
	base := runtime.NumGoroutine()
	func() {
		a, _ := mustSocketpair(t, unix.SOCK_DGRAM)
		r, _ := mustPipe(t)
		b, _ := mustSocketpair(t, unix.SOCK_DGRAM)
		alloc := &countingAlloc{}
		l, err := New(LinkOptions{FDs: []int{a, r, b}, Mode: RecvMMsg, ProcessorsPerChannel: 4, Allocator: alloc}, &collector{alloc: alloc})
		if err != nil {
			t.Fatal(err)
		}
		l.Start()
		l.Start() // idempotent
		l.mu.Lock()
		live := l.live
		l.mu.Unlock()
		if live != 3*5 {
			t.Errorf("%d goroutines running, want 15 (3 readers, 12 processors)", live)
		}
		// Let the readers reach poll.
		time.Sleep(20 * time.Millisecond)
		done := make(chan struct{})
		go func() {
			l.Close()
			l.Close() // idempotent
			l.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			buf := make([]byte, 1<<20)
			t.Fatalf("Close+Wait did not return; stacks:\n%s", buf[:runtime.Stack(buf, true)])
		}
		l.Wait() // again: returns at once
		if n := alloc.out.Load(); n != 0 {
			t.Errorf("%d buffers not freed after Wait", n)
		}
		l.Start() // after Close: nothing
		if _, err := l.WriteBatch(&TxBatch{}); !errors.Is(err, ErrClosed) {
			t.Errorf("WriteBatch after Close: %v, want ErrClosed", err)
		}
	}()
	checkGoroutines(t, base)
}

func TestCloseWithoutStart(t *testing.T) {
	a, _ := mustSocketpair(t, unix.SOCK_DGRAM)
	alloc := &countingAlloc{}
	l, err := New(LinkOptions{FDs: []int{a}, Mode: RecvMMsg, Allocator: alloc}, &collector{})
	if err != nil {
		t.Fatal(err)
	}
	l.Wait() // before Start: at once
	l.Close()
	l.Wait()
	if n := alloc.out.Load(); n != 0 {
		t.Errorf("%d buffers not freed", n)
	}
	// The stop eventfd is closed: its number is free again.
	if _, err := unix.FcntlInt(uintptr(l.stopFD), unix.F_GETFD, 0); err == nil {
		// The number may have been reused by another test's descriptor,
		// so only complain when it is still an eventfd.
		if link, _ := readlinkFD(l.stopFD); strings.Contains(link, "eventfd") {
			t.Errorf("stop eventfd %d still open after Close+Wait", l.stopFD)
		}
	}
}

func readlinkFD(fd int) (string, error) {
	buf := make([]byte, 256)
	n, err := unix.Readlink("/proc/self/fd/"+strconv.Itoa(fd), buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// A reader whose descriptor reaches end of file stops on its own (logging
// why) and Wait returns without Close; the link still writes.
func TestReaderStopsAtEOF(t *testing.T) {
	for _, mode := range []Mode{Readv, RecvMMsg} {
		t.Run(mode.String(), func(t *testing.T) {
			a, b := mustSocketpair(t, unix.SOCK_SEQPACKET)
			var log logBuffer
			c := &collector{}
			closedErr := make(chan error, 1)
			l := mustLink(t, LinkOptions{FDs: []int{a}, Mode: mode, Logger: log.logger(),
				Closed: func(err error) { closedErr <- err }}, c)
			l.Start()
			writeAll(t, b, []byte("last frame"))
			if !c.waitFor(1, 10*time.Second) {
				t.Fatal("frame before EOF not delivered")
			}
			unix.Shutdown(b, unix.SHUT_WR)
			done := make(chan struct{})
			go func() { l.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Wait did not return after the descriptor reached EOF")
			}
			if out := log.String(); !strings.Contains(out, "reader stopped") || !strings.Contains(out, io.EOF.Error()) {
				t.Errorf("log does not say the reader stopped at EOF:\n%s", out)
			}
			select {
			case err := <-closedErr:
				if !errors.Is(err, io.EOF) {
					t.Errorf("LinkOptions.Closed got %v, want io.EOF", err)
				}
			default:
				t.Error("LinkOptions.Closed was not called when the reader stopped at EOF")
			}
		})
	}
}

// With processors, frames of one flow stay in order and every frame reaches
// the Deliverer exactly once, whichever processor its flow hashes to.
func TestProcessorsKeepFlowOrder(t *testing.T) {
	const flows, perFlow = 16, 100
	for _, mode := range []Mode{Readv, RecvMMsg} {
		t.Run(mode.String(), func(t *testing.T) {
			a, b := mustSocketpair(t, unix.SOCK_DGRAM)
			if err := unix.SetsockoptInt(a, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20); err != nil {
				t.Fatal(err)
			}
			alloc := &countingAlloc{}
			c := &collector{alloc: alloc}
			l := mustLink(t, LinkOptions{FDs: []int{a}, Mode: mode, EthernetHeader: true, ProcessorsPerChannel: 4, Allocator: alloc}, c)
			l.Start()
			sent := 0
			for seq := range perFlow {
				for flow := range flows {
					writeAll(t, b, udpFrame(flow, uint32(seq), 20+flow))
					sent++
				}
				// Pace the sender so that no queue overflows.
				if !c.waitFor(sent-256, 10*time.Second) {
					t.Fatalf("stalled at %d of %d frames", c.n.Load(), sent)
				}
			}
			if !c.waitFor(sent, 10*time.Second) {
				t.Fatalf("got %d frames, want %d; Stats %+v", c.n.Load(), sent, l.Stats())
			}
			checkFlows(t, c.frames(), flows, perFlow)
			if st := l.Stats(); st.RxPackets != uint64(sent) || st.RxDropped != 0 {
				t.Errorf("Stats = %+v, want %d packets", st, sent)
			}
		})
	}
}

// A processor that does not keep up does not stall the reader: once its
// queue is full, frames are dropped, counted and their buffers freed.
func TestProcessorQueueFullDrops(t *testing.T) {
	a, b := mustSocketpair(t, unix.SOCK_DGRAM)
	alloc := &countingAlloc{}
	release := make(chan struct{})
	c := &collector{alloc: alloc}
	var once atomic.Bool
	d := DelivererFunc(func(frames []Frame) {
		if once.CompareAndSwap(false, true) {
			<-release // the first batch blocks its processor
		}
		c.Deliver(frames)
	})
	l := mustLink(t, LinkOptions{FDs: []int{a}, Mode: RecvMMsg, EthernetHeader: true, ProcessorsPerChannel: 2, Allocator: alloc}, d)
	t.Cleanup(func() { // runs before mustLink's Close+Wait
		select {
		case <-release:
		default:
			close(release)
		}
	})
	l.Start()
	// One flow: every frame goes to the blocked processor. It may have
	// taken up to a full queue before blocking, and a full queue more
	// waits behind it: anything beyond is dropped.
	sent := 2*processorQueueLimit + 500
	for i := range sent {
		writeAll(t, b, udpFrame(0, uint32(i), 10))
	}
	if !waitUntil(10*time.Second, func() bool { return l.Stats().RxDropped > 0 }) {
		t.Fatalf("no drops with a stuck processor; Stats %+v", l.Stats())
	}
	close(release)
	if !waitUntil(10*time.Second, func() bool {
		st := l.Stats()
		return st.RxPackets+st.RxDropped == uint64(sent)
	}) {
		t.Fatalf("Stats %+v: delivered+dropped != %d sent", l.Stats(), sent)
	}
	// What was delivered is in order, with gaps where frames were dropped.
	var last int64 = -1
	for _, f := range c.frames() {
		_, seq, _ := parseTestFrame(f.data)
		if int64(seq) <= last {
			t.Fatalf("seq %d after %d", seq, last)
		}
		last = int64(seq)
	}
	l.Close()
	l.Wait()
	if n := alloc.out.Load(); n != 0 {
		t.Errorf("%d buffers not freed after Wait", n)
	}
}
