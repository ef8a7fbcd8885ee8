package dataplane

import (
	"sync"
	"sync/atomic"
	"testing"
)

func TestProcessorQueue(t *testing.T) {
	var mu sync.Mutex
	var delivered []int
	var batches []int
	var freed atomic.Int64
	var discard atomic.Bool
	p := newProcessor(
		func(f []Frame) {
			mu.Lock()
			defer mu.Unlock()
			batches = append(batches, len(f))
			for i := range f {
				if len(f[i].Data) != 2 || f[i].Data[1].Data[0] != byte(f[i].Len) {
					t.Errorf("frame %d: buffers %v", f[i].Len, f[i].Data)
				}
				delivered = append(delivered, f[i].Len)
			}
		},
		func(f *Frame) { freed.Add(int64(len(f.Data))) },
		discard.Load,
	)
	frame := func(i int) *Frame {
		// Data is scratch the reader reuses: the queue must copy.
		scratch := []Buffer{{Data: []byte{0}}, {Data: []byte{byte(i)}}}
		return &Frame{Len: i, Data: scratch}
	}
	// Fill the queue past its limit before the processor runs.
	accepted := 0
	for i := range processorQueueLimit + 10 {
		if p.push(frame(i % 256)) {
			accepted++
		}
	}
	if accepted != processorQueueLimit {
		t.Errorf("accepted %d frames, want the limit %d", accepted, processorQueueLimit)
	}
	done := make(chan struct{})
	go func() { p.run(); close(done) }()
	p.notify()
	p.close()
	<-done
	if len(delivered) != processorQueueLimit {
		t.Fatalf("delivered %d frames, want %d", len(delivered), processorQueueLimit)
	}
	for i, n := range delivered {
		if n != i%256 {
			t.Fatalf("frame %d delivered as %d: order lost", i, n)
		}
	}
	for _, b := range batches {
		if b > processorMaxDeliver {
			t.Errorf("a Deliver call got %d frames, more than %d", b, processorMaxDeliver)
		}
	}
	if p.push(frame(1)) {
		t.Error("push after close accepted")
	}

	// Discarding (the link closed): queued frames are freed, not delivered.
	p = newProcessor(func([]Frame) { t.Error("delivered while discarding") }, func(f *Frame) { freed.Add(int64(len(f.Data))) }, discard.Load)
	discard.Store(true)
	for i := range 5 {
		p.push(frame(i))
	}
	p.close()
	p.run()
	if freed.Load() != 10 {
		t.Errorf("freed %d buffers, want 10", freed.Load())
	}
}

func TestProcessorQueueAllocs(t *testing.T) {
	n := 0
	p := newProcessor(func(f []Frame) { n += len(f) }, func(*Frame) {}, func() bool { return false })
	done := make(chan struct{})
	go func() { p.run(); close(done) }()
	defer func() { p.close(); <-done }()
	f := &Frame{Len: 1, Data: []Buffer{{Data: []byte{1}}}}
	allocs := testing.AllocsPerRun(1000, func() {
		for range 8 {
			p.push(f)
		}
		p.notify()
	})
	if allocs != 0 {
		t.Errorf("push allocates %v times per 8 frames, want 0", allocs)
	}
}
