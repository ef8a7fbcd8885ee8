package dataplane

import "sync"

// Processors: when LinkOptions.ProcessorsPerChannel > 1 the reader of a
// channel only reads; it steers each frame by flow hash to one of P processor
// goroutines, which deliver. One flow always lands on the same processor, so
// its frames stay in order, and the Deliverer's work (a netstack's protocol
// processing) spreads over P goroutines.

// processorQueueLimit bounds a processor's queue in frames (the processor
// may hold as many again that it took from the queue and is delivering). At a million
// frames a second this is 2 ms of traffic: enough to ride out a processor
// being descheduled, small enough that a stuck processor does not pin much
// memory.
//
// A full queue drops the frame (counted in RxDropped, its buffers freed)
// instead of blocking the reader: blocking would stall every other flow of
// the channel behind one slow processor, and while the reader is blocked the
// kernel drops at the socket anyway, where nobody counts it per flow.
const processorQueueLimit = 2048

// processorMaxDeliver bounds the frames of one Deliver call from a processor,
// so that a consumer sees batches of a size it can plan for (the reader
// delivers at most RecvBatchSize, or a ring's worth, at a time).
const processorMaxDeliver = 256

// frameQueue is a processor's inbound queue: frames and the headers of their
// buffers, appended by the reader and taken whole by the processor, which
// swaps in its own (empty) arrays. Frame.Data in the queue is nil: the
// frames' buffers are bufs[ends[i-1]:ends[i]], because the reader's
// Frame.Data slices point into its own scratch, reused for the next read.
// Both sides keep their arrays' capacity, so steady state allocates nothing.
type frameQueue struct {
	mu     sync.Mutex
	frames []Frame  // guarded by mu
	ends   []int    // guarded by mu; end of frame i's buffers in bufs
	bufs   []Buffer // guarded by mu
	closed bool     // guarded by mu; no more pushes, drain and exit
	// wake holds a token when the processor may have work: a push or a
	// close after it last looked.
	wake chan struct{}
}

// processor is one processor goroutine's state.
type processor struct {
	q frameQueue
	// deliver counts and hands a batch to the Deliverer; drop returns a
	// frame's buffers to the Allocator and counts it dropped. Both are
	// set by the Link.
	deliver func([]Frame)
	drop    func(*Frame)
	// discard says the link is closing: queued frames are freed instead
	// of delivered.
	discard func() bool

	// Owned by the processor goroutine: the arrays swapped with q's.
	frames []Frame
	ends   []int
	bufs   []Buffer
}

func newProcessor(deliver func([]Frame), drop func(*Frame), discard func() bool) *processor {
	p := &processor{deliver: deliver, drop: drop, discard: discard}
	p.q.wake = make(chan struct{}, 1)
	// Start both sides with room for a full queue of one-buffer frames;
	// bufs grows if frames span several buffers and keeps that size.
	p.q.frames = make([]Frame, 0, processorQueueLimit)
	p.q.ends = make([]int, 0, processorQueueLimit)
	p.q.bufs = make([]Buffer, 0, processorQueueLimit)
	p.frames = make([]Frame, 0, processorQueueLimit)
	p.ends = make([]int, 0, processorQueueLimit)
	p.bufs = make([]Buffer, 0, processorQueueLimit)
	return p
}

// push queues a copy of f (its Buffer headers included). It returns false
// when the queue is full or closed; the caller then still owns f's buffers.
func (p *processor) push(f *Frame) bool {
	q := &p.q
	q.mu.Lock()
	if q.closed || len(q.frames) >= processorQueueLimit {
		q.mu.Unlock()
		return false
	}
	g := *f
	g.Data = nil
	q.frames = append(q.frames, g)
	q.bufs = append(q.bufs, f.Data...)
	q.ends = append(q.ends, len(q.bufs))
	q.mu.Unlock()
	return true
}

// notify wakes the processor after one or more pushes.
func (p *processor) notify() {
	select {
	case p.q.wake <- struct{}{}:
	default:
	}
}

// close tells the processor that nothing more will be pushed: it delivers
// (or, when discarding, drops) what is queued and returns.
func (p *processor) close() {
	p.q.mu.Lock()
	p.q.closed = true
	p.q.mu.Unlock()
	p.notify()
}

// run is the processor goroutine.
func (p *processor) run() {
	for {
		q := &p.q
		q.mu.Lock()
		for len(q.frames) == 0 && !q.closed {
			q.mu.Unlock()
			<-q.wake
			q.mu.Lock()
		}
		if len(q.frames) == 0 {
			q.mu.Unlock()
			return
		}
		p.frames, q.frames = q.frames, p.frames
		p.ends, q.ends = q.ends, p.ends
		p.bufs, q.bufs = q.bufs, p.bufs
		q.mu.Unlock()

		start := 0
		for i := range p.frames {
			p.frames[i].Data = p.bufs[start:p.ends[i]:p.ends[i]]
			start = p.ends[i]
		}
		if p.discard() {
			for i := range p.frames {
				p.drop(&p.frames[i])
			}
		} else {
			for b := p.frames; len(b) > 0; {
				n := min(len(b), processorMaxDeliver)
				p.deliver(b[:n])
				b = b[n:]
			}
		}
		// Drop the references to delivered memory, keep the arrays.
		clear(p.frames)
		clear(p.bufs)
		p.frames, p.ends, p.bufs = p.frames[:0], p.ends[:0], p.bufs[:0]
	}
}
