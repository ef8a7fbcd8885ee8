//go:build linux

package xdp

import (
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/sluicenet/sluice/gso"
)

// txWait bounds how long a write waits for send chunks to come back when
// every one is in flight, before it drops what does not fit. In copy mode a
// chunk comes back when the kernel frees the skb it was copied into, which
// behind a veth is when the peer's stack has taken the frame; waiting here
// is the backpressure that keeps TCP out of retransmission timeouts
// (FIELD-NOTES: a writer that tail-drops starves TCP).
const txWait = 10 * time.Millisecond

// WritePackets implements stack.LinkWriter. Packets go to the socket their
// flow hash picks, so a flow always leaves through one queue; each run of
// packets for one socket is copied into send chunks and handed to the
// kernel with one kick. It returns the number of packets written; the rest
// were dropped (counted) because the endpoint is closed or the sockets stayed
// full for txWait.
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	list := pkts.AsSlice()
	if len(list) == 0 {
		return 0, nil
	}
	n := uint32(len(e.queues))
	if n == 1 {
		return e.queues[0].write(list)
	}
	written := 0
	var err tcpip.Error
	for i := 0; i < len(list); {
		qi := list[i].Hash % n
		j := i + 1
		for j < len(list) && list[j].Hash%n == qi {
			j++
		}
		k, terr := e.queues[qi].write(list[i:j])
		written += k
		if terr != nil {
			err = terr
			if _, closed := terr.(*tcpip.ErrClosedForSend); closed {
				return written, err
			}
		}
		i = j
	}
	return written, err
}

// framesFor returns how many frames pkt becomes: its GSO segments, or one.
func framesFor(pkt *stack.PacketBuffer) int {
	g := pkt.GSOOptions
	if (g.Type == stack.GSOTCPv4 || g.Type == stack.GSOTCPv6) && g.MSS > 0 {
		if d := pkt.Data().Size(); d > int(g.MSS) {
			return (d + int(g.MSS) - 1) / int(g.MSS)
		}
	}
	return 1
}

// write sends list through q's socket, under q's lock.
func (q *queue) write(list []*stack.PacketBuffer) (int, tcpip.Error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	c := &q.ep.counters
	if q.closed {
		c.TxDropped.Add(uint64(len(list)))
		return 0, &tcpip.ErrClosedForSend{}
	}
	sk := q.sk
	// The most frames one packet may need: more could never be had at
	// once, so such a packet is refused rather than waited for.
	maxFrames := min(int(sk.TX.Size()), sk.txPool.Len())
	done := 0 // packets written or refused
	written := 0
	var deadline time.Time
	var err tcpip.Error
	for done < len(list) {
		need := 0
		for _, p := range list[done:] {
			need += framesFor(p)
		}
		got := sk.txAcquire(need)
		start := done
		lens := q.lens[:0]
		for done < len(list) && got > 0 {
			pkt := list[done]
			nf := framesFor(pkt)
			if nf > maxFrames {
				c.TxErrors.Add(1)
				done++
				continue
			}
			if len(lens)+nf > got {
				break
			}
			k, ok := q.encode(pkt, nf, len(lens), &lens)
			done++
			if !ok {
				c.TxErrors.Add(1)
				continue
			}
			written++
			c.TxPackets.Add(uint64(k))
		}
		for _, l := range lens {
			c.TxBytes.Add(uint64(l))
		}
		q.lens = lens
		if kerr := sk.txCommit(lens); kerr != nil {
			c.TxErrors.Add(1)
			err = &tcpip.ErrAborted{}
		}
		if done > start {
			deadline = time.Time{}
			continue
		}
		// No room for the next packet (no slot at all, or fewer than its
		// segments): wait for completions, for at most txWait.
		if deadline.IsZero() {
			deadline = time.Now().Add(txWait)
		} else if time.Now().After(deadline) {
			break
		}
		q.waitRoom()
	}
	if sk.TX.Pending() > 0 {
		q.armReflush()
	}
	if rest := len(list) - done; rest > 0 {
		c.TxDropped.Add(uint64(rest))
		if err == nil {
			err = &tcpip.ErrWouldBlock{}
		}
	}
	return written, err
}

