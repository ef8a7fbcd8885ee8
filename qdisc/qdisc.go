// Package qdisc is the queueing discipline in front of an endpoint's batched
// write: FIFO, the reference's (gVisor pkg/tcpip/link/qdisc/fifo), or none.
//
// # FIFO
//
// A FIFO has one bounded queue per channel, picked by the item's flow hash so
// that a flow keeps one queue and its order. Each queue's capacity is fixed
// at New (one allocation per queue) and each has one goroutine that drains
// it in batches of up to BatchSize into the BatchWriter, so that the stack's
// goroutines hand packets over and go back to work while one goroutine per
// channel makes the sendmmsg calls.
//
// # Backpressure instead of silent tail drop
//
// gVisor's fifo drops a packet the moment its queue is full. Measured on this
// machine kind (../shared/FIELD-NOTES.md), that turned a download without
// host GSO into 0.02 Gbit/s for whole runs: the 1000-packet queue filled, the
// drops landed on TCP as losses, and TCP sat in retransmission timeouts. So
// an Enqueue that finds its queue full waits, up to Options.MaxWait, for the
// drainer to make room: the producing goroutine (a TCP sender) is slowed to
// the rate the writer sustains, which is the backpressure a kernel qdisc
// applies through socket memory accounting (TCP Small Queues). Only a queue
// that stays full for MaxWait, because the writer is stuck, drops the item
// and counts it. Set MaxWait negative for the reference's behaviour.
//
// # Ownership
//
// Enqueue either takes the item (nil error) or leaves it with the caller (an
// error: the caller still owns it and must release it). The qdisc releases
// every item it took exactly once, with Options.Release: after WriteBatch
// returns with it, or at Close if it was never written. WriteBatch and
// Release run on the drainer goroutines and must not call Enqueue: a drainer
// waiting for room in its own queue would wait for itself.
//
// # Closing
//
// Close is idempotent. It stops accepting items (the closed check is
// repeated under each queue's lock, so no item slips in after the final
// drain), wakes waiting Enqueue calls with ErrClosed, releases what is still
// queued without writing it, and returns when every drainer goroutine has
// exited. A WriteBatch call already in progress is waited for.
package qdisc

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

var (
	// ErrClosed is returned by Enqueue after Close. It is net.ErrClosed;
	// do not retry.
	ErrClosed = net.ErrClosed
	// ErrQueueFull is returned by Enqueue when the item's queue stayed
	// full for MaxWait: the item was dropped (and counted); the caller
	// still owns it. It is returned bare, without wrapping, because it
	// happens on the overload path where an allocation per packet would
	// make matters worse.
	ErrQueueFull = errors.New("qdisc: queue full")
)

// Defaults.
const (
	// DefaultQueueLen is the capacity of each queue in items: runsc's
	// FIFO queue length (runsc/boot/network.go, fifo.New(..., 1000)).
	DefaultQueueLen = 1000
	// DefaultBatchSize is the most items per WriteBatch: 47, the
	// reference's fifo.BatchSize, because one 64 KiB TCP segment split by
	// software GSO at 1420 bytes is 46 full segments and one of 216 bytes.
	DefaultBatchSize = 47
	// DefaultMaxWait bounds how long Enqueue waits for room. One
	// 47-frame sendmmsg takes on the order of 100 us here, so 5 ms is
	// tens of batches: a queue still full after it has a stalled writer,
	// not a busy one. It is also 1/40 of TCP's 200 ms minimum RTO, so a
	// wait never costs more than a loss would.
	DefaultMaxWait = 5 * time.Millisecond
)

// Kind is the queueing discipline: --qdisc none|fifo.
type Kind uint8

const (
	// None writes each item inline, in the Enqueue call.
	None Kind = iota
	// FIFO queues items per channel and drains them in batches.
	FIFO
)

