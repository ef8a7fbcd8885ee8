//go:build linux

package dataplane

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/rawfile"
)

// iovecChain is the receive memory of one frame: an optional virtio_net_hdr
// buffer, then buffers of LinkOptions.BufferShape from the Allocator, as in
// gVisor's iovecBuffer (pkg/tcpip/link/fdbased/packet_dispatchers.go). A
// frame of n bytes takes only the buffers its bytes landed in; those are
// replaced before the next read and the others are kept, so a stream of
// small frames allocates one small buffer per frame, not a whole chain.
type iovecChain struct {
	alloc Allocator
	shape []int
	// bufs[i] is the buffer behind iovs[off+i]; Data is nil once handed
	// over with a frame. Handed-over buffers are always a prefix.
	bufs []Buffer
	iovs []unix.Iovec
	vnet []byte // VnetHdrLen bytes read before the frame, or nil
	off  int    // 1 when iovs[0] is vnet
}

func newIovecChain(o *LinkOptions, alloc Allocator) *iovecChain {
	// Cover one byte more than MaxFrameSize when the shape allows: a
	// frame over the limit then shows up as a longer read rather than
	// as a silent cut (readv has no MSG_TRUNC), and buffers past that
	// point are never allocated.
	nbuf, sum := 0, 0
	for nbuf < len(o.BufferShape) && sum <= o.MaxFrameSize {
		sum += o.BufferShape[nbuf]
		nbuf++
	}
	c := &iovecChain{alloc: alloc, shape: o.BufferShape[:nbuf], bufs: make([]Buffer, nbuf)}
	if o.VnetHdr {
		c.vnet = make([]byte, VnetHdrLen)
		c.off = 1
	}
	c.iovs = make([]unix.Iovec, c.off+nbuf)
	if c.vnet != nil {
		c.iovs[0] = rawfile.IovecFromBytes(c.vnet)
	}
	return c
}

// refill allocates the buffers the last frame took.
func (c *iovecChain) refill() error {
	for i := range c.bufs {
		if c.bufs[i].Data != nil {
			break
		}
		size := c.shape[i]
		b := c.alloc.Alloc(size)
		if len(b.Data) < size {
			c.alloc.Free(b)
			return fmt.Errorf("dataplane: Allocator.Alloc(%d) returned %d bytes", size, len(b.Data))
		}
		b.Data = b.Data[:size]
		c.bufs[i] = b
		c.iovs[c.off+i] = rawfile.IovecFromBytes(b.Data)
	}
	return nil
}

// take moves the buffers holding a frame's n bytes to dst, the last one cut
// to the frame's end.
func (c *iovecChain) take(n int, dst []Buffer) []Buffer {
	for i := 0; i < len(c.bufs) && n > 0; i++ {
		b := c.bufs[i]
		if len(b.Data) > n {
			b.Data = b.Data[:n]
		}
		n -= len(b.Data)
		dst = append(dst, b)
		c.bufs[i] = Buffer{}
	}
	return dst
}

// release frees every buffer the chain still holds.
func (c *iovecChain) release() {
	for i, b := range c.bufs {
		if b.Data != nil {
			c.alloc.Free(b)
			c.bufs[i] = Buffer{}
		}
	}
}

// minFrameLen is the shortest frame passed on: an Ethernet header, or for IP
// packets one byte, the version nibble that says what the rest is (the
// consumer checks the rest).
func minFrameLen(o *LinkOptions) int {
	if o.EthernetHeader {
		return 14
	}
	return 1
}

// acceptFrame checks a read of n bytes (virtio_net_hdr included) into c and,
// if it is a good frame, fills f with it and takes its buffers, using data as
// the storage of f.Data. A bad frame is counted in RxErrors and its buffers
// stay in c for the next read.
func acceptFrame(ch *rxChannel, c *iovecChain, n int, truncated bool, f *Frame, data []Buffer) bool {
	o := ch.opts
	if o.VnetHdr {
		n -= VnetHdrLen
	}
	if truncated || n < minFrameLen(o) || n > o.MaxFrameSize {
		ch.counters.RxErrors.Add(1)
		return false
	}
	*f = Frame{}
	if o.VnetHdr {
		h, err := ParseVnetHdr(c.vnet)
		if err == nil {
			// The first buffer holds the frame's start; the chain
			// has not handed it over yet.
			head := c.bufs[0].Data[:min(n, len(c.bufs[0].Data))]
			err = h.ValidateFrame(head, n, o.EthernetHeader)
		}
		if err != nil {
			ch.counters.RxErrors.Add(1)
			return false
		}
		f.Vnet, f.HasVnet = h, true
	}
	f.Data = c.take(n, data[:0])
	f.Len = n
	return true
}

// waitReadable blocks until ch.fd is readable (or in error) or stopFD fires.
func waitReadable(ch *rxChannel) error {
	for {
		r, e := rawfile.Wait(ch.fd, unix.POLLIN, ch.stopFD, -1)
		switch {
		case e == unix.EINTR:
			continue
		case e != 0:
			return fmt.Errorf("dataplane: wait for frames (channel %d, fd %d): %w", ch.index, ch.fd, os.NewSyscallError("poll", e))
		case r == rawfile.Stopped:
			return ErrClosed
		}
		return nil
	}
}

// transientReadErr says whether a read error leaves the descriptor usable.
// ENETDOWN is how a packet socket reports, once, that its device went down
// (net/packet/af_packet.c packet_notifier); reading on resumes when it is up.
func transientReadErr(e unix.Errno) bool {
	return e == unix.EINTR || e == unix.ENETDOWN
}

// readvDispatcher reads one frame per readv(2): any descriptor, TUN included.
// Single goroutine; not safe for concurrent use.
//
// readv cannot report truncation (there is no MSG_TRUNC), so a frame longer
// than the chain is cut silently when MaxFrameSize equals the BufferShape
// total (the default, which no IP packet exceeds); with a smaller
// MaxFrameSize the chain covers one byte more and a longer frame counts as
// an error.
type readvDispatcher struct {
	ch    *rxChannel
	chain *iovecChain
	// eofOnZero: a zero-byte read means end of file (pipes, stream and
	// seqpacket sockets, TUN), not an empty datagram.
	eofOnZero bool
	frames    [1]Frame
	data      []Buffer // storage of frames[0].Data
}

func newReadvDispatcher(ch *rxChannel, eofOnZero bool) *readvDispatcher {
	c := newIovecChain(ch.opts, ch.alloc)
	return &readvDispatcher{ch: ch, chain: c, eofOnZero: eofOnZero, data: make([]Buffer, 0, len(c.bufs))}
}

func (d *readvDispatcher) dispatch() error {
	if err := d.chain.refill(); err != nil {
		return err
	}
	for {
		n, e := rawfile.Readv(d.ch.fd, d.chain.iovs)
		switch {
		case e == unix.EAGAIN:
			if err := waitReadable(d.ch); err != nil {
				return err
			}
			continue
		case transientReadErr(e):
			return nil
		case e != 0:
			return fmt.Errorf("dataplane: read frame (channel %d, fd %d): %w", d.ch.index, d.ch.fd, os.NewSyscallError("readv", e))
		case n == 0 && d.eofOnZero:
			return fmt.Errorf("dataplane: read frame (channel %d, fd %d): %w", d.ch.index, d.ch.fd, io.EOF)
		}
		if acceptFrame(d.ch, d.chain, n, false, &d.frames[0], d.data) {
			d.ch.deliver(d.frames[:])
			clear(d.data[:cap(d.data)])
			d.frames[0] = Frame{}
		}
		return nil
	}
}

func (d *readvDispatcher) release() { d.chain.release() }