// reflushDelay is how long frames the kernel did not take from the tx ring
// (a device queue that was full, EBUSY) wait before the endpoint kicks
// again on its own. Without it they would wait for the next write, which
// for the last segment of a burst may be a retransmission timeout away: in
// copy mode nothing but a system call makes the kernel look at the ring.
const reflushDelay = 200 * time.Microsecond

// armReflush makes sure a kick follows reflushDelay from now. q.mu is
// held.
func (q *queue) armReflush() {
	if q.reflushArmed || q.closed {
		return
	}
	q.reflushArmed = true
	if q.reflush == nil {
		q.reflush = time.AfterFunc(reflushDelay, q.reflushNow)
		return
	}
	q.reflush.Reset(reflushDelay)
}

// reflushNow is the reflush timer: it kicks again, and again later if
// frames are still left.
func (q *queue) reflushNow() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.reflushArmed = false
	if q.closed {
		return
	}
	if err := q.sk.flush(); err != nil {
		q.ep.counters.TxErrors.Add(1)
		return
	}
	q.sk.reclaimCompletions()
	if q.sk.TX.Pending() > 0 {
		q.armReflush()
	}
}

// waitRoom pushes out what is in the tx ring, gives the kernel a moment,
// and takes back completed chunks.
func (q *queue) waitRoom() {
	_ = q.sk.flush()
	time.Sleep(20 * time.Microsecond)
	q.sk.reclaimCompletions()
}

// encode writes pkt into the acquired slots from slot on, nf of them, and
// appends each frame's length to lens. It returns the number of frames and
// false if the packet was malformed or too long (nothing appended).
func (q *queue) encode(pkt *stack.PacketBuffer, nf, slot int, lens *[]int) (int, bool) {
	sk := q.sk
	g := pkt.GSOOptions
	if nf == 1 {
		buf := sk.txFrame(slot)
		n, ok := copyPacket(buf, pkt)
		if !ok {
			return 0, false
		}
		if g.NeedsCsum && g.Type != stack.GSONone {
			// Host GSO: TCP left its checksum partial (the pseudo-header
			// sum) for the device to finish, on every segment, short ones
			// included.
			start := len(pkt.LinkHeader().Slice()) + len(pkt.NetworkHeader().Slice())
			if gso.CompleteChecksum(buf[:n], start, int(g.CsumOffset)) != nil {
				return 0, false
			}
		}
		*lens = append(*lens, n)
		return 1, true
	}
	// A GSO segment: made contiguous, then cut into frames straight into
	// the send chunks, each with its headers fixed and its checksum
	// computed in full (there is no checksum offload to leave it to).
	size := pkt.Size()
	if cap(q.flat) < size {
		q.flat = make([]byte, size, max(size, 64<<10+256))
	}
	flat := q.flat[:size]
	if n, ok := copyPacket(flat, pkt); !ok || n != size {
		return 0, false
	}
	segs := q.segs[:0]
	for i := 0; i < nf; i++ {
		segs = append(segs, sk.txFrame(slot + i)[:0])
	}
	q.segs = segs
	k, err := gso.Segment(segs, flat, gso.Options{MSS: int(g.MSS), Ethernet: true})
	if err != nil || k > nf {
		return 0, false
	}
	for _, s := range segs[:k] {
		*lens = append(*lens, len(s))
	}
	return k, true
}

// copyPacket copies pkt's bytes (headers and payload) into dst and returns
// their number; false if they do not fit.
func copyPacket(dst []byte, pkt *stack.PacketBuffer) (int, bool) {
	if pkt.Size() > len(dst) {
		return 0, false
	}
	n := 0
	views, off := pkt.AsViewList()
	for v := views.Front(); v != nil; v = v.Next() {
		s := v.AsSlice()
		if off >= len(s) {
			off -= len(s)
			continue
		}
		n += copy(dst[n:], s[off:])
		off = 0
	}
	return n, true
}
