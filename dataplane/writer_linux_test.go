//go:build linux

package dataplane

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/testenv"
)

// batchOf builds a TxBatch of frames, each split in two parts (header and
// payload) to exercise multi-part frames, hashed with FlowHash.
func batchOf(frames ...[]byte) *TxBatch {
	var b TxBatch
	for _, f := range frames {
		b.Begin(FlowHash(f, true, 0))
		cut := min(len(f), testHdrLen)
		b.Append(f[:cut])
		b.Append(f[cut:])
	}
	return &b
}

// byFlow groups test frames by flow, keeping their order; other frames go
// under -1.
func byFlow(frames [][]byte) map[int][][]byte {
	m := map[int][][]byte{}
	for _, f := range frames {
		flow, _, ok := parseTestFrame(f)
		if !ok {
			flow = -1
		}
		m[flow] = append(m[flow], f)
	}
	return m
}

// drain reads every datagram waiting on fd.
func drain(fd int, buf []byte, into *[][]byte) {
	for {
		n, err := unix.Read(fd, buf)
		if err != nil {
			return
		}
		if into != nil {
			*into = append(*into, append([]byte(nil), buf[:n]...))
		}
	}
}

// Frames go to channel Hash % 2, in order, by sendmmsg in batches of
// SendBatchSize; empty and oversized frames count as errors and do not stop
// the rest.
func TestWriteBatchSocketpairs(t *testing.T) {
	var peers [2]int
	var fds []int
	for i := range peers {
		// A socketpair has no max_dgram_qlen limit, only the sender's
		// SO_SNDBUF (212992 by default): the 40-odd small frames
		// below fit without a reader, and a datagram over
		// sk_sndbuf-32 bytes is EMSGSIZE (net/unix/af_unix.c).
		a, b := mustSocketpair(t, unix.SOCK_DGRAM)
		fds = append(fds, a)
		peers[i] = b
	}
	l := mustLink(t, LinkOptions{FDs: fds, SendBatchSize: 3}, &collector{})
	var frames [][]byte
	var want [2][][]byte
	var nbytes uint64
	for i := range 40 {
		f := udpFrame(i%7, uint32(i), 20+i)
		frames = append(frames, f)
		ch := FlowHash(f, true, 0) % 2
		want[ch] = append(want[ch], f)
		nbytes += uint64(len(f))
	}
	b := batchOf(frames...)
	// An empty frame and one too large for the socket, in the middle.
	b.Begin(0)
	b.Begin(0)
	b.Append(make([]byte, 300000))
	tail := udpFrame(0, 99, 30)
	b.Begin(0)
	b.Append(tail)
	want[0] = append(want[0], tail)
	nbytes += uint64(len(tail))

	n, err := l.WriteBatch(b)
	if err != nil || n != len(frames)+1 {
		t.Fatalf("WriteBatch = %d, %v; want %d, nil", n, err, len(frames)+1)
	}
	buf := make([]byte, 1<<16)
	for i, p := range peers {
		var got [][]byte
		drain(p, buf, &got)
		if diff := cmp.Diff(want[i], got); diff != "" {
			t.Errorf("channel %d (-want +got):\n%s", i, diff)
		}
	}
	if len(want[0]) == 0 || len(want[1]) == 0 {
		t.Errorf("test frames hash to one channel only: %d/%d", len(want[0]), len(want[1]))
	}
	wantSt := Stats{TxPackets: uint64(n), TxBytes: nbytes, TxErrors: 2}
	if st := l.Stats(); st != wantSt {
		t.Errorf("Stats = %+v, want %+v", st, wantSt)
	}

	// A batch of nothing but bad frames says why.
	var bad TxBatch
	bad.Begin(0)
	bad.Append(make([]byte, 300000))
	if n, err := l.WriteBatch(&bad); n != 0 || !errors.Is(err, unix.EMSGSIZE) {
		t.Errorf("WriteBatch(oversized) = %d, %v; want 0, EMSGSIZE", n, err)
	}
	if n, err := l.WriteBatch(&TxBatch{}); n != 0 || err != nil {
		t.Errorf("WriteBatch(empty) = %d, %v", n, err)
	}
}

