package bridge

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/dataplane"
)

// Verdict is what happens to a frame.
type Verdict uint8

const (
	// Pass forwards the frame.
	Pass Verdict = iota
	// Drop discards it silently.
	Drop
	// Refuse discards it and answers its sender: a RST for TCP, an ICMP
	// or ICMPv6 port unreachable for UDP (nothing for other frames).
	Refuse
)

// Side is one device of the bridge.
type Side struct {
	// FDs are AF_PACKET sockets bound to the device, opened with
	// PACKET_VNET_HDR (dataplane.SocketOptions.VnetHdr), one channel
	// each; several must share one fanout group. They are borrowed: the
	// bridge does not close them, and they must stay open until Wait
	// returns.
	FDs []int
	// Name names the side in errors and logs.
	Name string
}

// Options configure a Bridge. The zero value of each field means its
// default.
type Options struct {
	// A is the sandbox's side (its frames are Egress), B the uplink's.
	A, B Side
	// Mode is the dispatch mode of both sides (the zero value is readv).
	// recvmmsg and readv forward alike; mmap's TPACKET_V3 ring holds a
	// lone frame for its block timeout (1 ms), which delays the ACKs a
	// TCP sender waits for, so it is the slowest here.
	Mode dataplane.Mode
	// RingBlocks sizes each channel's PACKET_RX_RING (blocks of
	// dataplane.DefaultRingBlockSize) with Mode mmap. Default: the
	// dataplane's.
	RingBlocks int
	// Decide decides a new flow of the sandbox: true lets it through.
	// It is called once per flow (again only after the flow idled out of
	// the table), from the goroutine forwarding its first frame. nil
	// allows every flow.
	Decide func(Flow) bool
	// Hook sees every frame about to leave the bridge, forwarded or an
	// answer the bridge made, and may drop it (Drop) or, for a forwarded
	// frame, refuse it (Refuse). It runs on the forwarding goroutines,
	// concurrently; the Frame is valid only during the call. nil passes
	// everything.
	Hook func(dir Direction, f *Frame) Verdict
	// Sources are the addresses the sandbox may send from (its subnets):
	// an egress IP packet from any other source is dropped, so that a
	// sandbox cannot spoof its way past the uplink's masquerade onto the
	// network beyond. IPv6 link-local and unspecified sources (neighbour
	// discovery) always pass. Empty: no check.
	Sources []netip.Prefix
	// MaxFlows and IdleTimeout bound the flow table. Defaults:
	// DefaultMaxFlows, DefaultIdleTimeout.
	MaxFlows    int
	IdleTimeout time.Duration
	// Now is the flow table's clock. Default time.Now.
	Now func() time.Time
	// Logger receives the links' fallback decisions. nil discards.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.MaxFlows == 0 {
		o.MaxFlows = DefaultMaxFlows
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

func (o Options) validate() error {
	for _, s := range []struct {
		which string
		side  Side
	}{{"A", o.A}, {"B", o.B}} {
		if len(s.side.FDs) == 0 {
			return fmt.Errorf("bridge: side %s (%s) has no descriptors", s.which, s.side.Name)
		}
	}
	if o.MaxFlows < 0 {
		return fmt.Errorf("bridge: MaxFlows %d: must not be negative", o.MaxFlows)
	}
	if o.IdleTimeout < 0 {
		return fmt.Errorf("bridge: IdleTimeout %v: must not be negative", o.IdleTimeout)
	}
	if o.RingBlocks < 0 {
		return fmt.Errorf("bridge: RingBlocks %d: must not be negative", o.RingBlocks)
	}
	return nil
}

// Frame is a frame crossing the bridge, as a Hook sees it.
type Frame struct {
	bufs []dataplane.Buffer
	one  [1]dataplane.Buffer // bufs for an answer
	len  int
	vnet dataplane.VnetHdr
}

// Len returns the frame's length in bytes (without the virtio_net_hdr).
func (f *Frame) Len() int { return f.len }

// Head returns the frame's first bytes: at least its link, IP and
// transport headers.
func (f *Frame) Head() []byte { return f.bufs[0].Data }

// AppendTo appends the whole frame to dst.
func (f *Frame) AppendTo(dst []byte) []byte {
	for _, b := range f.bufs {
		dst = append(dst, b.Data...)
	}
	return dst
}

// Vnet returns the frame's virtio_net_hdr: a GSO type other than none
// means a super-frame the kernel segments later (GSOSize bytes a segment).
func (f *Frame) Vnet() dataplane.VnetHdr { return f.vnet }

// DirStats count the frames of one direction.
type DirStats struct {
	Frames uint64 `json:"frames"` // forwarded
	Bytes  uint64 `json:"bytes"`  // forwarded, without virtio_net_hdrs
	// GSOFrames are forwarded super-frames (a GSO type in the header).
	GSOFrames uint64 `json:"gso_frames"`
	// Dropped were dropped by the policy (ingress of a flow the sandbox
	// did not open) or the Hook; Refused were answered.
	Dropped uint64 `json:"dropped"`
	Refused uint64 `json:"refused"`
	// Answers are the RSTs and ICMP errors sent back the way a refused
	// frame came.
	Answers uint64 `json:"answers"`
}

// Stats are a bridge's counters.
type Stats struct {
	Egress  DirStats `json:"egress"`
	Ingress DirStats `json:"ingress"`
	// FlowsAllowed and FlowsDenied count the verdicts of Decide.
	FlowsAllowed uint64 `json:"flows_allowed"`
	FlowsDenied  uint64 `json:"flows_denied"`
	// FlowsActive is the flow table's size, FlowsEvicted what left it
	// idle or to make room.
	FlowsActive  int    `json:"flows_active"`
	FlowsEvicted uint64 `json:"flows_evicted"`
	// A and B are the two links' dataplane counters.
	A dataplane.Stats `json:"a"`
	B dataplane.Stats `json:"b"`
}

type dirCounters struct {
	frames, bytes, gso, dropped, refused, answers atomic.Uint64
}

// add counts a batch.
func (c *dirCounters) add(frames, bytes, gso, refused, dropped uint64) {
	if frames > 0 {
		c.frames.Add(frames)
		c.bytes.Add(bytes)
		c.gso.Add(gso)
	}
	if refused > 0 {
		c.refused.Add(refused)
	}
	if dropped > 0 {
		c.dropped.Add(dropped)
	}
}

func (c *dirCounters) snapshot() DirStats {
	return DirStats{
		Frames: c.frames.Load(), Bytes: c.bytes.Load(), GSOFrames: c.gso.Load(),
		Dropped: c.dropped.Load(), Refused: c.refused.Load(), Answers: c.answers.Load(),
	}
}

// deliverer is the scratch state of one delivering goroutine of one side:
// no locking, since a goroutine only ever uses its own.
type deliverer struct {
	tx      dataplane.TxBatch
	reply   dataplane.TxBatch
	vnet    []byte             // virtio_net_hdrs of the frames in tx
	written []dataplane.Buffer // buffers to free once tx is written
	frame   Frame
}

// Bridge forwards frames between two links. See the package doc.
type Bridge struct {
	opts  Options
	pool  bufferPool
	links [2]*dataplane.Link // [Egress] reads side A, [Ingress] side B
	state [2][]deliverer
	flows *flowTable
	dirs  [2]dirCounters

	allowed, denied atomic.Uint64
}

// zeroVnet is the virtio_net_hdr of an answer: a whole frame with its
// checksums done.
var zeroVnet [dataplane.VnetHdrLen]byte

// New returns a bridge between o.A and o.B. It sets PACKET_IGNORE_OUTGOING
// on every descriptor, so that nothing the kernel of the bridge's own
// namespace sends on a device is taken for a frame to forward. Start starts
// forwarding.
func New(o Options) (*Bridge, error) {
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	b := &Bridge{opts: o, flows: newFlowTable(o.MaxFlows, o.IdleTimeout, o.Now)}
	for _, s := range []Side{o.A, o.B} {
		for _, fd := range s.FDs {
			// Kernel 4.20 (commit fa788d986a3a); without it the bridge
			// still works, since a packet socket never reads its own
			// (or its fanout group's) writes.
			if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil && !errors.Is(err, unix.ENOPROTOOPT) {
				return nil, fmt.Errorf("bridge: %s: %w", s.Name, os.NewSyscallError("setsockopt PACKET_IGNORE_OUTGOING", err))
			}
		}
	}
	for dir, s := range []Side{o.A, o.B} {
		d := Direction(dir)
		l, err := dataplane.New(dataplane.LinkOptions{
			FDs:            s.FDs,
			Mode:           o.Mode,
			EthernetHeader: true,
			VnetHdr:        true,
			RingBlocks:     o.RingBlocks,
			Allocator:      &b.pool,
			Logger:         o.Logger.With("side", s.Name),
		}, dataplane.DelivererFunc(func(frames []dataplane.Frame) { b.forward(d, frames) }))
		if err != nil {
			if b.links[0] != nil {
				b.links[0].Close()
			}
			return nil, fmt.Errorf("bridge: %s: %w", s.Name, err)
		}
		b.links[dir] = l
		b.state[dir] = make([]deliverer, l.NumDeliverers())
	}
	return b, nil
}

// Start starts forwarding both ways.
func (b *Bridge) Start() {
	b.links[Egress].Start()
	b.links[Ingress].Start()
}

// Close stops forwarding; frames in flight are dropped. It is idempotent.
func (b *Bridge) Close() error {
	return errors.Join(b.links[Egress].Close(), b.links[Ingress].Close())
}

// Wait waits for the bridge's goroutines after Close.
func (b *Bridge) Wait() {
	b.links[Egress].Wait()
	b.links[Ingress].Wait()
}

// Modes returns the dispatch mode each channel of side A and then side B
// runs.
func (b *Bridge) Modes() (a, bm []dataplane.Mode) {
	for i := range b.links[Egress].NumChannels() {
		a = append(a, b.links[Egress].Mode(i))
	}
	for i := range b.links[Ingress].NumChannels() {
		bm = append(bm, b.links[Ingress].Mode(i))
	}
	return a, bm
}

// Stats returns the bridge's counters.
func (b *Bridge) Stats() Stats {
	return Stats{
		Egress:       b.dirs[Egress].snapshot(),
		Ingress:      b.dirs[Ingress].snapshot(),
		FlowsAllowed: b.allowed.Load(),
		FlowsDenied:  b.denied.Load(),
		FlowsActive:  b.flows.len(),
		FlowsEvicted: b.flows.evicted.Load(),
		A:            b.links[Egress].Stats(),
		B:            b.links[Ingress].Stats(),
	}
}

// policy returns what the flow table says about a frame read in dir.
func (b *Bridge) policy(dir Direction, p packetInfo) Verdict {
	if p.kind == notIP {
		return Pass
	}
	if dir == Egress && !b.sourceOK(p.src) {
		return Drop
	}
	switch p.kind {
	case control:
		return Pass
	case unreadable:
		return Drop
	}
	if dir == Ingress {
		// Only answers to flows the sandbox opened, and allowed, come
		// in; an echo request from outside is unsolicited.
		if p.kind == echoRequest {
			return Drop
		}
		if allow, ok := b.flows.lookup(p.flow.Reverse()); ok && allow {
			return Pass
		}
		return Drop
	}
	allow, ok := b.flows.lookup(p.flow)
	if !ok {
		allow = b.opts.Decide == nil || b.opts.Decide(p.flow)
		b.flows.insert(p.flow, allow)
		if allow {
			b.allowed.Add(1)
		} else {
			b.denied.Add(1)
		}
	}
	switch {
	case allow:
		return Pass
	case p.flow.Proto == TCP || p.flow.Proto == UDP:
		return Refuse
	}
	// Nothing to answer a denied ping or other protocol with that the
	// sender would take for a refusal; drop it.
	return Drop
}

// sourceOK reports whether the sandbox may send from src (invalid: an IP
// header too short to read, which the policy drops anyway).
func (b *Bridge) sourceOK(src netip.Addr) bool {
	if len(b.opts.Sources) == 0 || !src.IsValid() {
		return true
	}
	if src.Is6() && (src.IsLinkLocalUnicast() || src.IsUnspecified()) {
		return true
	}
	for _, p := range b.opts.Sources {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

// forward handles a batch read on the side of dir: every frame the policy
// and the hook pass is written to the other side in one batch, answers go
// back in another.
func (b *Bridge) forward(dir Direction, frames []dataplane.Frame) {
	if len(frames) == 0 {
		return
	}
	proc := frames[0].Processor
	st := &b.state[dir][proc]
	cnt := &b.dirs[dir]
	// The link's fault guard contains a panic while a frame is handled
	// (a parser bug a hostile frame found) and delivers the frames after
	// it in a new call; the frames queued before it are still in st.tx,
	// and this call writes them too. Their headers stay where they are:
	// st.vnet is only reused once st.tx is empty, and a larger one is a
	// new array, which the queued parts keep alive.
	guard := b.links[dir].Faults()
	if st.tx.Len() == 0 {
		st.vnet = st.vnet[:0]
	}
	if need := len(st.vnet) + len(frames)*dataplane.VnetHdrLen; cap(st.vnet) < need {
		st.vnet = make([]byte, 0, max(need, 2*cap(st.vnet)))
	}
	// Counted once per batch: the counters are shared by every processor,
	// and an atomic add per frame would bounce their cache line. Deferred,
	// so the frames handled before a contained panic still count.
	var frameN, bytesN, gsoN, refusedN, droppedN uint64
	defer func() { cnt.add(frameN, bytesN, gsoN, refusedN, droppedN) }()
	for i := range frames {
		guard.Handling(proc, i)
		f := &frames[i]
		if len(f.Data) == 0 {
			continue
		}
		head := f.Head()
		p := parsePacket(head)
		v := b.policy(dir, p)
		if v == Pass && b.opts.Hook != nil {
			st.frame = Frame{bufs: f.Data, len: f.Len, vnet: f.Vnet}
			v = b.opts.Hook(dir, &st.frame)
			st.frame = Frame{}
		}
		switch v {
		case Pass:
		case Refuse:
			refusedN++
			b.answer(dir, st, head, p)
			b.free(f.Data)
			continue
		default:
			droppedN++
			b.free(f.Data)
			continue
		}
		n := len(st.vnet)
		st.vnet = st.vnet[:n+dataplane.VnetHdrLen]
		f.Vnet.Encode(st.vnet[n:])
		st.tx.Begin(f.Hash)
		st.tx.Append(st.vnet[n:])
		for _, buf := range f.Data {
			st.tx.Append(buf.Data)
		}
		st.written = append(st.written, f.Data...)
		frameN++
		bytesN += uint64(f.Len)
		if f.Vnet.IsGSO() {
			gsoN++
		}
	}
	guard.Handling(proc, -1)
	if st.tx.Len() > 0 {
		// Failures are counted by the link (TxErrors, TxDropped); the
		// senders' TCP recovers as it would from a lossy router.
		_, _ = b.links[1-dir].WriteBatch(&st.tx)
		st.tx.Reset()
	}
	if st.reply.Len() > 0 {
		_, _ = b.links[dir].WriteBatch(&st.reply)
		st.reply.Reset()
	}
	b.free(st.written)
	clear(st.written)
	st.written = st.written[:0]
}

// answer queues the refusal of a frame read in dir, back the way it came.
func (b *Bridge) answer(dir Direction, st *deliverer, head []byte, p packetInfo) {
	r := refusal(head, p)
	if r == nil {
		return
	}
	back := Ingress
	if dir == Ingress {
		back = Egress
	}
	if b.opts.Hook != nil {
		fr := Frame{len: len(r)}
		fr.one[0].Data = r
		fr.bufs = fr.one[:]
		if b.opts.Hook(back, &fr) != Pass {
			return
		}
	}
	b.dirs[dir].answers.Add(1)
	st.reply.Begin(0)
	st.reply.Append(zeroVnet[:])
	st.reply.Append(r)
}

func (b *Bridge) free(bufs []dataplane.Buffer) {
	for _, buf := range bufs {
		b.pool.Free(buf)
	}
}
