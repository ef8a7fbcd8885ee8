//go:build linux

package xdp

import (
	"bytes"
	"errors"
	"math"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/stackrx"
	"github.com/sluicenet/sluice/internal/testenv"
)

// fakeKernel plays the kernel's side of a socket whose rings and UMEM are
// ordinary memory: it takes chunks from the fill ring and reports frames,
// good or deliberately bad, on the rx ring.
type fakeKernel struct {
	fill *fakeRing[uint64]
	rx   *fakeRing[Desc]
	mem  []byte
	held []uint64 // chunks taken from the fill ring, not yet reported
}

func newFakeSocket(t *testing.T, chunks, ring uint32) (*Socket, *fakeKernel) {
	t.Helper()
	g := geometry{frameSize: 2048, size: uint64(chunks) * 2048}
	k := &fakeKernel{
		fill: newFakeRing[uint64](ring, math.MaxUint32-5),
		rx:   newFakeRing[Desc](ring, math.MaxUint32-3),
		mem:  make([]byte, g.size),
	}
	sk := &Socket{fd: -1, mem: k.mem, geo: g,
		rxPool:   newChunkPool(g, 0, uint64(chunks/2)),
		txPool:   newChunkPool(g, uint64(chunks/2), uint64(chunks-chunks/2)),
		rxFrames: make([][]byte, 0, 16)}
	if err := sk.Fill.init(k.fill.mem()); err != nil {
		t.Fatal(err)
	}
	if err := sk.RX.init(k.rx.mem()); err != nil {
		t.Fatal(err)
	}
	sk.refill()
	return sk, k
}

// takeFill takes one chunk from the fill ring, as the kernel does for
// each frame it receives.
func (k *fakeKernel) takeFill(t *testing.T) uint64 {
	t.Helper()
	c := k.fill.cons.Load()
	if k.fill.prod.Load() == c {
		t.Fatal("fill ring empty")
	}
	addr := *k.fill.at(c)
	k.fill.cons.Store(c + 1)
	return addr
}

// report puts d on the rx ring.
func (k *fakeKernel) report(d Desc) {
	p := k.rx.prod.Load()
	*k.rx.at(p) = d
	k.rx.prod.Store(p + 1)
}

// recordingDispatcher keeps a copy of every packet delivered.
type recordingDispatcher struct {
	mu   sync.Mutex
	pkts [][]byte
}

func (d *recordingDispatcher) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	d.mu.Lock()
	defer d.mu.Unlock()
	buf := pkt.ToBuffer()
	d.pkts = append(d.pkts, buf.Flatten())
	buf.Release()
}

