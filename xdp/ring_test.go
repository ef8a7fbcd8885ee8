package xdp

import (
	"math"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
)

// fakeRing is a ring in ordinary memory, with the kernel's side played by
// the test.
type fakeRing[T any] struct {
	prod, cons, flags atomic.Uint32
	entries           []T
}

func newFakeRing[T any](size, start uint32) *fakeRing[T] {
	f := &fakeRing[T]{entries: make([]T, size)}
	f.prod.Store(start)
	f.cons.Store(start)
	return f
}

func (f *fakeRing[T]) mem() ringMem[T] {
	return ringMem[T]{producer: &f.prod, consumer: &f.cons, flags: &f.flags, entries: f.entries}
}

func (f *fakeRing[T]) at(i uint32) *T { return &f.entries[i&uint32(len(f.entries)-1)] }

// Start indices that put the wrap at 2^32 at every distance from the first
// operation, for a ring of 8.
var wrapStarts = []uint32{0, 1, math.MaxUint32 - 8, math.MaxUint32 - 7, math.MaxUint32 - 3, math.MaxUint32 - 1, math.MaxUint32}

// TestFillRingWraparound produces through a FillRing while a fake kernel
// consumes in random amounts, across the 2^32 wrap of the indices: every
// value comes out once and in order, Free is exact, and a full ring refuses
// a reservation.
func TestFillRingWraparound(t *testing.T) {
	const size = 8
	for _, start := range wrapStarts {
		f := newFakeRing[uint64](size, start)
		var r FillRing
		if err := r.init(f.mem()); err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(uint64(start), 1))
		var next, want uint64 // next value to produce, next the kernel expects
		for step := 0; step < 2000; step++ {
			outstanding := uint32(next - want)
			if got := r.Free(size); got != size-outstanding {
				t.Fatalf("start %#x step %d: Free %d, want %d", start, step, got, size-outstanding)
			}
			n := uint32(rng.IntN(size + 2))
			idx, ok := r.Reserve(n)
			if fits := n > 0 && n <= size-outstanding; ok != fits {
				t.Fatalf("start %#x step %d: Reserve(%d) with %d outstanding: ok=%v", start, step, n, outstanding, ok)
			}
			if ok {
				// Cancel part of it now and then: the cancelled slots
				// are reserved again next time.
				keep := n
				if rng.IntN(4) == 0 {
					keep = uint32(rng.IntN(int(n) + 1))
					r.Cancel(n - keep)
				}
				for i := uint32(0); i < keep; i++ {
					r.Set(idx+i, next)
					next++
				}
				r.Submit(keep)
			}
			if got := f.prod.Load(); got != start+uint32(next) {
				t.Fatalf("start %#x step %d: producer %#x, want %#x", start, step, got, start+uint32(next))
			}
			// The kernel consumes some of what is published.
			c := f.cons.Load()
			avail := f.prod.Load() - c
			k := uint32(rng.IntN(int(avail) + 1))
			for i := uint32(0); i < k; i++ {
				if got := *f.at(c + i); got != want {
					t.Fatalf("start %#x step %d: kernel read %d, want %d", start, step, got, want)
				}
				want++
			}
			f.cons.Store(c + k)
		}
		if next < 1000 {
			t.Errorf("start %#x: only %d values went through", start, next)
		}
	}
}

// TestRXRingWraparound has a fake kernel produce descriptors in random
// amounts while the ring is peeked, cancelled and released, across the
// wrap: each descriptor is seen in order, and the kernel never overwrites
// a slot that was not released.
func TestRXRingWraparound(t *testing.T) {
	const size = 8
	for _, start := range wrapStarts {
		f := newFakeRing[Desc](size, start)
		var r RXRing
		if err := r.init(f.mem()); err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(uint64(start), 2))
		var produced, consumed uint64
		for step := 0; step < 2000; step++ {
			// The kernel fills what the consumer index says is free.
			p, c := f.prod.Load(), f.cons.Load()
			room := size - (p - c)
			k := uint32(rng.IntN(int(room) + 1))
			for i := uint32(0); i < k; i++ {
				*f.at(p + i) = Desc{Addr: produced, Len: uint32(produced)}
				produced++
			}
			f.prod.Store(p + k)

			max := uint32(rng.IntN(size + 2))
			idx, n := r.Peek(max)
			if n > max {
				t.Fatalf("start %#x step %d: Peek(%d) gave %d", start, step, max, n)
			}
			if cancel := rng.IntN(5) == 0 && n > 0; cancel {
				r.Cancel(n)
				continue
			}
			for i := uint32(0); i < n; i++ {
				if d := r.At(idx + i); d.Addr != consumed || d.Len != uint32(consumed) {
					t.Fatalf("start %#x step %d: got %+v, want addr %d", start, step, d, consumed)
				}
				consumed++
			}
			r.Release(n)
			if got := f.cons.Load(); got != start+uint32(consumed) {
				t.Fatalf("start %#x step %d: consumer %#x, want %#x", start, step, got, start+uint32(consumed))
			}
		}
		if consumed < 1000 {
			t.Errorf("start %#x: only %d descriptors went through", start, consumed)
		}
	}
}

