// Package stackrx turns received frames into gVisor packet buffers: the one
// place where a link endpoint's inbound offloads meet the netstack. The
// fdbased endpoint uses it, and an AF_XDP endpoint can: it needs frames read
// into netstack views (ViewAllocator) and a Sink that hands a packet to the
// stack.
//
// # Checksums
//
// gVisor's NIC overwrites pkt.RXChecksumValidated with the link endpoint's
// CapabilityRXChecksumOffload on every packet (stack/nic.go,
// DeliverNetworkPacket), so an endpoint cannot tell the stack per packet
// which checksums the kernel vouched for. Trust says who verifies instead:
//
//   - TrustAll (Options.RXChecksumOffload): nobody; the stack skips every
//     IPv4 header, TCP and UDP checksum, as runsc does on a veth.
//   - VerifyHere: the endpoint advertises the capability and this package
//     verifies, once, what the kernel did not vouch for: frames flagged
//     DATA_VALID (checked by the kernel) or NEEDS_CSUM (built on this host,
//     never on a wire; their checksum is partial by design) pass as they
//     are, TCP segments are verified by GRO as it coalesces them, and the
//     rest have their IPv4 header and TCP or UDP checksum checked here. A
//     bad one is dropped and counted in RxErrors. So no checksum is
//     verified twice and a partial one is never rejected. What cannot be
//     checked per frame is passed on unverified, and the stack does not
//     check it either: the transport checksum of IP fragments (it covers
//     the reassembled datagram) and of packets behind IPv6 routing or
//     other extension headers. ICMP and IGMP are unaffected: the stack
//     verifies them whatever the capability.
//   - StackVerifies: no capability; the stack verifies everything. Only
//     usable without a virtio_net_hdr and without GRO: a partial checksum
//     would be rejected.
//
// # GRO
//
// With Options.GRO, each delivering goroutine (dataplane.Frame.Processor)
// has its own gro.GRO behind a mutex that only its goroutine and its flush
// timer take. A Deliver call enqueues its frames and flushes, so with no
// flush interval nothing is held between calls; with one, flows are held
// (copied by GRO) until their interval passes, and a timer flushes them if
// no frame comes. Frames GRO emits as they are keep their views (no copy);
// coalesced packets are copied once into a fresh view. Frames GRO cannot
// take whole (spread over several buffers: a readv chain, a super-frame)
// are delivered directly after everything enqueued before them is flushed,
// which keeps each flow in order.
//
// # USO
//
// A UDP_L4 super-datagram (virtio gso_type UDP_L4, which a veth passes
// whole from a socket using UDP_SEGMENT, and a TUN with USO offloads hands
// over) is split into its datagrams before the stack, which has no UDP GRO
// and would otherwise take it for one oversized datagram.
package stackrx

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/gro"
	"github.com/sluicenet/sluice/gso"
)

// ViewAllocator reads frames into netstack views, so that a delivered frame
// becomes a packet buffer without a copy. The Receiver requires it: each
// Buffer.Ref is the *buffer.View behind Data.
type ViewAllocator struct{}

// Alloc returns a view of size bytes.
func (ViewAllocator) Alloc(size int) dataplane.Buffer {
	v := buffer.NewViewSize(size)
	return dataplane.Buffer{Data: v.AsSlice(), Ref: v}
}

// Free releases the view.
func (ViewAllocator) Free(b dataplane.Buffer) {
	if v, ok := b.Ref.(*buffer.View); ok {
		v.Release()
	}
}

// Trust says who verifies inbound checksums; see the package documentation.
type Trust uint8

const (
	StackVerifies Trust = iota
	VerifyHere
	TrustAll
)

func (t Trust) String() string {
	switch t {
	case StackVerifies:
		return "stack verifies"
	case VerifyHere:
		return "verified once, here"
	case TrustAll:
		return "trusted"
	}
	return fmt.Sprintf("Trust(%d)", uint8(t))
}

// AdvertiseRXChecksumOffload reports whether an endpoint using t must
// advertise stack.CapabilityRXChecksumOffload.
func (t Trust) AdvertiseRXChecksumOffload() bool { return t != StackVerifies }

// Sink hands a packet to the stack: it parses the link header, checks the
// destination and calls the stack's DeliverNetworkPacket. It is called on
// the delivering goroutine, or on a GRO flush timer's; pkt is released after
// it returns, so it must IncRef to keep it.
type Sink func(pkt *stack.PacketBuffer)

