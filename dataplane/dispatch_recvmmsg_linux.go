//go:build linux

package dataplane

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/rawfile"
)

// recvmmsgDispatcher reads up to RecvBatchSize frames per recvmmsg(2), each
// into an iovecChain of its own. Single goroutine; not safe for concurrent
// use.
type recvmmsgDispatcher struct {
	ch        *rxChannel
	chains    []*iovecChain
	msgs      []unix.Mmsghdr
	frames    []Frame
	data      [][]Buffer // data[k] is the storage of the Frame.Data of slot k
	eofOnZero bool       // see readvDispatcher
}

func newRecvMMsgDispatcher(ch *rxChannel, eofOnZero bool) *recvmmsgDispatcher {
	n := ch.opts.RecvBatchSize
	d := &recvmmsgDispatcher{
		ch:        ch,
		chains:    make([]*iovecChain, n),
		msgs:      make([]unix.Mmsghdr, n),
		frames:    make([]Frame, 0, n),
		data:      make([][]Buffer, n),
		eofOnZero: eofOnZero,
	}
	for k := range d.chains {
		d.chains[k] = newIovecChain(ch.opts, ch.alloc)
		d.data[k] = make([]Buffer, 0, len(d.chains[k].bufs))
	}
	return d
}

func (d *recvmmsgDispatcher) dispatch() error {
	for k, c := range d.chains {
		if err := c.refill(); err != nil {
			return err
		}
		d.msgs[k] = unix.Mmsghdr{}
		d.msgs[k].Hdr.Iov = &c.iovs[0]
		d.msgs[k].Hdr.SetIovlen(len(c.iovs))
	}
	n, err := d.recv()
	if err != nil || n == 0 {
		return err
	}
	frames := d.frames[:0]
	eof := false
	for k := range n {
		m := &d.msgs[k]
		if m.Len == 0 && d.eofOnZero {
			eof = true
			break
		}
		frames = append(frames, Frame{})
		if !acceptFrame(d.ch, d.chains[k], int(m.Len), m.Hdr.Flags&unix.MSG_TRUNC != 0, &frames[len(frames)-1], d.data[k]) {
			frames = frames[:len(frames)-1]
		}
	}
	if len(frames) > 0 {
		d.ch.deliver(frames)
		// Drop the references to delivered memory, keep the arrays.
		clear(frames)
		for k := range n {
			clear(d.data[k][:cap(d.data[k])])
		}
	}
	if eof {
		return fmt.Errorf("dataplane: read frames (channel %d, fd %d): %w", d.ch.index, d.ch.fd, io.EOF)
	}
	return nil
}

// recv waits for and reads one batch; 0 frames and no error means a
// transient error to read past.
func (d *recvmmsgDispatcher) recv() (int, error) {
	for {
		n, e := rawfile.RecvMMsg(d.ch.fd, d.msgs, 0)
		switch {
		case e == 0:
			return n, nil
		case e == unix.EAGAIN:
			if err := waitReadable(d.ch); err != nil {
				return 0, err
			}
		case transientReadErr(e):
			return 0, nil
		default:
			return 0, fmt.Errorf("dataplane: read frames (channel %d, fd %d): %w", d.ch.index, d.ch.fd, os.NewSyscallError("recvmmsg", e))
		}
	}
}

func (d *recvmmsgDispatcher) release() {
	for _, c := range d.chains {
		c.release()
	}
}
