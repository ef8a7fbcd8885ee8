package xdp

import (
	"fmt"
	"math/bits"
	"sync/atomic"
)

// The four AF_XDP rings are single-producer, single-consumer queues in
// memory shared with the kernel (Documentation/networking/af_xdp.rst). Each
// has a producer index, a consumer index and a flags word, all u32, and an
// array of entries whose length is a power of two. Indices run freely and
// wrap at 2^32; an index selects entry index&mask. The producer writes
// entries, then publishes them by storing the producer index; the consumer
// reads entries, then hands their slots back by storing the consumer index.
//
// The kernel pairs these with smp_load_acquire and smp_store_release
// (net/xdp/xsk_queue.h). Here the shared indices are read with an atomic
// load and published with an atomic store; Go's atomics are sequentially
// consistent, which includes acquire and release, so entry writes are
// visible before the index that publishes them, and entry reads happen
// after the index load that made them available. Each side keeps a cached
// copy of the other side's index and reads the shared one again only when
// the cached copy says there is not enough, as libxdp's xsk.h does: the
// shared index sits on a cache line the other side keeps writing.
//
// The verbs are those of xsk.h: Reserve and Submit on the rings we produce
// (fill, tx), Peek, Release and Cancel on the rings we consume (rx,
// completion), NeedsWakeup on all of them.

// ringWakeup is XDP_RING_NEED_WAKEUP (<linux/if_xdp.h>).
const ringWakeup = 1

// ringMem is a ring's shared words and its entries, wherever they live: in
// an mmap of an AF_XDP socket, or in ordinary memory for tests.
type ringMem[T any] struct {
	producer *atomic.Uint32
	consumer *atomic.Uint32
	flags    *atomic.Uint32
	entries  []T
}

func (m ringMem[T]) check() (uint32, error) {
	n := len(m.entries)
	if n < 1 || n > 1<<31 || bits.OnesCount(uint(n)) != 1 {
		return 0, fmt.Errorf("xdp: ring of %d entries: the size must be a power of two", n)
	}
	if m.producer == nil || m.consumer == nil || m.flags == nil {
		return 0, fmt.Errorf("xdp: ring without its producer, consumer or flags word")
	}
	return uint32(n), nil
}

// prodRing is the side of a ring that we produce into and the kernel
// consumes from. Single goroutine; not safe for concurrent use.
type prodRing[T any] struct {
	// producer is written by us, read by the kernel.
	producer *atomic.Uint32
	// consumer is written by the kernel, read by us.
	consumer *atomic.Uint32
	// flags is written by the kernel (XDP_RING_NEED_WAKEUP).
	flags *atomic.Uint32
	// entries are written by us between Reserve and Submit.
	entries []T
	mask    uint32
	size    uint32
	// cachedProd is the next index to reserve: the published producer
	// plus what is reserved and not yet submitted.
	cachedProd uint32
	// published is the producer index as we last stored it.
	published uint32
	// cachedCons is the kernel's consumer index plus size, as last read:
	// cachedCons - cachedProd is the number of free slots.
	cachedCons uint32
}

func (r *prodRing[T]) init(m ringMem[T]) error {
	n, err := m.check()
	if err != nil {
		return err
	}
	*r = prodRing[T]{producer: m.producer, consumer: m.consumer, flags: m.flags, entries: m.entries, mask: n - 1, size: n}
	r.published = r.producer.Load()
	r.cachedProd = r.published
	r.cachedCons = r.consumer.Load() + n
	return nil
}

// Size returns the number of entries.
func (r *prodRing[T]) Size() uint32 { return r.size }

// Free returns the number of slots that can be reserved, reading the
// kernel's consumer index again if fewer than want are known to be free.
func (r *prodRing[T]) Free(want uint32) uint32 {
	free := r.cachedCons - r.cachedProd
	if free >= want {
		return free
	}
	c := r.consumer.Load() + r.size
	free = c - r.cachedProd
	if free > r.size {
		// Only a consumer index that ran ahead of the producer gets
		// here: a broken ring. Promise nothing, and remember nothing.
		return 0
	}
	r.cachedCons = c
	return free
}

// Reserve reserves n slots and returns the index of the first. It reserves
// all n or none: ok is false when fewer than n slots are free.
func (r *prodRing[T]) Reserve(n uint32) (idx uint32, ok bool) {
	if n == 0 || r.Free(n) < n {
		return 0, false
	}
	idx = r.cachedProd
	r.cachedProd += n
	return idx, true
}

// Cancel gives back the last n reserved slots that were not submitted.
func (r *prodRing[T]) Cancel(n uint32) {
	if n > r.cachedProd-r.published {
		n = r.cachedProd - r.published
	}
	r.cachedProd -= n
}

// Submit publishes the first n reserved slots to the kernel, in order.
func (r *prodRing[T]) Submit(n uint32) {
	if n > r.cachedProd-r.published {
		n = r.cachedProd - r.published
	}
	r.published += n
	r.producer.Store(r.published)
}