// Options configure a Receiver.
type Options struct {
	// Ethernet says frames start with a 14-byte Ethernet header.
	Ethernet bool
	// Trust is who verifies checksums.
	Trust Trust
	// GRO coalesces TCP segments before the stack.
	GRO bool
	// GROFlushInterval holds GRO flows across Deliver calls for this long
	// (gro.Options.FlushInterval); zero coalesces within a call only.
	GROFlushInterval time.Duration
	// Deliverers is the number of goroutines that call Deliver, numbered
	// by dataplane.Frame.Processor (dataplane.Link.NumDeliverers).
	Deliverers int
	// Counters receives RxErrors for frames dropped here for a bad
	// checksum or an unsplittable super-datagram. Required.
	Counters *dataplane.Counters
	// Guard, if set, is told which frame of a Deliver call is in hand
	// (dataplane.FaultGuard.Handling), so that a panic while it is turned
	// into a packet, or while the stack takes that packet, costs only that
	// frame; the caller delivers through the guard. A GRO flush timer
	// recovers a panic itself and reports it to the guard.
	Guard *dataplane.FaultGuard
}

// Receiver turns frames into packets for a Sink. Deliver may be called
// concurrently by different deliverers; see the package documentation.
type Receiver struct {
	opts  Options
	sink  Sink
	slots []slot
	// closed is set by Close. It is atomic, not guarded by the slots'
	// mutexes, because Close must not wait for a Deliver that is inside
	// the stack: the stack calls Close (through Attach(nil)) with its own
	// lock held, which that Deliver may be waiting for.
	closed atomic.Bool
}

// slot is one deliverer's state.
type slot struct {
	mu sync.Mutex
	// The fields below are guarded by mu.
	g       *gro.GRO
	batch   []dataplane.Frame // the Deliver call's frames, for aliased output
	taken   []bool            // batch[i]'s buffers went into a packet
	scratch []byte            // contiguous copy of a super-datagram to split
	segs    [][]byte
	views   []*buffer.View
	armed   bool
	due     time.Time
	// timer flushes held flows when no frame comes; set in New (with a
	// flush interval) and never replaced, so Close may stop it without
	// the lock.
	timer *time.Timer
	r     *Receiver
}

// New returns a Receiver handing packets to sink.
func New(opts Options, sink Sink) (*Receiver, error) {
	if opts.Counters == nil {
		return nil, fmt.Errorf("stackrx: Options.Counters is nil")
	}
	if opts.Deliverers < 1 {
		opts.Deliverers = 1
	}
	if opts.Trust == StackVerifies && opts.GRO {
		return nil, fmt.Errorf("stackrx: GRO with Trust %v: GRO output carries checksums it verified or that are partial, which the stack would verify again or reject", opts.Trust)
	}
	r := &Receiver{opts: opts, sink: sink, slots: make([]slot, opts.Deliverers)}
	for i := range r.slots {
		s := &r.slots[i]
		s.r = r
		if opts.GRO {
			g, err := gro.New(gro.Options{
				Ethernet:      opts.Ethernet,
				FlushInterval: opts.GROFlushInterval,
				// The stack does not verify what this package
				// hands it (Trust is not StackVerifies), so the
				// coalesced checksum can stay partial, as the
				// kernel leaves it (tcp4_gro_complete).
				PartialChecksum: true,
			})
			if err != nil {
				return nil, fmt.Errorf("stackrx: %w", err)
			}
			s.g = g
			if opts.GROFlushInterval > 0 {
				s.timer = time.AfterFunc(time.Hour, s.fire)
				s.timer.Stop()
			}
		}
	}
	return r, nil
}

// GROStats sums the GRO counters of every deliverer.
func (r *Receiver) GROStats() gro.Stats {
	var t gro.Stats
	for i := range r.slots {
		if g := r.slots[i].g; g != nil {
			s := g.Stats()
			for j := range s.Frames {
				t.Frames[j] += s.Frames[j]
			}
			t.Packets += s.Packets
			t.Coalesced += s.Coalesced
		}
	}
	return t
}

// Close stops the flush timers; flows GRO still holds are dropped with it
// (their frames were counted as received; they are lost like frames left in
// a socket buffer). It does not wait for Deliver calls in progress; later
// ones free their frames. A timer flush already running may still hand a
// packet to the sink.
func (r *Receiver) Close() {
	r.closed.Store(true)
	for i := range r.slots {
		if t := r.slots[i].timer; t != nil {
			t.Stop()
		}
	}
}

