//go:build linux

package xdp

import (
	"runtime"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/stackrx"
)

// idlePollMs bounds a reader's sleep: the kernel does not wake an AF_XDP
// socket's poll when its device goes away (xsk_poll reports nothing once
// the socket is unbound), so an idle reader looks at the socket's error
// this often to notice.
const idlePollMs = 1000

// read is a queue's reader goroutine: it empties the rx ring in batches,
// and sleeps in poll(2) when the ring is empty.
func (q *queue) read() {
	e := q.ep
	defer e.wg.Done()
	batch := e.socks.opts.BatchSize
	for !e.stopping.Load() {
		if q.sk.WithFrames(batch, q.take) > 0 {
			q.deliver()
			continue
		}
		if q.spin() {
			continue
		}
		revents, stopped, errno := pollRevents(q.sk.fd, unix.POLLIN, e.stopFD, idlePollMs)
		switch {
		case stopped:
			return
		case errno == unix.EINTR:
			continue
		case errno != 0:
			q.fail(errno)
			return
		case revents&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0 || revents == 0:
			// An error condition, or an idle second: is the socket
			// still bound to a device?
			if soErr, err := unix.GetsockoptInt(q.sk.fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || soErr != 0 {
				errno := unix.Errno(soErr)
				if err != nil {
					errno = err.(unix.Errno)
				}
				q.fail(errno)
				return
			}
		}
	}
}

// spin watches the rx ring for up to Options.BusyPoll before the reader
// goes to sleep, and reports whether frames came. A sleeping reader costs
// the kernel a wakeup per batch it delivers (xsk_flush wakes the socket's
// waiters), paid on the CPU that receives, which on veth is the sender's;
// a reader that is still looking costs it nothing.
func (q *queue) spin() bool {
	d := q.ep.socks.opts.BusyPoll
	if d <= 0 {
		return false
	}
	deadline := time.Now().Add(d)
	for i := 0; ; i++ {
		if q.sk.RX.Avail(1) > 0 {
			return true
		}
		if i&15 == 15 {
			if q.ep.stopping.Load() || time.Now().After(deadline) {
				return false
			}
			// Let the stack's goroutines run on this P meanwhile.
			runtime.Gosched()
		}
	}
}

// fail reports a reader stopping on its own, unless the endpoint is being
// closed anyway.
func (q *queue) fail(errno unix.Errno) {
	e := q.ep
	if e.stopping.Load() {
		return
	}
	e.log.Warn("xdp: reader stopped", "queue", q.sk.queue, "err", errno)
	if e.closedF != nil {
		e.closedF(tcpip.TranslateErrno(errno))
	}
}

// take copies a batch of frames out of the UMEM into netstack views; the
// UMEM chunks go back to the kernel when it returns. Frames too short for
// an Ethernet header are counted as errors.
func (q *queue) take(frames [][]byte) {
	c := &q.ep.counters
	for _, f := range frames {
		if len(f) < header.EthernetMinimumSize {
			c.RxErrors.Add(1)
			continue
		}
		b := stackrx.ViewAllocator{}.Alloc(len(f))
		copy(b.Data, f)
		c.RxPackets.Add(1)
		c.RxBytes.Add(uint64(len(f)))
		// The one-buffer Data slices share one backing array per batch,
		// so that taking a frame allocates nothing but the view.
		var data []dataplane.Buffer
		if n := len(q.bufs); n < cap(q.bufs) {
			q.bufs = append(q.bufs, b)
			data = q.bufs[n : n+1 : n+1]
		} else {
			data = []dataplane.Buffer{b}
		}
		q.out = append(q.out, dataplane.Frame{Data: data, Len: len(f), Channel: q.sk.queue, Processor: q.idx})
	}
}

// deliver hands the batch taken to the stack, after the UMEM chunks went
// back to the kernel: the kernel keeps receiving while the stack works.
func (q *queue) deliver() {
	if len(q.out) == 0 {
		return
	}
	// Through the guard: a panic while one frame is handled costs that
	// frame, not the reader (and the process).
	q.ep.guard.Deliver(q.ep, q.out)
	clear(q.out)
	q.out = q.out[:0]
	clear(q.bufs)
	q.bufs = q.bufs[:0]
}

// Deliver implements dataplane.Deliverer, as fdbased.Endpoint does: frames
// whose buffers are netstack views (stackrx.ViewAllocator) become packets
// for the attached stack, through GRO and checksum verification as
// EndpointOptions ask (internal/stackrx). Frames of one call must share
// their Processor, which is how stackrx finds the caller's GRO state.
func (e *Endpoint) Deliver(frames []dataplane.Frame) {
	if e.dispatcher.Load() == nil {
		for i := range frames {
			for _, b := range frames[i].Data {
				stackrx.ViewAllocator{}.Free(b)
			}
		}
		e.counters.RxDropped.Add(uint64(len(frames)))
		return
	}
	e.rx.Deliver(frames)
}

// sink hands one packet to the attached stack (stackrx.Sink): frames not
// for this endpoint's MAC (unicast to another) are dropped.
func (e *Endpoint) sink(pkt *stack.PacketBuffer) {
	box := e.dispatcher.Load()
	if box == nil {
		e.counters.RxDropped.Add(1)
		return
	}
	hdr, ok := pkt.LinkHeader().Consume(header.EthernetMinimumSize)
	if !ok {
		e.counters.RxErrors.Add(1)
		return
	}
	e.mu.RLock()
	addr := e.addr
	e.mu.RUnlock()
	eth := header.Ethernet(hdr)
	if dst := eth.DestinationAddress(); dst != addr && dst[0]&0x01 == 0 {
		return
	}
	pkt.NetworkProtocolNumber = eth.Type()
	box.d.DeliverNetworkPacket(pkt.NetworkProtocolNumber, pkt)
}