// TestCompletionRingPeekOnlyRefreshesWhenEmpty checks the caching rule:
// entries the ring knows about are handed out without reading the
// producer index again, which is read only once they are used up.
func TestCompletionRingPeekOnlyRefreshesWhenEmpty(t *testing.T) {
	f := newFakeRing[uint64](8, math.MaxUint32-2)
	var r CompletionRing
	if err := r.init(f.mem()); err != nil {
		t.Fatal(err)
	}
	for i := uint32(0); i < 4; i++ {
		*f.at(f.prod.Load() + i) = uint64(i)
	}
	f.prod.Add(4)
	if _, n := r.Peek(2); n != 2 {
		t.Fatalf("Peek(2) = %d", n)
	}
	// The kernel publishes more; the two known entries come first and
	// alone.
	*f.at(f.prod.Load()) = 4
	f.prod.Add(1)
	if idx, n := r.Peek(8); n != 2 || r.At(idx) != 2 {
		t.Fatalf("Peek(8) = %d entries from %d, want the 2 cached ones from 2", n, r.At(idx))
	}
	if idx, n := r.Peek(8); n != 1 || r.At(idx) != 4 {
		t.Fatalf("Peek(8) after the cached ones = %d, want 1 (value 4)", n)
	}
	r.Release(5)
	if f.cons.Load() != f.prod.Load() {
		t.Errorf("consumer %#x, producer %#x: all released", f.cons.Load(), f.prod.Load())
	}
	// Releasing more than was peeked releases only what was peeked.
	r.Release(3)
	if f.cons.Load() != f.prod.Load() {
		t.Errorf("over-release moved the consumer to %#x", f.cons.Load())
	}
}

// TestBrokenRingIndices: indices no kernel would write must not make the
// rings promise more than they hold.
func TestBrokenRingIndices(t *testing.T) {
	t.Run("consumer ahead of producer", func(t *testing.T) {
		f := newFakeRing[Desc](8, 100)
		var r TXRing
		if err := r.init(f.mem()); err != nil {
			t.Fatal(err)
		}
		// Fill the ring, so that the next reservation must read the
		// kernel's index; then the kernel's index runs past ours.
		if _, ok := r.Reserve(8); !ok {
			t.Fatal("Reserve(8) on an empty ring failed")
		}
		r.Submit(8)
		f.cons.Store(150)
		if got := r.Free(1); got != 0 {
			t.Errorf("Free = %d, want 0", got)
		}
		if _, ok := r.Reserve(1); ok {
			t.Error("Reserve succeeded on a broken ring")
		}
	})
	t.Run("producer far ahead", func(t *testing.T) {
		f := newFakeRing[Desc](8, 100)
		var r RXRing
		if err := r.init(f.mem()); err != nil {
			t.Fatal(err)
		}
		f.prod.Store(100 + 1000)
		_, n := r.Peek(1 << 20)
		if n > 8 {
			t.Errorf("Peek gave %d entries from a ring of 8", n)
		}
		_, n2 := r.Peek(1 << 20)
		if n+n2 > 8 {
			t.Errorf("two Peeks without Release gave %d entries from a ring of 8", n+n2)
		}
	})
	t.Run("sizes", func(t *testing.T) {
		for _, n := range []int{0, 3, 6, 100} {
			f := &fakeRing[uint64]{entries: make([]uint64, n)}
			var r FillRing
			if err := r.init(f.mem()); err == nil || !strings.Contains(err.Error(), "power of two") {
				t.Errorf("size %d: %v, want a power-of-two error", n, err)
			}
		}
	})
}

func TestNeedsWakeup(t *testing.T) {
	f := newFakeRing[uint64](4, 0)
	var r FillRing
	if err := r.init(f.mem()); err != nil {
		t.Fatal(err)
	}
	if r.NeedsWakeup() {
		t.Error("NeedsWakeup with no flag set")
	}
	f.flags.Store(ringWakeup)
	if !r.NeedsWakeup() {
		t.Error("NeedsWakeup false with XDP_RING_NEED_WAKEUP set")
	}
}

func TestProdRingPending(t *testing.T) {
	f := newFakeRing[Desc](4, math.MaxUint32)
	var r TXRing
	if err := r.init(f.mem()); err != nil {
		t.Fatal(err)
	}
	idx, _ := r.Reserve(3)
	for i := uint32(0); i < 3; i++ {
		r.Set(idx+i, Desc{Addr: uint64(i)})
	}
	r.Submit(3)
	if p := r.Pending(); p != 3 {
		t.Fatalf("Pending = %d, want 3", p)
	}
	f.cons.Add(2)
	if p := r.Pending(); p != 1 {
		t.Fatalf("Pending after the kernel took 2 = %d, want 1", p)
	}
}
