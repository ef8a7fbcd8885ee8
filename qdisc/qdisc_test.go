package qdisc

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// item is a test packet: which producer sent it, and its number there.
type item struct {
	producer int
	seq      int
	released *atomic.Int32
}

// recorder is a BatchWriter that records what it writes, optionally waits
// on a gate before each batch, and fails the tail of some batches.
type recorder struct {
	mu       sync.Mutex
	written  []item
	batches  []int
	gate     chan struct{} // nil: never wait
	gateOnce sync.Once
	entered  chan struct{} // receives once per batch when not nil
	failN    func(n int) int
}

// open lets every WriteBatch through, now and later.
func (r *recorder) open() { r.gateOnce.Do(func() { close(r.gate) }) }

// gated returns a recorder whose WriteBatch blocks until open, and makes
// sure the test's end opens it and closes q, so that a failing test does
// not hang on a stuck drainer.
func gated(t *testing.T, o Options[item]) (*recorder, *Qdisc[item]) {
	r := &recorder{gate: make(chan struct{}), entered: make(chan struct{}, 100)}
	q := mustNew(t, r, o)
	t.Cleanup(func() {
		r.open()
		q.Close()
	})
	return r, q
}

func (r *recorder) WriteBatch(items []item) (int, error) {
	if r.entered != nil {
		r.entered <- struct{}{}
	}
	if r.gate != nil {
		<-r.gate
	}
	n := len(items)
	if r.failN != nil {
		n = r.failN(n)
	}
	r.mu.Lock()
	r.written = append(r.written, items[:n]...)
	r.batches = append(r.batches, len(items))
	r.mu.Unlock()
	var err error
	if n < len(items) {
		err = errors.New("injected failure")
	}
	return n, err
}

func release(it item) {
	if it.released != nil {
		it.released.Add(1)
	}
}

// noLeak fails the test if goroutines started during it are still running
// when it ends.
func noLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				t.Fatalf("goroutine leak: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
			}
			time.Sleep(time.Millisecond)
		}
	})
}

func mustNew(t testing.TB, w BatchWriter[item], o Options[item]) *Qdisc[item] {
	t.Helper()
	if o.Release == nil {
		o.Release = release
	}
	q, err := New(w, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close) // idempotent; stops the drainers of a failed test
	return q
}

// waitFor polls cond; the timeout only turns a hang into a failure.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func checkInvariants(t *testing.T, s Stats, attempts uint64) {
	t.Helper()
	if s.Enqueued+s.Dropped+s.Rejected != attempts {
		t.Errorf("enqueued %d + dropped %d + rejected %d != %d attempts", s.Enqueued, s.Dropped, s.Rejected, attempts)
	}
	if s.Written+s.Failed+s.Released != s.Enqueued {
		t.Errorf("written %d + failed %d + released %d != enqueued %d", s.Written, s.Failed, s.Released, s.Enqueued)
	}
}

func TestFIFOOrderAndBatches(t *testing.T) {
	noLeak(t)
	r := &recorder{}
	q := mustNew(t, r, Options[item]{Kind: FIFO, Queues: 2, QueueLen: 64, BatchSize: 5, MaxWait: time.Hour})
	const flows, per = 4, 2000
	var rel [flows * per]atomic.Int32
	for i := 0; i < per; i++ {
		for f := 0; f < flows; f++ {
			it := item{producer: f, seq: i, released: &rel[f*per+i]}
			if err := q.Enqueue(uint32(f), it); err != nil {
				t.Fatalf("Enqueue: %v", err)
			}
		}
	}
	waitFor(t, "every item written", func() bool { return q.Stats().Written == flows*per })
	q.Close()
	next := make([]int, flows)
	for _, it := range r.written {
		if it.seq != next[it.producer] {
			t.Fatalf("flow %d: item %d written after %d", it.producer, it.seq, next[it.producer]-1)
		}
		next[it.producer]++
	}
	for _, b := range r.batches {
		if b < 1 || b > 5 {
			t.Fatalf("batch of %d, BatchSize 5", b)
		}
	}
	for i := range rel {
		if n := rel[i].Load(); n != 1 {
			t.Fatalf("item %d released %d times", i, n)
		}
	}
	s := q.Stats()
	checkInvariants(t, s, flows*per)
	if s.Dropped != 0 || s.Released != 0 || s.Batches != uint64(len(r.batches)) {
		t.Errorf("stats %+v", s)
	}
}