// On a descriptor that is not a socket, each frame is one writev, with the
// virtio_net_hdr not counted in TxBytes.
func TestWriteBatchWritev(t *testing.T) {
	r, w := mustPipe(t)
	l := mustLink(t, LinkOptions{FDs: []int{w}, VnetHdr: true}, &collector{})
	var hdr [VnetHdrLen]byte
	var b TxBatch
	var want []byte
	for i := range 5 {
		f := udpFrame(1, uint32(i), 10*i)
		b.Begin(uint32(i))
		b.Append(hdr[:])
		b.Append(f)
		want = append(append(want, hdr[:]...), f...)
	}
	n, err := l.WriteBatch(&b)
	if err != nil || n != 5 {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	got := make([]byte, 2*len(want))
	m, _ := unix.Read(r, got)
	if diff := cmp.Diff(want, got[:m]); diff != "" {
		t.Errorf("pipe bytes (-want +got):\n%s", diff)
	}
	if st := l.Stats(); st.TxPackets != 5 || st.TxBytes != uint64(len(want)-5*VnetHdrLen) {
		t.Errorf("Stats = %+v, want 5 packets of %d bytes", st, len(want)-5*VnetHdrLen)
	}
}

// A frame cut by a short write (a nearly full pipe) is finished, so the
// stream stays framed.
func TestWriteBatchShortWrite(t *testing.T) {
	r, w := mustPipe(t)
	l := mustLink(t, LinkOptions{FDs: []int{w}}, &collector{})
	// Fill the pipe to within 100 bytes of its capacity.
	size, err := unix.FcntlInt(uintptr(w), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		t.Fatal(err)
	}
	writeAll(t, w, make([]byte, size-100))
	big := make([]byte, 3*size)
	for i := range big {
		big[i] = byte(i % 251)
	}
	var b TxBatch
	b.Begin(0)
	b.Append(big)
	var got []byte
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for len(got) < size-100+len(big) {
			n, err := unix.Read(r, buf)
			if err != nil {
				unix.Poll([]unix.PollFd{{Fd: int32(r), Events: unix.POLLIN}}, 1000)
				continue
			}
			got = append(got, buf[:n]...)
		}
	}()
	if n, err := l.WriteBatch(&b); n != 1 || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("reader did not get the whole frame")
	}
	if !cmp.Equal(got[size-100:], big) {
		t.Error("frame corrupted across short writes")
	}
}

// fillSocket writes to fd until its send buffer is full.
func fillSocket(t *testing.T, fd int) {
	t.Helper()
	buf := make([]byte, 1000)
	for i := 0; ; i++ {
		if _, err := unix.Write(fd, buf); errors.Is(err, unix.EAGAIN) {
			return
		} else if err != nil || i > 1e6 {
			t.Fatalf("fill socket: %v after %d writes", err, i)
		}
	}
}

// A peer that stops reading costs a WriteBatch at most writeTimeout; the
// frames not written are dropped and counted.
func TestWriteBatchTimeout(t *testing.T) {
	a, _ := mustSocketpair(t, unix.SOCK_DGRAM)
	l := mustLink(t, LinkOptions{FDs: []int{a}}, &collector{})
	fillSocket(t, a)
	b := batchOf(udpFrame(0, 0, 10), udpFrame(0, 1, 10), udpFrame(0, 2, 10))
	n, err := l.WriteBatch(b)
	if n != 0 || !errors.Is(err, errWriteTimeout) {
		t.Errorf("WriteBatch to a full socket = %d, %v; want 0 and a timeout", n, err)
	}
	if st := l.Stats(); st.TxDropped != 3 || st.TxPackets != 0 {
		t.Errorf("Stats = %+v, want 3 dropped", st)
	}
}