// Deliver implements dataplane.Deliverer. The frames' buffers must come from
// ViewAllocator; they belong to the Receiver from now on.
func (r *Receiver) Deliver(frames []dataplane.Frame) {
	if len(frames) == 0 {
		return
	}
	g := r.opts.Guard
	if !r.opts.GRO {
		for i := range frames {
			g.Handling(frames[i].Processor, i)
			r.deliverFrame(&frames[i], nil)
		}
		return
	}
	p := frames[0].Processor
	if p < 0 || p >= len(r.slots) {
		p = 0 // a Link never does this; stay safe, the mutex makes it correct
	}
	s := &r.slots[p]
	s.mu.Lock()
	done := false
	defer func() {
		if !done {
			// A fault is unwinding through here (the guard
			// contains it above). GRO may hold frames of this call
			// by their index in it, which the next call would
			// mistake for its own: drop them, with the flows they
			// were part of.
			s.g.FlushAll(func([]byte, gro.Meta) {})
			s.batch = nil
		}
		s.mu.Unlock()
	}()
	if r.closed.Load() {
		for i := range frames {
			freeFrame(&frames[i])
		}
		done = true
		return
	}
	s.batch = frames
	if cap(s.taken) < len(frames) {
		s.taken = make([]bool, len(frames))
	}
	s.taken = s.taken[:len(frames)]
	clear(s.taken)
	for i := range frames {
		f := &frames[i]
		if len(f.Data) != 1 || isUSO(f) {
			// GRO needs contiguous bytes, and splitting must come
			// first: flush what came before, in order, then this.
			s.g.FlushAll(s.emit)
			g.Handling(p, i)
			r.deliverFrame(f, s)
			s.taken[i] = true
			continue
		}
		g.Handling(p, i)
		s.g.Enqueue(f.Data[0].Data, gro.Input{Csum: r.groCsum(f), Tag: uint64(i)})
	}
	s.g.Flush(s.emit)
	// Whatever GRO did not emit as it was is merged into an emitted packet
	// or copied into a flow it holds: its views are free.
	for i := range frames {
		if !s.taken[i] {
			freeFrame(&frames[i])
		}
	}
	s.batch = nil
	s.arm()
	done = true
}

// arm makes sure the slot's timer fires when GRO's oldest held flow is
// due. s.mu is held.
func (s *slot) arm() {
	if s.timer == nil || s.r.closed.Load() {
		return
	}
	due, ok := s.g.Deadline()
	if !ok || (s.armed && !due.Before(s.due)) {
		return
	}
	s.armed, s.due = true, due
	s.timer.Reset(max(time.Until(due), 0))
}

// fire is the flush timer: it emits the flows whose interval has passed. It
// runs on a goroutine of its own, outside the guarded delivery, so it
// contains its own panics: the flows it was emitting are lost.
func (s *slot) fire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer func() {
		if v := recover(); v != nil {
			if s.r.opts.Guard == nil {
				panic(v)
			}
			s.r.opts.Guard.Recovered("gro flush timer", v, nil, nil)
		}
	}()
	s.armed = false
	if s.r.closed.Load() {
		return
	}
	s.g.Flush(s.emit)
	s.arm()
}

// groCsum says what GRO may assume about f's TCP checksum.
func (r *Receiver) groCsum(f *dataplane.Frame) gro.RxCsum {
	switch {
	case r.opts.Trust == TrustAll:
		return gro.CsumValid
	case f.HasVnet && f.Vnet.Flags&dataplane.VnetFlagNeedsCsum != 0:
		return gro.CsumPartial
	case f.HasVnet && f.Vnet.Flags&dataplane.VnetFlagDataValid != 0:
		return gro.CsumValid
	}
	return gro.CsumUnknown
}

// emit is GRO's emit function for slot s. s.mu is held.
func (s *slot) emit(out []byte, m gro.Meta) {
	r := s.r
	var payload buffer.Buffer
	var f *dataplane.Frame
	if s.batch != nil {
		// The frame in hand, for a fault: the one GRO passes on as it
		// was, or none when it merged several.
		i := -1
		if m.Aliased {
			i = int(m.Tag)
		}
		r.opts.Guard.Handling(s.batch[0].Processor, i)
	}
	if m.Aliased {
		if s.batch == nil || m.Tag >= uint64(len(s.batch)) {
			// Only frames of the current call are aliased; a timer
			// flush emits copies. Never reached.
			return
		}
		f = &s.batch[m.Tag]
		s.taken[m.Tag] = true
		b := f.Data[0]
		v := b.Ref.(*buffer.View)
		v.CapLength(len(out))
		payload = buffer.MakeWithView(v)
	} else {
		payload = buffer.MakeWithView(buffer.NewViewWithData(out))
	}
	switch {
	case m.Outcome == gro.BadChecksum:
		payload.Release()
		r.opts.Counters.RxErrors.Add(1)
		return
	case m.Segments == 0 && f != nil && r.opts.Trust == VerifyHere && !vouched(f):
		// Not a TCP segment GRO checked: check it here.
		if verifyFrame(f.Data, len(out), r.opts.Ethernet) == badChecksum {
			payload.Release()
			r.opts.Counters.RxErrors.Add(1)
			return
		}
	}
	r.toSink(payload)
}