// Pending returns how many submitted entries the kernel has not consumed
// yet, reading its consumer index.
func (r *prodRing[T]) Pending() uint32 {
	return min(r.published-r.consumer.Load(), r.size)
}

// NeedsWakeup reports whether the kernel asks for a system call before it
// looks at this ring again (XDP_RING_NEED_WAKEUP).
func (r *prodRing[T]) NeedsWakeup() bool { return r.flags.Load()&ringWakeup != 0 }

// at returns the entry for index idx.
func (r *prodRing[T]) at(idx uint32) *T { return &r.entries[idx&r.mask] }

// consRing is the side of a ring that the kernel produces into and we
// consume from. Single goroutine; not safe for concurrent use.
type consRing[T any] struct {
	// producer is written by the kernel, read by us.
	producer *atomic.Uint32
	// consumer is written by us, read by the kernel.
	consumer *atomic.Uint32
	// flags is written by the kernel.
	flags *atomic.Uint32
	// entries are written by the kernel before it publishes them.
	entries []T
	mask    uint32
	size    uint32
	// cachedProd is the kernel's producer index as last read.
	cachedProd uint32
	// cachedCons is the next index to peek.
	cachedCons uint32
	// released is the consumer index as we last stored it.
	released uint32
}

func (r *consRing[T]) init(m ringMem[T]) error {
	n, err := m.check()
	if err != nil {
		return err
	}
	*r = consRing[T]{producer: m.producer, consumer: m.consumer, flags: m.flags, entries: m.entries, mask: n - 1, size: n}
	r.released = r.consumer.Load()
	r.cachedCons = r.released
	r.cachedProd = r.producer.Load()
	return nil
}

// Size returns the number of entries.
func (r *consRing[T]) Size() uint32 { return r.size }

// Avail returns how many entries can be peeked, at most max, reading the
// kernel's producer index only when none are known.
func (r *consRing[T]) Avail(max uint32) uint32 {
	n := r.cachedProd - r.cachedCons
	if n == 0 {
		r.cachedProd = r.producer.Load()
		n = r.cachedProd - r.cachedCons
	}
	if n > r.size {
		// A producer index more than a ring ahead of what we released
		// is a broken ring; take what one ring holds and let the
		// descriptor checks sort out the contents.
		n = r.size - (r.cachedCons - r.released)
	}
	return min(n, max)
}

// Peek takes up to max entries and returns the index of the first and
// their number; each is read with At, then handed back with Release (or
// left for the next Peek with Cancel).
func (r *consRing[T]) Peek(max uint32) (idx, n uint32) {
	n = r.Avail(max)
	if n == 0 {
		return 0, 0
	}
	idx = r.cachedCons
	r.cachedCons += n
	return idx, n
}

// Cancel returns the last n peeked and unreleased entries to the ring, to
// be peeked again.
func (r *consRing[T]) Cancel(n uint32) {
	if n > r.cachedCons-r.released {
		n = r.cachedCons - r.released
	}
	r.cachedCons -= n
}

// Release hands the first n peeked entries' slots back to the kernel.
func (r *consRing[T]) Release(n uint32) {
	if n > r.cachedCons-r.released {
		n = r.cachedCons - r.released
	}
	r.released += n
	r.consumer.Store(r.released)
}

// NeedsWakeup reports whether the kernel set XDP_RING_NEED_WAKEUP.
func (r *consRing[T]) NeedsWakeup() bool { return r.flags.Load()&ringWakeup != 0 }

// at returns the entry for index idx.
func (r *consRing[T]) at(idx uint32) *T { return &r.entries[idx&r.mask] }

// FillRing hands empty UMEM chunks to the kernel for received frames (the
// kernel writes a frame into a chunk from here and reports it on the rx
// ring). Single goroutine; not safe for concurrent use.
type FillRing struct{ prodRing[uint64] }

// Set sets the chunk address of reserved slot idx.
func (r *FillRing) Set(idx uint32, addr uint64) { *r.at(idx) = addr }

// TXRing hands frames to send to the kernel. Single goroutine; not safe for
// concurrent use.
type TXRing struct{ prodRing[Desc] }

// Set sets the descriptor of reserved slot idx.
func (r *TXRing) Set(idx uint32, d Desc) { *r.at(idx) = d }

// RXRing carries received frames from the kernel. Single goroutine; not
// safe for concurrent use.
type RXRing struct{ consRing[Desc] }

// At returns the descriptor of peeked entry idx. It is a copy: the kernel
// may reuse the slot once it is released.
func (r *RXRing) At(idx uint32) Desc { return *r.at(idx) }

// CompletionRing returns the addresses of sent frames, whose chunks can be
// used again. Single goroutine; not safe for concurrent use.
type CompletionRing struct{ consRing[uint64] }

// At returns the address of peeked entry idx.
func (r *CompletionRing) At(idx uint32) uint64 { return *r.at(idx) }
