package xdp

// chunkState says who holds a UMEM chunk.
type chunkState uint8

const (
	// chunkFree: ours, on the pool's free stack.
	chunkFree chunkState = iota
	// chunkKernel: handed to the kernel (fill or tx ring) and not
	// returned yet (rx or completion ring).
	chunkKernel
)

// chunkPool is a contiguous range of UMEM chunks used by one ring pair of
// one queue: the receive half (fill ring out, rx ring back) or the send half
// (tx ring out, completion ring back). It remembers which chunks the kernel
// holds, so that an address coming back that was never handed out, or
// comes back twice, is refused instead of being handed out twice.
//
// Not safe for concurrent use: the receive half belongs to the queue's
// reader, the send half is used under the queue's tx lock.
type chunkPool struct {
	g     geometry
	first uint64 // offset of the first chunk
	end   uint64 // offset just past the last chunk
	// free is a stack of the offsets of free chunks.
	free []uint64
	// state is indexed by chunk number minus first's.
	state []chunkState
}

// newChunkPool returns a pool of the n chunks starting at chunk number
// first, all free.
func newChunkPool(g geometry, first, n uint64) *chunkPool {
	p := &chunkPool{
		g:     g,
		first: first * g.frameSize,
		end:   (first + n) * g.frameSize,
		free:  make([]uint64, n),
		state: make([]chunkState, n),
	}
	// Pushed in reverse so that chunks are first used in address order,
	// which makes captures and debugging easier to read.
	for i := range p.free {
		p.free[i] = (first + n - 1 - uint64(i)) * g.frameSize
	}
	return p
}

// Len returns the number of chunks in the pool.
func (p *chunkPool) Len() int { return len(p.state) }

// Free returns the number of free chunks.
func (p *chunkPool) Free() int { return len(p.free) }

// take pops a free chunk and marks it as the kernel's: the caller puts it
// in a ring, or gives it back with untake.
func (p *chunkPool) take() (uint64, bool) {
	n := len(p.free)
	if n == 0 {
		return 0, false
	}
	c := p.free[n-1]
	p.free = p.free[:n-1]
	p.state[p.g.index(c-p.first)] = chunkKernel
	return c, true
}

// untake returns a chunk taken with take that never reached the kernel.
func (p *chunkPool) untake(c uint64) {
	p.state[p.g.index(c-p.first)] = chunkFree
	p.free = append(p.free, c)
}

// reclaim takes back a chunk the kernel returned. It refuses (DescNotOurs)
// a chunk outside this pool or one the kernel does not hold.
func (p *chunkPool) reclaim(c uint64) DescError {
	if c < p.first || c >= p.end || c&(p.g.frameSize-1) != 0 {
		return DescNotOurs
	}
	i := p.g.index(c - p.first)
	if p.state[i] != chunkKernel {
		return DescNotOurs
	}
	p.state[i] = chunkFree
	p.free = append(p.free, c)
	return DescOK
}

// inKernel returns the number of chunks the kernel holds.
func (p *chunkPool) inKernel() int { return len(p.state) - len(p.free) }