func (d *recordingDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// TestBadDescriptorsCounted feeds a reader a ring mixing good frames with
// every kind of bad descriptor a broken kernel could write. The good frames
// reach the stack intact, each bad one is counted under its reason and
// dropped, chunks go back to the fill ring exactly once, and nothing panics.
func TestBadDescriptorsCounted(t *testing.T) {
	sk, k := newFakeSocket(t, 32, 16)
	e := &Endpoint{addr: "\x02\x00\x00\x00\x00\x01"}
	rx, err := stackrx.New(stackrx.Options{Ethernet: true, Deliverers: 1, Counters: &e.counters}, e.sink)
	if err != nil {
		t.Fatal(err)
	}
	e.rx = rx
	d := &recordingDispatcher{}
	e.dispatcher.Store(&dispatcherBox{d})
	q := &queue{ep: e, sk: sk}
	e.queues = []*queue{q}
	var sent [][]byte
	good := func() {
		c := k.takeFill(t)
		f := udpFrame([]byte(e.addr), []byte{2, 0, 0, 0, 0, 2}, uint16(1000+len(sent)), 20+len(sent))
		copy(k.mem[c+packetHeadroom:], f)
		k.report(Desc{Addr: c + packetHeadroom, Len: uint32(len(f))})
		sent = append(sent, f)
	}
	held := k.takeFill(t) // a chunk the kernel keeps: reported twice below
	good()
	k.report(Desc{Addr: uint64(len(k.mem)) + 100, Len: 60}) // outside the UMEM
	k.report(Desc{Addr: math.MaxUint64, Len: 60})           // far outside
	good()
	c := k.takeFill(t)
	k.report(Desc{Addr: c + 100, Len: 2048}) // runs past its chunk: recycled
	c = k.takeFill(t)
	k.report(Desc{Addr: c + packetHeadroom}) // empty: recycled
	c = k.takeFill(t)
	k.report(Desc{Addr: c + packetHeadroom, Len: 60, Options: optPktContd}) // multi-buffer
	k.report(Desc{Addr: 20 * 2048, Len: 60})                                // a send chunk
	good()
	k.report(Desc{Addr: held + packetHeadroom, Len: 60}) // fine once...
	k.report(Desc{Addr: held + packetHeadroom, Len: 60}) // ...not twice
	good()

	for sk.WithFrames(4, q.take) > 0 {
		q.deliver()
	}
	want := map[DescError]uint64{DescOutsideUMEM: 2, DescBeyondFrame: 1, DescEmpty: 1, DescMultiBuffer: 1, DescNotOurs: 2}
	bad := sk.BadDescs()
	for r := DescOK + 1; r < numDescErrors; r++ {
		if bad[r] != want[r] {
			t.Errorf("%v: %d refused, want %d", r, bad[r], want[r])
		}
	}
	// The held chunk's first report is a 60-byte frame of zeros: not
	// Ethernet for us, so the endpoint drops it silently (wrong MAC).
	if len(d.pkts) != len(sent) {
		t.Fatalf("%d packets delivered, want %d", len(d.pkts), len(sent))
	}
	for i := range sent {
		if !bytes.Equal(d.pkts[i], sent[i]) {
			t.Errorf("packet %d delivered as %x, sent %x", i, d.pkts[i], sent[i])
		}
	}
	if st := e.Stats(); st.RxErrors != 7 || st.RxPackets != uint64(len(sent))+1 {
		t.Errorf("stats %+v: want 7 errors and %d packets", st, len(sent)+1)
	}
	// Every receive chunk is the kernel's again (in the fill ring or held
	// by it), except those whose descriptor was lost to a bad address, and
	// none is in the fill ring twice.
	inFill := map[uint64]int{}
	for i := k.fill.cons.Load(); i != k.fill.prod.Load(); i++ {
		inFill[*k.fill.at(i)]++
	}
	for c, n := range inFill {
		if n != 1 {
			t.Errorf("chunk %#x is in the fill ring %d times", c, n)
		}
		if c >= 16*2048 {
			t.Errorf("send chunk %#x in the fill ring", c)
		}
	}
	if sk.rxPool.inKernel() != 16 {
		t.Errorf("%d receive chunks with the kernel, want all 16", sk.rxPool.inKernel())
	}
}

// TestBadDescriptorsLive corrupts descriptors the kernel really wrote: with
// frames waiting in a socket's rx ring and no reader yet, some descriptors
// get an address outside the UMEM, a length beyond their chunk, a length of
// zero. The reader counts and drops those, delivers the rest, and the
// endpoint keeps working (ping) afterwards.
func TestBadDescriptorsLive(t *testing.T) {
	testenv.RequireRoot(t)
	v := newVethQ(t, 1)
	testenv.IP(t, v.NSB, "addr", "add", peer4+"/24", "dev", v.B)
	l, err := OpenNS(NSOptions{Netns: v.NSA, Iface: v.A})
	l = mustLink(t, l, err)
	_, macA := ifaceInfo(t, v.NSA, v.A)
	_, macB := ifaceInfo(t, v.NSB, v.B)
	const n = 12
	var frames [][]byte
	for i := range n {
		frames = append(frames, udpFrame(macA, macB, uint16(3000+i), 10))
	}
	sendFrames(t, v.NSB, v.B, frames)
	sk := l.Sockets.Socket(0)
	deadline := time.Now().Add(5 * time.Second)
	for sk.RX.Avail(n) < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := sk.RX.Avail(n); got < n {
		t.Fatalf("%d frames waiting in the rx ring, want %d", got, n)
	}
	// The reader has not started (no stack attached): the ring is ours to
	// spoil.
	first := sk.RX.cachedCons
	sk.RX.at(first).Addr = uint64(len(sk.mem)) + 4096
	sk.RX.at(first + 3).Len = 4000
	sk.RX.at(first + 7).Len = 0
	s := newStack(t, l.Endpoint, stack4)
	deadline = time.Now().Add(5 * time.Second)
	for l.Endpoint.Stats().RxPackets < n-3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	st := l.Endpoint.Stats()
	if st.RxErrors != 3 || st.RxPackets < n-3 {
		t.Errorf("stats %+v: want 3 errors and %d frames", st, n-3)
	}
	x, err := l.Endpoint.XDPStats()
	if err != nil {
		t.Fatal(err)
	}
	if x.BadDescs["outside-umem"] != 1 || x.BadDescs["beyond-frame"] != 1 || x.BadDescs["empty"] != 1 {
		t.Errorf("bad descriptors by reason %v, want one each of outside-umem, beyond-frame, empty", x.BadDescs)
	}
	if !ping(t, v.NSB, stack4.Addr().String(), 2) {
		t.Error("the endpoint stopped answering after the bad descriptors")
	}
	_ = s
}

// TestReceiveAllocations checks that taking frames from the rx ring and
// delivering them allocates nothing per frame in steady state: the views
// come from the netstack's pools, the frames' Data slices share one array.
func TestReceiveAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector (sync.Pool drops items)")
	}
	sk, k := newFakeSocket(t, 256, 64)
	e := &Endpoint{addr: "\x02\x00\x00\x00\x00\x01"}
	rx, err := stackrx.New(stackrx.Options{Ethernet: true, Deliverers: 1, Counters: &e.counters}, e.sink)
	if err != nil {
		t.Fatal(err)
	}
	e.rx = rx
	e.dispatcher.Store(&dispatcherBox{&countingSink{}})
	q := &queue{ep: e, sk: sk, out: make([]dataplane.Frame, 0, 32), bufs: make([]dataplane.Buffer, 0, 32)}
	e.queues = []*queue{q}
	f := udpFrame([]byte(e.addr), []byte{2, 0, 0, 0, 0, 2}, 1000, 18)
	const batch = 32
	round := func() {
		for range batch {
			c := k.takeFill(t)
			copy(k.mem[c+packetHeadroom:], f)
			k.report(Desc{Addr: c + packetHeadroom, Len: uint32(len(f))})
		}
		for sk.WithFrames(batch, q.take) > 0 {
			q.deliver()
		}
	}
	round()
	a := testing.AllocsPerRun(50, round) / batch
	t.Logf("%.3f allocations per frame, %d frames delivered", a, e.dispatcher.Load().d.(*countingSink).n)
	if a > 0.1 {
		t.Errorf("%.2f allocations per frame received", a)
	}
}