// TestBackpressure: an Enqueue on a full queue waits for the drainer to make
// room instead of dropping (the FIELD-NOTES tail-drop collapse).
func TestBackpressure(t *testing.T) {
	noLeak(t)
	r, q := gated(t, Options[item]{Kind: FIFO, QueueLen: 4, BatchSize: 1, MaxWait: time.Hour})
	// The first item is taken by the drainer, which blocks in WriteBatch;
	// four more fill the queue.
	if err := q.Enqueue(0, item{seq: 0}); err != nil {
		t.Fatal(err)
	}
	<-r.entered
	for i := 1; i <= 4; i++ {
		if err := q.Enqueue(0, item{seq: i}); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- q.Enqueue(0, item{seq: 5}) }()
	waitFor(t, "the sixth Enqueue to wait", func() bool { return q.Stats().Waited == 1 })
	select {
	case err := <-done:
		t.Fatalf("Enqueue on a full queue returned %v while the writer was stuck", err)
	default:
	}
	r.open() // the writer proceeds
	if err := <-done; err != nil {
		t.Fatalf("Enqueue after room appeared: %v", err)
	}
	waitFor(t, "all written", func() bool { return q.Stats().Written == 6 })
	for i, it := range r.written {
		if it.seq != i {
			t.Fatalf("written out of order: %v", r.written)
		}
	}
	if s := q.Stats(); s.Dropped != 0 {
		t.Errorf("dropped %d", s.Dropped)
	}
}

func TestDropAfterMaxWait(t *testing.T) {
	for _, wait := range []time.Duration{time.Millisecond, -1} {
		t.Run(fmt.Sprintf("maxwait=%v", wait), func(t *testing.T) {
			noLeak(t)
			r, q := gated(t, Options[item]{Kind: FIFO, QueueLen: 2, BatchSize: 1, MaxWait: wait})
			var rel [4]atomic.Int32
			if err := q.Enqueue(0, item{seq: 0, released: &rel[0]}); err != nil {
				t.Fatal(err)
			}
			<-r.entered
			for i := 1; i <= 2; i++ {
				if err := q.Enqueue(0, item{seq: i, released: &rel[i]}); err != nil {
					t.Fatal(err)
				}
			}
			if err := q.Enqueue(0, item{seq: 3, released: &rel[3]}); !errors.Is(err, ErrQueueFull) {
				t.Fatalf("Enqueue on a queue that stays full: %v, want ErrQueueFull", err)
			}
			s := q.Stats()
			wantWaited := uint64(1)
			if wait < 0 {
				wantWaited = 0
			}
			if s.Dropped != 1 || s.Waited != wantWaited {
				t.Errorf("stats %+v", s)
			}
			r.open()
			q.Close()
			if rel[3].Load() != 0 {
				t.Error("the qdisc released an item it refused: the caller still owns it")
			}
			for i := 0; i < 3; i++ {
				if rel[i].Load() != 1 {
					t.Errorf("item %d released %d times", i, rel[i].Load())
				}
			}
			checkInvariants(t, q.Stats(), 4)
		})
	}
}

// TestCloseReleasesQueued: Close wakes waiting producers with ErrClosed,
// releases what is queued without writing it, waits for the WriteBatch in
// progress, and stops the drainers.
func TestCloseReleasesQueued(t *testing.T) {
	noLeak(t)
	r, q := gated(t, Options[item]{Kind: FIFO, QueueLen: 3, BatchSize: 1, MaxWait: time.Hour})
	var rel [5]atomic.Int32
	for i := 0; i < 4; i++ {
		if err := q.Enqueue(0, item{seq: i, released: &rel[i]}); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			<-r.entered
		}
	}
	waiter := make(chan error, 1)
	go func() { waiter <- q.Enqueue(0, item{seq: 4, released: &rel[4]}) }()
	waitFor(t, "a waiting producer", func() bool { return q.Stats().Waited == 1 })
	closed := make(chan struct{})
	go func() { q.Close(); close(closed) }()
	if err := <-waiter; !errors.Is(err, ErrClosed) {
		t.Fatalf("waiting Enqueue at Close: %v, want ErrClosed", err)
	}
	select {
	case <-closed:
		t.Fatal("Close returned while a WriteBatch was in progress")
	default:
	}
	r.open()
	<-closed
	if err := q.Enqueue(0, item{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Enqueue after Close: %v", err)
	}
	q.Close() // idempotent
	s := q.Stats()
	if s.Written != 1 || s.Released != 3 || s.Rejected != 2 {
		t.Errorf("stats %+v, want 1 written, 3 released, 2 rejected", s)
	}
	checkInvariants(t, s, 6)
	for i := 0; i < 4; i++ {
		if rel[i].Load() != 1 {
			t.Errorf("item %d released %d times", i, rel[i].Load())
		}
	}
	if rel[4].Load() != 0 {
		t.Error("a rejected item was released")
	}
}

