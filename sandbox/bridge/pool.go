package bridge

import (
	"math/bits"
	"sync"

	"github.com/sluicenet/sluice/dataplane"
)

// bufferPool is the dataplane.Allocator of a bridge: a frame's buffers go
// back to it as soon as the frame has been written to the other side, so a
// bridge in steady state reads into memory it has used before instead of
// making the garbage collector reclaim 64 KiB per super-frame. Sizes are
// rounded up to a power of two (the readv chain asks for 128..32768, the
// mmap ring for each frame's exact length).
type bufferPool struct {
	classes [maxClass + 1]sync.Pool // class c holds *[]byte of cap 1<<c
}

const (
	minClass = 7  // 128 bytes
	maxClass = 17 // 128 KiB: a 64 KiB GSO frame and its headers
)

func sizeClass(size int) int {
	if size <= 1<<minClass {
		return minClass
	}
	return bits.Len(uint(size - 1))
}

// Alloc returns a buffer of size bytes.
func (p *bufferPool) Alloc(size int) dataplane.Buffer {
	c := sizeClass(size)
	if c > maxClass {
		b := make([]byte, size)
		return dataplane.Buffer{Data: b}
	}
	if v, ok := p.classes[c].Get().(*[]byte); ok {
		return dataplane.Buffer{Data: (*v)[:size], Ref: v}
	}
	b := make([]byte, 1<<c)
	return dataplane.Buffer{Data: b[:size], Ref: &b}
}

// Free returns b to the pool.
func (p *bufferPool) Free(b dataplane.Buffer) {
	v, ok := b.Ref.(*[]byte)
	if !ok {
		return
	}
	p.classes[sizeClass(cap(*v))].Put(v)
}