// String returns the flag spelling.
func (k Kind) String() string {
	switch k {
	case None:
		return "none"
	case FIFO:
		return "fifo"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// ParseKind parses "none" or "fifo".
func ParseKind(s string) (Kind, error) {
	switch strings.ToLower(s) {
	case "none":
		return None, nil
	case "fifo":
		return FIFO, nil
	}
	return 0, fmt.Errorf("qdisc: unknown discipline %q: want none or fifo", s)
}

// Set implements pflag.Value.
func (k *Kind) Set(s string) error {
	v, err := ParseKind(s)
	if err != nil {
		return err
	}
	*k = v
	return nil
}

// Type implements pflag.Value.
func (*Kind) Type() string { return "none|fifo" }

// BatchWriter is what a qdisc drains into: an endpoint's batched write.
type BatchWriter[T any] interface {
	// WriteBatch writes items in order and returns how many were
	// written. The qdisc counts those as written and the rest of the
	// batch as failed; it does not retry (the endpoint's writer handles
	// EAGAIN itself). It must not keep items or the slice after it
	// returns: the qdisc releases them.
	WriteBatch(items []T) (int, error)
}

// BatchWriterFunc adapts a function to BatchWriter.
type BatchWriterFunc[T any] func(items []T) (int, error)

// WriteBatch calls f(items).
func (f BatchWriterFunc[T]) WriteBatch(items []T) (int, error) { return f(items) }

// Options configure a qdisc. Zero values mean the defaults.
type Options[T any] struct {
	// Kind is the discipline; the zero value is None.
	Kind Kind
	// Queues is the number of FIFO queues, one per channel. Zero means 1.
	Queues int
	// QueueLen is each FIFO queue's capacity in items. Zero means
	// DefaultQueueLen.
	QueueLen int
	// BatchSize is the most items per WriteBatch call. Zero means
	// DefaultBatchSize.
	BatchSize int
	// MaxWait is how long Enqueue waits for room in a full queue before
	// it drops the item. Zero means DefaultMaxWait; negative means never
	// wait (drop at once, as gVisor's fifo does).
	MaxWait time.Duration
	// Release is called once for every item the qdisc took, after its
	// WriteBatch or at Close; nil means items need no release. For
	// gVisor packet buffers it is (*stack.PacketBuffer).DecRef.
	Release func(T)
}

func (o Options[T]) withDefaults() Options[T] {
	if o.Queues == 0 {
		o.Queues = 1
	}
	if o.QueueLen == 0 {
		o.QueueLen = DefaultQueueLen
	}
	if o.BatchSize == 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.MaxWait == 0 {
		o.MaxWait = DefaultMaxWait
	}
	if o.Release == nil {
		o.Release = func(T) {}
	}
	return o
}

func (o Options[T]) validate() error {
	if o.Kind != None && o.Kind != FIFO {
		return fmt.Errorf("qdisc: Options.Kind %v: want none or fifo", o.Kind)
	}
	if o.Queues < 1 {
		return fmt.Errorf("qdisc: Options.Queues %d: must be positive", o.Queues)
	}
	if o.QueueLen < 1 {
		return fmt.Errorf("qdisc: Options.QueueLen %d: must be positive", o.QueueLen)
	}
	if o.BatchSize < 1 {
		return fmt.Errorf("qdisc: Options.BatchSize %d: must be positive", o.BatchSize)
	}
	return nil
}

// Stats counts items. After Close and with no Enqueue in progress:
//
//	Enqueue calls = Enqueued + Dropped + Rejected
//	Enqueued      = Written + Failed + Released
type Stats struct {
	// Enqueued items were taken by the qdisc.
	Enqueued uint64
	// Written items were reported written by WriteBatch; Failed ones
	// were in a batch but not written.
	Written, Failed uint64
	// Dropped items found their queue full for MaxWait.
	Dropped uint64
	// Waited counts Enqueue calls that found their queue full and waited
	// (backpressure applied), whether or not they then got in.
	Waited uint64
	// Released items were still queued at Close and never written.
	Released uint64
	// Rejected counts Enqueue calls after Close.
	Rejected uint64
	// Batches counts WriteBatch calls.
	Batches uint64
}

// counters are one queue's statistics, written by its producers and its
// drainer.
type counters struct {
	enqueued, written, failed, dropped, waited, released, rejected, batches atomic.Uint64
}

// queue is one FIFO queue and its drainer's state.
type queue[T any] struct {
	mu sync.Mutex
	// ring holds n items from head; its length is the capacity, fixed
	// at New. Guarded by mu.
	ring    []T
	head, n int
	// closed is set by Close. Guarded by mu.
	closed bool
	// idle says the drainer is waiting on wake. Guarded by mu.
	idle bool
	// room, when not nil, is closed by the drainer when it frees space,
	// waking every waiting Enqueue; a waiter creates it. Guarded by mu.
	room chan struct{}
	// wake tells an idle drainer there is work or Close (capacity 1).
	wake chan struct{}
	// batch is the drainer's batch storage (drainer only).
	batch []T
	stats counters
	_     [64]byte // keep neighbouring queues' hot fields apart
}

// Qdisc is a queueing discipline in front of a BatchWriter. Its methods are
// safe for concurrent use.
type Qdisc[T any] struct {
	w       BatchWriter[T]
	kind    Kind
	maxWait time.Duration
	release func(T)
	queues  []queue[T]
	wg      sync.WaitGroup

	closeOnce sync.Once

	// none: inline writes hold inline for reading; Close takes it for
	// writing, so that no write runs after Close returns.
	inline       sync.RWMutex
	inlineClosed bool // guarded by inline
	one          sync.Pool
	noneStats    counters
}

// New returns a qdisc writing to w. For FIFO it starts one drainer goroutine
// per queue, which Close stops. It takes a copy of opts.
func New[T any](w BatchWriter[T], opts Options[T]) (*Qdisc[T], error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	d := &Qdisc[T]{w: w, kind: opts.Kind, maxWait: opts.MaxWait, release: opts.Release}
	if d.kind == None {
		d.one.New = func() any { return new([1]T) }
		return d, nil
	}
	d.queues = make([]queue[T], opts.Queues)
	for i := range d.queues {
		q := &d.queues[i]
		// One allocation for the ring and the batch together.
		buf := make([]T, opts.QueueLen+opts.BatchSize)
		q.ring = buf[:opts.QueueLen:opts.QueueLen]
		q.batch = buf[opts.QueueLen:]
		q.wake = make(chan struct{}, 1)
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.drain(q)
		}()
	}
	return d, nil
}

// Kind returns the discipline.
func (d *Qdisc[T]) Kind() Kind { return d.kind }

// Enqueue hands item over for writing. hash picks the queue (hash modulo the
// number of queues): give every packet of a flow the same hash. On nil the
// qdisc owns item; on ErrQueueFull or ErrClosed the caller still does. With
// None it writes item inline and returns nil even when the write fails (the
// failure is counted), like a queued write.
func (d *Qdisc[T]) Enqueue(hash uint32, item T) error {
	if d.kind == None {
		return d.writeInline(item)
	}
	q := &d.queues[hash%uint32(len(d.queues))]
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		q.stats.rejected.Add(1)
		return ErrClosed
	}
	if q.n == len(q.ring) {
		if err := d.waitForRoom(q); err != nil {
			q.mu.Unlock()
			return err
		}
	}
	q.ring[(q.head+q.n)%len(q.ring)] = item
	q.n++
	q.stats.enqueued.Add(1)
	if q.idle {
		q.idle = false
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	q.mu.Unlock()
	return nil
}

// waitForRoom waits, with q.mu held (and released while waiting), until q
// has room, Close, or MaxWait. It returns with q.mu held.
func (d *Qdisc[T]) waitForRoom(q *queue[T]) error {
	if d.maxWait < 0 {
		q.stats.dropped.Add(1)
		return ErrQueueFull
	}
	q.stats.waited.Add(1)
	deadline := time.Now().Add(d.maxWait)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for q.n == len(q.ring) {
		if q.closed {
			q.stats.rejected.Add(1)
			return ErrClosed
		}
		left := time.Until(deadline)
		if left <= 0 {
			q.stats.dropped.Add(1)
			return ErrQueueFull
		}
		if q.room == nil {
			q.room = make(chan struct{})
		}
		room := q.room
		q.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(left)
		} else {
			timer.Reset(left)
		}
		select {
		case <-room:
		case <-timer.C:
		}
		q.mu.Lock()
	}
	// Room appeared, but Close may have come first.
	if q.closed {
		q.stats.rejected.Add(1)
		return ErrClosed
	}
	return nil
}