// TestRaceWritersAgainstClose runs producers against Close at a random
// moment (run it with -race): every accepted item is released exactly once,
// per-producer order holds among written items, the counts add up, and no
// goroutine is left.
func TestRaceWritersAgainstClose(t *testing.T) {
	for seed := uint64(0); seed < 20; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			noLeak(t)
			rng := rand.New(rand.NewPCG(seed, 1))
			var failMu sync.Mutex
			r := &recorder{failN: func(n int) int {
				failMu.Lock()
				defer failMu.Unlock()
				if rng.IntN(10) == 0 {
					return rng.IntN(n + 1)
				}
				return n
			}}
			maxWait := []time.Duration{-1, 50 * time.Microsecond, time.Hour}[seed%3]
			q := mustNew(t, r, Options[item]{Kind: FIFO, Queues: 3, QueueLen: 8, BatchSize: 4, MaxWait: maxWait})
			const producers, per = 8, 500
			rel := make([]atomic.Int32, producers*per)
			accepted := make([]atomic.Bool, producers*per)
			var attempts atomic.Uint64
			var wg sync.WaitGroup
			closeAfter := rng.IntN(producers * per)
			for p := 0; p < producers; p++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < per; i++ {
						id := p*per + i
						attempts.Add(1)
						err := q.Enqueue(uint32(p), item{producer: p, seq: i, released: &rel[id]})
						switch {
						case err == nil:
							accepted[id].Store(true)
						case errors.Is(err, ErrClosed):
							return
						case errors.Is(err, ErrQueueFull):
						default:
							t.Errorf("Enqueue: %v", err)
							return
						}
					}
				}()
			}
			waitFor(t, "some traffic", func() bool { return attempts.Load() >= uint64(closeAfter) })
			q.Close()
			wg.Wait()

			last := make([]int, producers)
			for i := range last {
				last[i] = -1
			}
			for _, it := range r.written {
				if it.seq <= last[it.producer] {
					t.Fatalf("producer %d: item %d written after %d", it.producer, it.seq, last[it.producer])
				}
				last[it.producer] = it.seq
			}
			for id := range rel {
				want := int32(0)
				if accepted[id].Load() {
					want = 1
				}
				if got := rel[id].Load(); got != want {
					t.Fatalf("item %d (accepted %v) released %d times", id, accepted[id].Load(), got)
				}
			}
			s := q.Stats()
			checkInvariants(t, s, attempts.Load())
			if s.Written != uint64(len(r.written)) {
				t.Errorf("stats say %d written, the writer saw %d", s.Written, len(r.written))
			}
		})
	}
}

func TestNone(t *testing.T) {
	noLeak(t)
	r := &recorder{failN: func(n int) int { return n }}
	q := mustNew(t, r, Options[item]{})
	if q.Kind() != None {
		t.Fatalf("default kind %v", q.Kind())
	}
	var rel [3]atomic.Int32
	for i := 0; i < 3; i++ {
		if err := q.Enqueue(9, item{seq: i, released: &rel[i]}); err != nil {
			t.Fatal(err)
		}
		// Inline: written before Enqueue returns.
		if len(r.written) != i+1 || rel[i].Load() != 1 {
			t.Fatalf("item %d not written and released inline", i)
		}
	}
	q.Close()
	if err := q.Enqueue(0, item{}); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
	s := q.Stats()
	if s.Written != 3 || s.Batches != 3 {
		t.Errorf("stats %+v", s)
	}
	checkInvariants(t, s, 4)
}