// isUSO reports whether f is a UDP_L4 super-datagram.
func isUSO(f *dataplane.Frame) bool {
	return f.HasVnet && f.Vnet.GSOType&^dataplane.VnetGSOECN == dataplane.VnetGSOUDPL4
}

// vouched reports whether the kernel vouched for f's checksum.
func vouched(f *dataplane.Frame) bool {
	return f.HasVnet && f.Vnet.Flags&(dataplane.VnetFlagNeedsCsum|dataplane.VnetFlagDataValid) != 0
}

// deliverFrame hands f to the sink on its own, without GRO: verifying it
// (VerifyHere) or splitting it (a UDP_L4 super-datagram) first. s is the
// caller's slot, for scratch memory, or nil.
func (r *Receiver) deliverFrame(f *dataplane.Frame, s *slot) {
	if isUSO(f) {
		r.splitUSO(f, s)
		return
	}
	if r.opts.Trust == VerifyHere && !vouched(f) && verifyFrame(f.Data, f.Len, r.opts.Ethernet) == badChecksum {
		freeFrame(f)
		r.opts.Counters.RxErrors.Add(1)
		return
	}
	var payload buffer.Buffer
	for _, b := range f.Data {
		v := b.Ref.(*buffer.View)
		v.CapLength(len(b.Data))
		payload.Append(v)
	}
	r.toSink(payload)
}

// splitUSO cuts a UDP_L4 super-datagram into its datagrams (gso_size
// payload bytes each) and delivers them. The kernel marked it NEEDS_CSUM
// (virtio_net_hdr_to_skb insists on it for UDP_L4) and built it on this
// host, so each datagram's checksum is left partial: the stack does not
// verify it (Trust is not StackVerifies whenever frames carry a
// virtio_net_hdr).
func (r *Receiver) splitUSO(f *dataplane.Frame, s *slot) {
	var local slot
	if s == nil {
		s = &local
	}
	pkt := f.Data[0].Data
	if len(f.Data) > 1 {
		if cap(s.scratch) < f.Len {
			s.scratch = make([]byte, f.Len)
		}
		pkt = s.scratch[:f.Len]
		f.CopyTo(pkt)
	}
	o := gso.Options{MSS: int(f.Vnet.GSOSize), Ethernet: r.opts.Ethernet, PartialChecksum: true}
	info, err := gso.Inspect(pkt, o)
	if err != nil || info.Proto != 17 {
		freeFrame(f)
		r.opts.Counters.RxErrors.Add(1)
		return
	}
	if cap(s.segs) < info.Segments {
		s.segs = make([][]byte, info.Segments)
	}
	segs := s.segs[:info.Segments]
	if cap(s.views) < info.Segments {
		s.views = make([]*buffer.View, info.Segments)
	}
	views := s.views[:info.Segments]
	for i := range segs {
		views[i] = buffer.NewViewSize(info.MaxFrameLen(o.MSS))
		segs[i] = views[i].AsSlice()
	}
	n, err := gso.Segment(segs, pkt, o)
	freeFrame(f)
	if err != nil {
		for _, v := range views {
			v.Release()
		}
		r.opts.Counters.RxErrors.Add(1)
		return
	}
	for i := range n {
		views[i].CapLength(len(segs[i]))
		r.toSink(buffer.MakeWithView(views[i]))
	}
	clear(segs)
	clear(views)
}

// toSink wraps payload in a packet buffer and hands it over.
func (r *Receiver) toSink(payload buffer.Buffer) {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: payload})
	// Informational: the NIC overwrites it from the capability (see the
	// package documentation), which says the same unless Trust is
	// StackVerifies.
	pkt.RXChecksumValidated = r.opts.Trust != StackVerifies
	r.sink(pkt)
	pkt.DecRef()
}

// freeFrame releases f's views.
func freeFrame(f *dataplane.Frame) {
	for _, b := range f.Data {
		ViewAllocator{}.Free(b)
	}
}