// drain is a queue's goroutine: it writes the queue out in batches until
// Close.
func (d *Qdisc[T]) drain(q *queue[T]) {
	for {
		q.mu.Lock()
		for q.n == 0 && !q.closed {
			q.idle = true
			q.mu.Unlock()
			<-q.wake
			q.mu.Lock()
		}
		if q.closed {
			// Nothing enters a closed queue and the drainer is the
			// only one to take items out, so what is left can be
			// released, unwritten, outside the lock (Release may be
			// slow, or take locks of its own).
			head, n := q.head, q.n
			q.n = 0
			q.mu.Unlock()
			for i := range n {
				j := (head + i) % len(q.ring)
				d.release(q.ring[j])
				var zero T
				q.ring[j] = zero
			}
			q.stats.released.Add(uint64(n))
			return
		}
		k := min(q.n, len(q.batch))
		for i := range k {
			q.batch[i] = q.ring[q.head]
			var zero T
			q.ring[q.head] = zero
			q.head = (q.head + 1) % len(q.ring)
		}
		q.n -= k
		if q.room != nil {
			close(q.room)
			q.room = nil
		}
		q.mu.Unlock()

		batch := q.batch[:k]
		n, _ := d.w.WriteBatch(batch)
		n = max(0, min(n, k))
		q.stats.batches.Add(1)
		q.stats.written.Add(uint64(n))
		q.stats.failed.Add(uint64(k - n))
		for i := range batch {
			d.release(batch[i])
		}
		clear(batch)
	}
}

