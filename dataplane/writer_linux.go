//go:build linux

package dataplane

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/rawfile"
)

// writeTimeout bounds how long one WriteBatch waits, in total, for sockets
// with full send buffers. Past it the remaining frames are dropped: a link
// whose peer stopped reading must not stall its callers (a netstack's
// goroutines) for ever, and TCP above recovers from the drops.
const writeTimeout = time.Second

// txQueue is a channel's writer state. The arrays are allocated once (iovs
// grows to the largest batch seen) and reused, so writing allocates nothing
// per frame.
type txQueue struct {
	mu     sync.Mutex
	fd     int
	socket bool           // sendmmsg, else writev
	msgs   []unix.Mmsghdr // guarded by mu; SendBatchSize entries
	iovs   []unix.Iovec   // guarded by mu
	idx    []int          // guarded by mu; TxBatch indices of the frames in msgs
}

func (t *txQueue) init(fd int, socket bool, batch int) {
	t.fd, t.socket = fd, socket
	t.msgs = make([]unix.Mmsghdr, batch)
	t.idx = make([]int, 0, batch)
	// Four parts per frame (virtio_net_hdr, link, network+transport
	// headers, payload) covers a netstack packet; more grows once.
	t.iovs = make([]unix.Iovec, 4*batch)
}

// writeState is what one WriteBatch call carries across its channels.
type writeState struct {
	deadline time.Time  // zero until the first wait
	expired  bool       // the deadline passed: do not wait any more
	lastErr  unix.Errno // the last error a frame was rejected with
}

// errWriteTimeout marks frames dropped because writeTimeout passed.
var errWriteTimeout = fmt.Errorf("send buffer full for %v: %w", writeTimeout, os.ErrDeadlineExceeded)

// WriteBatch writes the frames of b, each to channel Hash % NumChannels()
// (see TxBatch.Begin), in order within a channel: sendmmsg, SendBatchSize
// frames per call, on sockets; one writev per frame on other descriptors.
// When a send buffer is full it waits for room, at most one second per call
// in total, then drops the rest. A frame the kernel rejects (EMSGSIZE,
// EINVAL...) or that is empty counts as TxErrors and is skipped; frames
// dropped because of the timeout, a qdisc drop (ENOBUFS) or Close count as
// TxDropped. Written frames count in TxPackets and TxBytes (virtio_net_hdr
// excluded).
//
// It returns how many frames were written. The error is non-nil only when
// none was: ErrClosed after Close, otherwise the last reason frames were
// rejected or dropped (they are already counted). It is safe for concurrent
// use; b is only read, and may be reused once WriteBatch returns.
func (l *Link) WriteBatch(b *TxBatch) (int, error) {
	if b == nil || b.Len() == 0 {
		if l.closed.Load() {
			return 0, ErrClosed
		}
		return 0, nil
	}
	if l.closed.Load() {
		l.counters.TxDropped.Add(uint64(b.Len()))
		return 0, ErrClosed
	}
	var w writeState
	written := 0
	var err error
	for i, c := range l.chans {
		n, cerr := c.tx.write(l, b, i, &w)
		written += n
		if cerr != nil {
			err = cerr
		}
	}
	if written > 0 {
		return written, nil
	}
	switch {
	case errors.Is(err, ErrClosed):
		return 0, ErrClosed
	case err != nil:
		return 0, fmt.Errorf("dataplane: write batch (%d frames): %w", b.Len(), err)
	case w.lastErr != 0:
		op := "writev"
		if l.chans[0].tx.socket {
			op = "sendmmsg"
		}
		return 0, fmt.Errorf("dataplane: write batch (%d frames): %w", b.Len(), os.NewSyscallError(op, w.lastErr))
	}
	return 0, fmt.Errorf("dataplane: write batch (%d frames): every frame was empty", b.Len())
}

// write writes the frames of b that belong to channel ci. It returns the
// count written and ErrClosed or errWriteTimeout if it gave up.
func (t *txQueue) write(l *Link, b *TxBatch, ci int, w *writeState) (written int, err error) {
	nch := uint32(len(l.chans))
	mine := func(i int) bool { return nch == 1 || b.frames[i].hash%nch == uint32(ci) }
	t.mu.Lock()
	defer t.mu.Unlock()
	next := 0
	for {
		t.idx = t.idx[:0]
		for ; next < b.Len() && len(t.idx) < cap(t.idx); next++ {
			if mine(next) {
				t.idx = append(t.idx, next)
			}
		}
		if len(t.idx) == 0 {
			return written, nil
		}
		if l.closed.Load() {
			l.counters.TxDropped.Add(uint64(len(t.idx)))
			err = ErrClosed
		} else {
			var n int
			if t.socket {
				n, err = t.sendmmsg(l, b, w)
			} else {
				n, err = t.writev(l, b, w)
			}
			written += n
		}
		if err != nil {
			// The frames of t.idx are counted; whatever this call has
			// not reached yet is dropped too.
			for ; next < b.Len(); next++ {
				if mine(next) {
					l.counters.TxDropped.Add(1)
				}
			}
			return written, err
		}
	}
}