// Close wakes a writer waiting for room; the frames are dropped and, as
// none was written, WriteBatch returns ErrClosed.
func TestWriteBatchCloseUnblocks(t *testing.T) {
	a, _ := mustSocketpair(t, unix.SOCK_DGRAM)
	l := mustLink(t, LinkOptions{FDs: []int{a}}, &collector{})
	l.Start()
	fillSocket(t, a)
	type result struct {
		n   int
		err error
	}
	res := make(chan result, 1)
	go func() {
		n, err := l.WriteBatch(batchOf(udpFrame(0, 0, 10), udpFrame(0, 1, 10)))
		res <- result{n, err}
	}()
	time.Sleep(20 * time.Millisecond) // let it reach poll
	l.Close()
	select {
	case r := <-res:
		// A timeout error would mean Close did not wake the writer.
		if r.n != 0 || !errors.Is(r.err, ErrClosed) {
			t.Errorf("WriteBatch = %d, %v; want 0, ErrClosed", r.n, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WriteBatch still blocked after Close")
	}
	l.Wait()
	if n, err := l.WriteBatch(batchOf(udpFrame(0, 0, 10))); n != 0 || !errors.Is(err, ErrClosed) {
		t.Errorf("WriteBatch after Close = %d, %v; want 0, ErrClosed", n, err)
	}
	if st := l.Stats(); st.TxDropped != 3 {
		t.Errorf("TxDropped = %d, want 3", st.TxDropped)
	}
}

// Many goroutines write at once; each channel's frames stay whole and
// every frame is accounted for. Run with -race.
func TestWriteBatchConcurrent(t *testing.T) {
	const writers, batches, perBatch = 8, 50, 10
	var fds, peers []int
	for range 2 {
		a, b := mustSocketpair(t, unix.SOCK_DGRAM)
		fds, peers = append(fds, a), append(peers, b)
	}
	l := mustLink(t, LinkOptions{FDs: fds, SendBatchSize: 4}, &collector{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	received := 0
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for _, p := range peers {
		readers.Go(func() {
			buf := make([]byte, 4096)
			for {
				select {
				case <-stop:
					return
				default:
				}
				var got [][]byte
				drain(p, buf, &got)
				for _, f := range got {
					if _, _, ok := parseTestFrame(f); !ok {
						t.Errorf("corrupt frame % x", f)
					}
				}
				mu.Lock()
				received += len(got)
				mu.Unlock()
				time.Sleep(100 * time.Microsecond)
			}
		})
	}
	for w := range writers {
		wg.Go(func() {
			var b TxBatch
			for i := range batches {
				b.Reset()
				for j := range perBatch {
					f := udpFrame(w, uint32(i*perBatch+j), 40)
					b.Begin(FlowHash(f, true, 0) + uint32(j))
					b.Append(f)
				}
				if _, err := l.WriteBatch(&b); err != nil {
					t.Errorf("WriteBatch: %v", err)
				}
			}
		})
	}
	wg.Wait()
	total := writers * batches * perBatch
	ok := waitUntil(10*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return received >= int(l.Stats().TxPackets) })
	close(stop)
	readers.Wait()
	st := l.Stats()
	if !ok || st.TxPackets != uint64(total) || st.TxDropped != 0 || received != total {
		t.Errorf("%d frames written, %d received, Stats %+v", total, received, st)
	}
}

// Writing a batch in steady state allocates nothing, on sockets (sendmmsg)
// and on other descriptors (writev).
func TestWriteBatchAllocs(t *testing.T) {
	a, peer := mustSocketpair(t, unix.SOCK_DGRAM)
	null, err := unix.Open("/dev/null", unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(null)
	var frames [][]byte
	for i := range 20 {
		frames = append(frames, udpFrame(i, uint32(i), 100))
	}
	b := batchOf(frames...)
	for _, tc := range []struct {
		name string
		fds  []int
	}{{"sendmmsg", []int{a}}, {"writev", []int{null}}, {"sendmmsg+writev", []int{a, null}}} {
		t.Run(tc.name, func(t *testing.T) {
			l := mustLink(t, LinkOptions{FDs: tc.fds, SendBatchSize: 8}, &collector{})
			buf := make([]byte, 4096)
			allocs := testing.AllocsPerRun(100, func() {
				if _, err := l.WriteBatch(b); err != nil {
					t.Fatal(err)
				}
				drain(peer, buf, nil)
			})
			if allocs != 0 {
				t.Errorf("WriteBatch allocates %v times per batch of %d, want 0", allocs, b.Len())
			}
			if st := l.Stats(); st.TxDropped != 0 || st.TxErrors != 0 {
				t.Errorf("Stats = %+v", st)
			}
		})
	}
}

// Reading and delivering a batch in steady state allocates nothing when the
// allocator recycles.
func TestDispatchAllocs(t *testing.T) {
	for _, mode := range []Mode{Readv, RecvMMsg} {
		t.Run(mode.String(), func(t *testing.T) {
			a, b := mustSocketpair(t, unix.SOCK_DGRAM)
			pool := &poolAlloc{}
			var got int
			d := DelivererFunc(func(frames []Frame) {
				for i := range frames {
					got++
					for _, buf := range frames[i].Data {
						pool.Free(buf)
					}
				}
			})
			l := mustLink(t, LinkOptions{FDs: []int{a}, Mode: mode, EthernetHeader: true, Allocator: pool}, d)
			frames := [][]byte{udpFrame(1, 0, 100), udpFrame(2, 0, 1000), udpFrame(3, 0, 10), udpFrame(4, 0, 3000)}
			disp := l.chans[0].disp
			allocs := testing.AllocsPerRun(100, func() {
				for _, f := range frames {
					unix.Write(b, f)
				}
				for n := got + len(frames); got < n; {
					if err := disp.dispatch(); err != nil {
						t.Fatal(err)
					}
				}
			})
			if allocs != 0 {
				t.Errorf("dispatch allocates %v times per %d frames, want 0", allocs, len(frames))
			}
		})
	}
}

// WriteBatch on packet sockets: 1000 frames out of va arrive at vb exactly,
// with one channel, two fanout channels on va, and two channels on two veth
// pairs, where each frame must leave by the channel of its hash.
func TestWriteBatchVeth(t *testing.T) {
	testenv.RequireRoot(t)
	const total, perBatch = 1000, 50
	for _, tc := range []struct {
		name    string
		chans   int
		twoVeth bool
	}{{"channels=1", 1, false}, {"channels=2", 2, false}, {"channels=2/two-veths", 2, true}} {
		t.Run(tc.name, func(t *testing.T) {
			var fds, rx []int
			closeAll := func(l []int) {
				for _, fd := range l {
					unix.Close(fd)
				}
			}
			vs := []*testenv.Veth{quietVeth(t)}
			if tc.twoVeth {
				vs = append(vs, quietVeth(t))
			}
			for _, v := range vs {
				n := tc.chans / len(vs)
				f, err := OpenPacketSockets(SocketOptions{NetNS: v.NSA, Interface: v.A}, n)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { closeAll(f) })
				fds = append(fds, f...)
				r, err := OpenPacketSocket(SocketOptions{NetNS: v.NSB, Interface: v.B, RcvBufBytes: 8 << 20})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { closeAll([]int{r}) })
				rx = append(rx, r)
			}
			l := mustLink(t, LinkOptions{FDs: fds, EthernetHeader: true}, &collector{})
			l.Start()
			got := make([][][]byte, len(rx))
			count := func() int {
				n := 0
				for _, g := range got {
					n += len(g)
				}
				return n
			}
			buf := make([]byte, 1<<16)
			var want [][][]byte = make([][][]byte, len(rx))
			var nbytes uint64
			var b TxBatch
			for seq := 0; seq < total; {
				b.Reset()
				for range perBatch {
					f := udpFrame(seq%16, uint32(seq/16), 18+seq%700)
					h := FlowHash(f, true, 0)
					b.Begin(h)
					b.Append(f)
					r := 0
					if tc.twoVeth {
						r = int(h % 2)
					}
					want[r] = append(want[r], f)
					nbytes += uint64(len(f))
					seq++
				}
				if n, err := l.WriteBatch(&b); n != perBatch || err != nil {
					t.Fatalf("WriteBatch = %d, %v; want %d", n, err, perBatch)
				}
				if !waitUntil(10*time.Second, func() bool {
					for i, r := range rx {
						drain(r, buf, &got[i])
					}
					return count() >= seq
				}) {
					t.Fatalf("received %d of %d frames", count(), seq)
				}
			}
			for i := range rx {
				// Two channels on one device interleave: only the
				// order within a flow (one channel) is promised.
				if diff := cmp.Diff(byFlow(want[i]), byFlow(got[i])); diff != "" {
					t.Errorf("frames at receiver %d, by flow (-want +got):\n%s", i, diff)
				}
				if tc.twoVeth && len(got[i]) == 0 {
					t.Errorf("nothing left by channel %d", i)
				}
			}
			wantSt := Stats{TxPackets: total, TxBytes: nbytes}
			if st := l.Stats(); st != wantSt {
				t.Errorf("Stats = %+v, want %+v", st, wantSt)
			}
			l.Close()
			if n, err := l.WriteBatch(&b); n != 0 || !errors.Is(err, ErrClosed) {
				t.Errorf("WriteBatch after Close = %d, %v; want ErrClosed", n, err)
			}
		})
	}
}