func (d *Qdisc[T]) writeInline(item T) error {
	d.inline.RLock()
	if d.inlineClosed {
		d.inline.RUnlock()
		d.noneStats.rejected.Add(1)
		return ErrClosed
	}
	d.noneStats.enqueued.Add(1)
	// A pooled one-item array: a slice of a local would escape through
	// the interface call and cost an allocation per packet.
	one := d.one.Get().(*[1]T)
	one[0] = item
	n, _ := d.w.WriteBatch(one[:])
	var zero T
	one[0] = zero
	d.one.Put(one)
	d.noneStats.batches.Add(1)
	if n >= 1 {
		d.noneStats.written.Add(1)
	} else {
		d.noneStats.failed.Add(1)
	}
	d.release(item)
	d.inline.RUnlock()
	return nil
}

// Close stops the qdisc: see the package documentation. It is idempotent and
// safe to call concurrently with Enqueue.
func (d *Qdisc[T]) Close() {
	d.closeOnce.Do(func() {
		if d.kind == None {
			d.inline.Lock()
			d.inlineClosed = true
			d.inline.Unlock()
			return
		}
		for i := range d.queues {
			q := &d.queues[i]
			q.mu.Lock()
			q.closed = true
			if q.room != nil {
				close(q.room)
				q.room = nil
			}
			select {
			case q.wake <- struct{}{}:
			default:
			}
			q.mu.Unlock()
		}
		d.wg.Wait()
	})
}

// Stats returns the counters summed over the queues.
func (d *Qdisc[T]) Stats() Stats {
	var s Stats
	add := func(c *counters) {
		s.Enqueued += c.enqueued.Load()
		s.Written += c.written.Load()
		s.Failed += c.failed.Load()
		s.Dropped += c.dropped.Load()
		s.Waited += c.waited.Load()
		s.Released += c.released.Load()
		s.Rejected += c.rejected.Load()
		s.Batches += c.batches.Load()
	}
	add(&d.noneStats)
	for i := range d.queues {
		add(&d.queues[i].stats)
	}
	return s
}