type countingSink struct{ n int }

func (c *countingSink) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) { c.n++ }
func (c *countingSink) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer)    {}

// TestWriteFullRingIsBounded: when the kernel takes nothing from the tx ring
// (here a socket that does not exist: every kick fails), a write fills what
// room there is, waits txWait for more, and drops the rest, counted, rather
// than blocking its caller for good.
func TestWriteFullRingIsBounded(t *testing.T) {
	g := geometry{frameSize: 2048, size: 8 * 2048}
	mem := make([]byte, g.size)
	sk := &Socket{fd: -1, mem: mem, geo: g, rxPool: newChunkPool(g, 0, 4), txPool: newChunkPool(g, 4, 4)}
	tx := newFakeRing[Desc](4, 0)
	cq := newFakeRing[uint64](4, 0)
	if err := errors.Join(sk.TX.init(tx.mem()), sk.Completion.init(cq.mem())); err != nil {
		t.Fatal(err)
	}
	e := &Endpoint{}
	q := &queue{ep: e, sk: sk}
	e.queues = []*queue{q}
	var l stack.PacketBufferList
	for range 10 {
		l.PushBack(stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(make([]byte, 100))}))
	}
	defer l.DecRef()
	// That it returns at all is the bound (go test's -timeout catches a
	// write that blocks for good); how long it waits is txWait's business,
	// not asserted here.
	n, err := e.WritePackets(l)
	st := e.counters.Snapshot()
	if n != 4 || st.TxDropped != 6 || err == nil {
		t.Errorf("wrote %d (%v), %+v: want 4 written and 6 dropped", n, err, st)
	}
	if got := tx.prod.Load(); got != 4 {
		t.Errorf("%d frames in the tx ring, want 4", got)
	}
}