func TestOptions(t *testing.T) {
	for _, o := range []Options[item]{{Kind: 7}, {Kind: FIFO, Queues: -1}, {Kind: FIFO, QueueLen: -1}, {Kind: FIFO, BatchSize: -2}} {
		if _, err := New[item](&recorder{}, o); err == nil || !strings.Contains(err.Error(), "Options.") {
			t.Errorf("New(%+v): %v, want an error naming the field", o, err)
		}
	}
	var k Kind
	if err := k.Set("FIFO"); err != nil || k != FIFO || k.String() != "fifo" {
		t.Errorf("Set(FIFO): %v %v", k, err)
	}
	if err := k.Set("red"); err == nil || !strings.Contains(err.Error(), `"red"`) {
		t.Errorf("Set(red): %v, want the bad value quoted", err)
	}
}

func TestNoAllocs(t *testing.T) {
	noLeak(t)
	for _, kind := range []Kind{None, FIFO} {
		w := BatchWriterFunc[item](func(items []item) (int, error) { return len(items), nil })
		q := mustNew(t, w, Options[item]{Kind: kind, Queues: 2, MaxWait: time.Hour})
		n := testing.AllocsPerRun(1000, func() {
			if err := q.Enqueue(1, item{}); err != nil {
				t.Fatal(err)
			}
		})
		q.Close()
		if n != 0 {
			t.Errorf("%v: %v allocations per Enqueue, want 0", kind, n)
		}
	}
}

// TestPacketBuffers drives a FIFO with gVisor packet buffers the way an
// endpoint does: the qdisc holds a reference from Enqueue to the end of the
// WriteBatch, and drops it with Release.
func TestPacketBuffers(t *testing.T) {
	noLeak(t)
	var mu sync.Mutex
	var sizes []int
	w := BatchWriterFunc[*stack.PacketBuffer](func(pkts []*stack.PacketBuffer) (int, error) {
		// What an adapter to stack.LinkWriter does: build a list.
		var list stack.PacketBufferList
		for _, p := range pkts {
			list.PushBack(p)
		}
		mu.Lock()
		for _, p := range list.AsSlice() {
			sizes = append(sizes, p.Size())
		}
		mu.Unlock()
		return list.Len(), nil
	})
	q, err := New[*stack.PacketBuffer](w, Options[*stack.PacketBuffer]{Kind: FIFO, Queues: 2, Release: (*stack.PacketBuffer).DecRef})
	if err != nil {
		t.Fatal(err)
	}
	var pkts []*stack.PacketBuffer
	for i := 0; i < 100; i++ {
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(make([]byte, i+1))})
		pkts = append(pkts, pkt)
		if err := q.Enqueue(uint32(i), pkt.IncRef()); err != nil {
			pkt.DecRef()
			t.Fatal(err)
		}
	}
	waitFor(t, "all written", func() bool { return q.Stats().Written == 100 })
	q.Close()
	for i, pkt := range pkts {
		if refs := pkt.ReadRefs(); refs != 1 {
			t.Errorf("packet %d holds %d references after the qdisc is done, want the caller's 1", i, refs)
		}
		pkt.DecRef()
	}
	if len(sizes) != 100 {
		t.Errorf("%d packets written", len(sizes))
	}
}

func BenchmarkQdisc(b *testing.B) {
	for _, kind := range []Kind{None, FIFO} {
		b.Run(fmt.Sprintf("kind=%v", kind), func(b *testing.B) {
			w := BatchWriterFunc[item](func(items []item) (int, error) { return len(items), nil })
			q := mustNew(b, w, Options[item]{Kind: kind, Queues: 2, MaxWait: time.Hour})
			b.ReportAllocs()
			var h atomic.Uint32
			b.RunParallel(func(pb *testing.PB) {
				hash := h.Add(1)
				for pb.Next() {
					if err := q.Enqueue(hash, item{}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			q.Close()
			s := q.Stats()
			if s.Batches > 0 {
				b.ReportMetric(float64(s.Written)/float64(s.Batches), "items/batch")
			}
		})
	}
}