func (t *txQueue) sent(l *Link, length int) {
	if l.opts.VnetHdr {
		length -= VnetHdrLen
	}
	l.counters.TxPackets.Add(1)
	l.counters.TxBytes.Add(uint64(max(length, 0)))
}

func (t *txQueue) rejected(l *Link, e unix.Errno, w *writeState) {
	w.lastErr = e
	if e == unix.ENOBUFS {
		// A qdisc dropped it (NET_XMIT_DROP, net_xmit_errno in
		// include/linux/netdevice.h): congestion, not a bad frame.
		l.counters.TxDropped.Add(1)
		return
	}
	l.counters.TxErrors.Add(1)
}

// sendmmsg writes the frames t.idx names. On error (ErrClosed,
// errWriteTimeout) the frames of t.idx it did not write are counted as
// dropped.
func (t *txQueue) sendmmsg(l *Link, b *TxBatch, w *writeState) (int, error) {
	nparts := 0
	for _, i := range t.idx {
		f := b.frames[i]
		nparts += f.n
	}
	if cap(t.iovs) < nparts {
		t.iovs = make([]unix.Iovec, nparts)
	}
	iovs := t.iovs[:cap(t.iovs)]
	p, k := 0, 0
	for _, i := range t.idx {
		parts, length, _ := b.Frame(i)
		if length == 0 {
			l.counters.TxErrors.Add(1)
			continue
		}
		start := p
		for _, part := range parts {
			iovs[p] = rawfile.IovecFromBytes(part)
			p++
		}
		t.idx[k] = i
		t.msgs[k] = unix.Mmsghdr{}
		t.msgs[k].Hdr.Iov = &iovs[start]
		t.msgs[k].Hdr.SetIovlen(p - start)
		k++
	}
	msgs := t.msgs[:k]
	written, off := 0, 0
	for off < k {
		n, e := rawfile.SendMMsg(t.fd, msgs[off:], 0)
		switch {
		case e == 0 && n > 0:
			for _, i := range t.idx[off : off+n] {
				t.sent(l, b.frames[i].length)
			}
			off += n
			written += n
		case e == unix.EINTR:
		case e == unix.EAGAIN || e == 0:
			if err := t.waitWritable(l, w); err != nil {
				l.counters.TxDropped.Add(uint64(k - off))
				clear(t.msgs[:k])
				return written, err
			}
		default:
			t.rejected(l, e, w)
			off++
		}
	}
	// Drop the references to the caller's memory, keep the arrays.
	clear(t.msgs[:k])
	clear(iovs[:p])
	return written, nil
}

// writev writes the frames t.idx names, one writev each, finishing a frame
// a short write cut (a pipe) so that the stream stays framed.
func (t *txQueue) writev(l *Link, b *TxBatch, w *writeState) (int, error) {
	written := 0
	for j, i := range t.idx {
		parts, length, _ := b.Frame(i)
		if length == 0 {
			l.counters.TxErrors.Add(1)
			continue
		}
		if cap(t.iovs) < len(parts) {
			t.iovs = make([]unix.Iovec, len(parts))
		}
		iovs := t.iovs[:len(parts)]
		for p, part := range parts {
			iovs[p] = rawfile.IovecFromBytes(part)
		}
		done := 0
		for done < length {
			n, e := rawfile.Writev(t.fd, iovs)
			switch {
			case e == 0 && n > 0:
				done += n
				iovs = rawfile.AdvanceIovecs(iovs, n)
				continue
			case e == unix.EINTR:
				continue
			case e == unix.EAGAIN || e == 0:
				if err := t.waitWritable(l, w); err != nil {
					l.counters.TxDropped.Add(uint64(len(t.idx) - j))
					clear(t.iovs[:len(parts)])
					return written, err
				}
				continue
			}
			t.rejected(l, e, w)
			break
		}
		clear(t.iovs[:len(parts)])
		if done == length {
			t.sent(l, length)
			written++
		}
	}
	return written, nil
}

// waitWritable waits for room in the send buffer, within the call's
// deadline, or for Close.
func (t *txQueue) waitWritable(l *Link, w *writeState) error {
	// Under t.mu, closed false means stopFD is still open (see
	// releaseLocked).
	if l.closed.Load() {
		return ErrClosed
	}
	if w.expired {
		return errWriteTimeout
	}
	now := time.Now()
	if w.deadline.IsZero() {
		w.deadline = now.Add(writeTimeout)
	}
	for {
		left := w.deadline.Sub(now)
		if left <= 0 {
			w.expired = true
			return errWriteTimeout
		}
		r, e := rawfile.Wait(t.fd, unix.POLLOUT, l.stopFD, int((left+time.Millisecond-1)/time.Millisecond))
		switch {
		case e == unix.EINTR:
			now = time.Now()
			continue
		case e != 0:
			return fmt.Errorf("wait for send buffer (fd %d): %w", t.fd, os.NewSyscallError("poll", e))
		case r == rawfile.Stopped:
			return ErrClosed
		case r == rawfile.TimedOut:
			w.expired = true
			return errWriteTimeout
		}
		return nil
	}
}
