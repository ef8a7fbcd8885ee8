//go:build linux

package xdp

import (
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/gro"
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

// take copies a batch of frames out of the UMEM into netstack views (the
// UMEM chunks go back to the kernel when it returns), through GRO when it
// is on. Frames too short for an Ethernet header are counted as errors.
func (q *queue) take(frames [][]byte) {
	c := &q.ep.counters
	if q.gro == nil {
		for _, f := range frames {
			if len(f) < header.EthernetMinimumSize {
				c.RxErrors.Add(1)
				continue
			}
			q.out = append(q.out, q.frame(f, dataplane.VnetHdr{}, false))
		}
		return
	}
	in := gro.Input{Csum: gro.CsumUnknown}
	if q.ep.rxValid {
		in.Csum = gro.CsumValid
	}
	for i, f := range frames {
		if len(f) < header.EthernetMinimumSize {
			c.RxErrors.Add(1)
			continue
		}
		in.Tag = uint64(i)
		q.gro.Enqueue(f, in)
	}
	q.gro.Flush(func(out []byte, m gro.Meta) {
		q.out = append(q.out, q.frame(out, m.Vnet, m.Segments > 0))
	})
}

// frame copies b into a fresh view and describes it as a dataplane.Frame,
// the shape fdbased's Deliver takes.
func (q *queue) frame(b []byte, vnet dataplane.VnetHdr, hasVnet bool) dataplane.Frame {
	v := buffer.NewViewSize(len(b))
	copy(v.AsSlice(), b)
	c := &q.ep.counters
	c.RxPackets.Add(1)
	c.RxBytes.Add(uint64(len(b)))
	// The one-buffer Data slices share one backing array per batch, so
	// that taking a frame allocates nothing but the view.
	var data []dataplane.Buffer
	if n := len(q.bufs); n < cap(q.bufs) {
		q.bufs = append(q.bufs, dataplane.Buffer{Data: v.AsSlice(), Ref: v})
		data = q.bufs[n : n+1 : n+1]
	} else {
		data = []dataplane.Buffer{{Data: v.AsSlice(), Ref: v}}
	}
	return dataplane.Frame{
		Data:    data,
		Len:     len(b),
		Vnet:    vnet,
		HasVnet: hasVnet,
		Channel: q.sk.queue,
	}
}

// deliver hands the batch taken to the stack, after the UMEM chunks went
// back to the kernel: the kernel keeps receiving while the stack works.
func (q *queue) deliver() {
	if len(q.out) == 0 {
		return
	}
	q.ep.Deliver(q.out)
	clear(q.out)
	q.out = q.out[:0]
	clear(q.bufs)
	q.bufs = q.bufs[:0]
}

// Deliver implements dataplane.Deliverer, as fdbased.Endpoint does: it
// turns frames whose buffers are netstack views into packet buffers and
// hands them to the attached stack. Frames not for this endpoint's MAC
// (unicast to another) are dropped.
func (e *Endpoint) Deliver(frames []dataplane.Frame) {
	box := e.dispatcher.Load()
	if box == nil {
		for i := range frames {
			releaseFrame(&frames[i])
		}
		e.counters.RxDropped.Add(uint64(len(frames)))
		return
	}
	e.mu.RLock()
	addr := e.addr
	e.mu.RUnlock()
	for i := range frames {
		f := &frames[i]
		var payload buffer.Buffer
		for _, b := range f.Data {
			v := b.Ref.(*buffer.View)
			v.CapLength(len(b.Data))
			payload.Append(v)
		}
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: payload})
		hdr, ok := pkt.LinkHeader().Consume(header.EthernetMinimumSize)
		if !ok {
			e.counters.RxErrors.Add(1)
			pkt.DecRef()
			continue
		}
		eth := header.Ethernet(hdr)
		if dst := eth.DestinationAddress(); dst != addr && dst[0]&0x01 == 0 {
			pkt.DecRef()
			continue
		}
		proto := eth.Type()
		pkt.NetworkProtocolNumber = proto
		// DATA_VALID from GRO means it checked (or computed) the
		// checksum; NEEDS_CSUM that it kept a partial one on purpose.
		pkt.RXChecksumValidated = e.rxValid ||
			(f.HasVnet && f.Vnet.Flags&(dataplane.VnetFlagNeedsCsum|dataplane.VnetFlagDataValid) != 0)
		box.d.DeliverNetworkPacket(proto, pkt)
		pkt.DecRef()
	}
}

func releaseFrame(f *dataplane.Frame) {
	for _, b := range f.Data {
		if v, ok := b.Ref.(*buffer.View); ok {
			v.Release()
		}
	}
}
