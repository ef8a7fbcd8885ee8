// Package gro is generic receive offload before the stack: it coalesces
// in-order TCP segments of one flow, IPv4 or IPv6, into one large segment, on
// raw frames (IP packets, or Ethernet frames with Options.Ethernet), so that a
// user-space stack handles one 64 KiB segment instead of 45 MTU-sized ones. It
// imports nothing from gVisor: the fdbased and the AF_XDP endpoints both use
// it.
//
// # Rules
//
// A segment joins a held flow only under the checks Linux makes in
// dev_gro_receive, inet_gro_receive / ipv6_gro_receive and tcp_gro_receive
// (net/core/gro.c, net/ipv4/af_inet.c, net/ipv6/ip6_offload.c,
// net/ipv4/tcp_offload.c, include/net/gro.h, Linux 6.10 to 6.18); each check
// is spelled out where mergeable tests it. Segments GRO does not hold (not
// TCP, IPv4 options, IPv6 extension headers, fragments, bad checksums,
// control segments) are passed on unchanged, in order.
//
// # Batches, ownership and Flush
//
// A GRO belongs to one goroutine (one processor of a channel): it is not safe
// for concurrent use, except Stats. The caller hands it a batch of frames with
// Enqueue, then calls Flush with an emit function:
//
//   - Enqueue never writes into a frame, but may keep a reference to it until
//     the next Flush or FlushAll returns. The caller must not modify or reuse
//     a frame before then.
//   - Flush calls emit once per output packet: per flow, in the order the
//     segments arrived. When Meta.Aliased is set, out is the very frame passed
//     to Enqueue with Meta.Tag, unmodified, and the caller may keep it (hand
//     its buffer to the stack). Otherwise out is GRO's own memory, valid only
//     until emit returns: copy it to keep it.
//   - When Flush returns, GRO holds no reference to any frame passed to
//     Enqueue: frames that were not emitted aliased have been copied (merged
//     into an emitted packet, or into a flow held across the Flush) and may
//     be recycled.
//   - emit must not call back into the GRO.
//
// With FlushInterval zero every Flush emits everything. Otherwise a flow is
// held across Flush calls until FlushInterval after its first segment
// (Deadline tells the caller when to call Flush next), like the kernel's
// gro_flush_timeout; FlushAll emits everything regardless.
//
// # Memory
//
// Merging does not copy: a held flow is a list of references to the payloads
// of the batch's frames, copied once into a reusable buffer when the packet is
// emitted. Flows held across a Flush are copied into one of at most MaxFlows
// pooled buffers. The per-batch tables are reset, not freed, at each Flush, so
// steady state allocates nothing per segment.
package gro

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/csum"
)

// Limits and defaults.
const (
	// MaxIPSize is the largest coalesced packet, as an IP total length:
	// the largest IPv4 total length, and the kernel's GRO_LEGACY_MAX_SIZE
	// (skb_gro_receive refuses p->len + len >= 65536).
	MaxIPSize = 65535
	// DefaultMaxFlows is the kernel's bound on held packets per NAPI
	// context: GRO_HASH_BUCKETS (8) * MAX_GRO_SKBS (8).
	DefaultMaxFlows = 64

	ethHdrLen = 14
	ipv4Len   = 20
	ipv6Len   = 40
	tcpMinLen = 20
)

// TCP header bits, as they sit in the TCP flag word (bytes 12-15: data
// offset, flags, window), the unit tcp_gro_receive compares.
const (
	flagFIN = 0x01
	flagSYN = 0x02
	flagRST = 0x04
	flagPSH = 0x08
	flagURG = 0x20
	flagCWR = 0x80

	wordFIN = flagFIN << 16
	wordPSH = flagPSH << 16
)

// Options configure a GRO. The zero value holds flows within one batch,
// coalesces up to 64 KiB with full TCP checksums, on IP packets without a
// link header.
type Options struct {
	// MaxSize is the largest coalesced packet as an IP total length in
	// bytes (IP header included, link header excluded). Zero means
	// MaxIPSize (65535).
	MaxSize int
	// FlushInterval is how long a flow may be held across Flush calls,
	// measured from its first segment. Zero means Flush emits everything:
	// flows are coalesced within one batch only.
	FlushInterval time.Duration
	// Ethernet says frames start with a 14-byte Ethernet header. Segments
	// join a flow only when their Ethernet headers are identical, as the
	// kernel compares MAC headers (gro_list_prepare).
	Ethernet bool
	// PartialChecksum leaves the TCP checksum of a coalesced packet
	// partial, holding the pseudo-header sum, with Meta.Vnet saying
	// NEEDS_CSUM from the TCP header (what tcp4_gro_complete does, and
	// cheaper); false computes the full checksum.
	PartialChecksum bool
	// MaxFlows bounds the flows held at once; a new flow beyond it flushes
	// the oldest. Zero means DefaultMaxFlows.
	MaxFlows int
	// Now is the clock for FlushInterval; nil means time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.MaxSize == 0 {
		o.MaxSize = MaxIPSize
	}
	if o.MaxFlows == 0 {
		o.MaxFlows = DefaultMaxFlows
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

func (o Options) validate() error {
	// The smallest useful packet: an IPv6 header, a TCP header and a
	// byte; anything smaller could never hold two segments.
	if o.MaxSize < ipv6Len+tcpMinLen+2 || o.MaxSize > MaxIPSize {
		return fmt.Errorf("gro: Options.MaxSize %d: must be between %d and %d", o.MaxSize, ipv6Len+tcpMinLen+2, MaxIPSize)
	}
	if o.FlushInterval < 0 {
		return fmt.Errorf("gro: Options.FlushInterval %v: must not be negative", o.FlushInterval)
	}
	if o.MaxFlows < 1 || o.MaxFlows > 1<<16 {
		return fmt.Errorf("gro: Options.MaxFlows %d: must be between 1 and 65536", o.MaxFlows)
	}
	return nil
}

// RxCsum says what the caller knows about a frame's transport checksum.
type RxCsum uint8

const (
	// CsumUnknown: GRO verifies the TCP checksum, and a segment whose
	// checksum is wrong is never merged (it is emitted as it is, for the
	// stack to drop).
	CsumUnknown RxCsum = iota
	// CsumValid: the checksum was verified already (virtio
	// DATA_VALID, or RX checksum offload): GRO trusts it.
	CsumValid
	// CsumPartial: the frame was built on this host and its checksum
	// field holds the pseudo-header sum (virtio NEEDS_CSUM, as the
	// kernel hands over veth TSO frames): GRO trusts the data.
	CsumPartial
)

// Input is what the caller tells GRO about one frame.
type Input struct {
	// Csum is the state of the frame's transport checksum.
	Csum RxCsum
	// Tag is returned in Meta.Tag when the frame is emitted as it is, so
	// the caller can find its own buffer again.
	Tag uint64
}

// Outcome says what Enqueue did with a frame.
type Outcome uint8

const (
	// Held: the segment starts a new held flow.
	Held Outcome = iota
	// Merged: the segment joined a held flow.
	Merged
	// Alone: a valid TCP segment that is emitted on its own: no payload,
	// or SYN, RST, URG, PSH, FIN or CWR set and no flow to join, as the
	// kernel flushes such segments at once; or already MaxSize long.
	Alone
	// NotTCP: not an IPv4 or IPv6 TCP segment.
	NotTCP
	// Ineligible: TCP, but with IPv4 options, IPv6 extension headers, a
	// fragment, a reserved IPv4 flag, or bytes after the IP packet: the
	// kernel's GRO does not hold these either.
	Ineligible
	// Malformed: headers truncated or lengths inconsistent.
	Malformed
	// BadChecksum: the IPv4 header checksum or the TCP checksum is wrong.
	BadChecksum

	numOutcomes
)

var outcomeNames = [numOutcomes]string{"held", "merged", "alone", "not-tcp", "ineligible", "malformed", "bad-checksum"}

func (o Outcome) String() string {
	if o < numOutcomes {
		return outcomeNames[o]
	}
	return fmt.Sprintf("Outcome(%d)", uint8(o))
}

// Meta describes one emitted packet.
type Meta struct {
	// Outcome is Merged for a coalesced packet (Segments >= 2), Held for
	// a held flow emitted with its single segment, and otherwise the
	// outcome of the frame's Enqueue.
	Outcome Outcome
	// Aliased says out is the frame passed to Enqueue with Tag,
	// unmodified; otherwise out is valid only until emit returns.
	Aliased bool
	Tag     uint64
	// Segments is the number of TCP segments in out: 1 for a segment on
	// its own, 0 when out is not a TCP segment GRO accepted.
	Segments int
	// FixedID says the coalesced IPv4 segments all had DF and the same IP
	// ID (the kernel's SKB_GSO_TCP_FIXEDID): a resegmenter must repeat the
	// ID rather than increment it.
	FixedID bool
	// Vnet is out's virtio_net_hdr, as an endpoint would pass it on:
	//   - coalesced: GSOType TCPv4 or TCPv6, GSOSize the segment size,
	//     HdrLen the link, IP and TCP header bytes, CsumStart the TCP
	//     header's offset and CsumOffset 16, and Flags DataValid (full
	//     checksum) or NeedsCsum (Options.PartialChecksum);
	//   - a single TCP segment: Flags DataValid, or NeedsCsum with
	//     CsumStart and CsumOffset when its input was CsumPartial;
	//   - anything else (Segments 0): zero; the caller's own metadata for
	//     the frame still applies.
	Vnet dataplane.VnetHdr
}

// Stats counts what a GRO did. Fields are read with atomic loads, so Stats
// may be called from any goroutine.
type Stats struct {
	// Frames is the number of frames enqueued, per Outcome.
	Frames [numOutcomes]uint64
	// Packets is the number of packets emitted; Coalesced, how many of
	// them held two segments or more.
	Packets, Coalesced uint64
}

// flowKey identifies a flow: what the kernel requires to be equal before it
// compares anything else (same_flow in gro_list_prepare, inet_gro_receive,
// ipv6_gro_receive, tcp_gro_lookup).
type flowKey struct {
	link         [ethHdrLen]byte // the whole Ethernet header, zero without one
	src, dst     [16]byte        // IPv4 addresses use the first 4 bytes
	sport, dport uint16
	v6word       uint32 // IPv6 version and flow label; a different label is a different flow
	v6           bool
}

// seg is a parsed candidate segment.
type seg struct {
	frame       []byte
	key         flowKey
	l3, l4, hdr int // offsets of the IP header, TCP header and payload
	seq, ack    uint32
	word        uint32 // TCP flag word: data offset, flags, window
	id          uint16 // IPv4 ID
	paySum      uint16 // payload checksum when sumOK
	sumOK       bool
	keyOK       bool // key holds the addresses and ports
	csum        RxCsum
}

func (s *seg) payload() []byte { return s.frame[s.hdr:] }
func (s *seg) flags() uint8    { return uint8(s.word >> 16) }

type entryKind uint8

const (
	entryFrame entryKind = iota // emitted as it is
	entryFlow                   // a held flow
)

// entry is one packet to emit, in arrival order: a frame passed on, or a
// flow (open while it may still grow).
type entry struct {
	kind    entryKind
	open    bool
	outcome Outcome
	csum    RxCsum
	tag     uint64
	// frame is the frame passed on, or a flow's base bytes: its first
	// segment (caller memory, arena -1) or, once held across a Flush, a
	// pooled buffer holding every segment so far.
	frame []byte
	arena int32
	// Flows only.
	key         flowKey
	l3, l4, hdr int
	nextSeq     uint32
	gsoSize     int
	segs        int
	payLen      int // payload bytes, base and references
	first, last int32
	firstID     uint16
	fixedID     bool
	orFlags     uint8 // FIN and PSH of the last segment
	sum         uint16
	sumOK       bool
	start       time.Time
}

// ref is a reference to a merged segment's payload in caller memory.
type ref struct {
	payload []byte
	next    int32
}

// GRO coalesces TCP segments. See the package documentation for the
// ownership and Flush contract.
type GRO struct {
	opts    Options
	linkLen int

	entries []entry // this batch's packets, in arrival order
	open    []int32 // indices of open flows in entries, oldest first
	refs    []ref
	scratch []byte   // builds coalesced packets; len linkLen+MaxSize
	arena   [][]byte // buffers of flows held across a Flush
	free    []int32  // unused arena buffers

	frames    [numOutcomes]atomic.Uint64
	packets   atomic.Uint64
	coalesced atomic.Uint64
}

// New returns a GRO. It takes a copy of opts.
func New(opts Options) (*GRO, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	g := &GRO{opts: opts}
	if opts.Ethernet {
		g.linkLen = ethHdrLen
	}
	g.scratch = make([]byte, g.linkLen+opts.MaxSize)
	return g, nil
}

// Stats returns the counters.
func (g *GRO) Stats() Stats {
	var s Stats
	for i := range s.Frames {
		s.Frames[i] = g.frames[i].Load()
	}
	s.Packets = g.packets.Load()
	s.Coalesced = g.coalesced.Load()
	return s
}

// Held reports how many flows are held (open).
func (g *GRO) Held() int { return len(g.open) }

// Deadline reports when the oldest held flow's FlushInterval runs out: the
// latest time to call Flush again if no frame arrives. ok is false when no
// flow is held.
func (g *GRO) Deadline() (t time.Time, ok bool) {
	if len(g.open) == 0 {
		return time.Time{}, false
	}
	// open is in arrival order and start times only grow.
	return g.entries[g.open[0]].start.Add(g.opts.FlushInterval), true
}

// Enqueue adds frame to the batch and reports what it did with it. See the
// package documentation for how long frame is referenced.
func (g *GRO) Enqueue(frame []byte, in Input) Outcome {
	o := g.enqueue(frame, in)
	g.frames[o].Add(1)
	return o
}

func (g *GRO) enqueue(frame []byte, in Input) Outcome {
	var s seg
	switch o := g.parse(frame, in, &s); o {
	case Held:
		// A candidate; now find its flow.
	case Ineligible:
		// A TCP segment of a held flow that cannot join it still has to
		// come out after it: close the flow (a best-effort key; closing
		// the wrong flow only costs coalescing).
		if s.keyOK {
			g.closeFlow(&s.key)
		}
		g.passOn(frame, in, o)
		return o
	default:
		// A bad checksum says nothing reliable about the flow, so it is
		// left alone, as tcp4_gro_receive does (flush the skb, not p).
		g.passOn(frame, in, o)
		return o
	}

	if i := g.lookup(&s.key); i >= 0 {
		e := &g.entries[i]
		if g.mergeable(e, &s) {
			g.merge(e, &s)
			if s.flags()&(flagPSH|flagFIN) != 0 || len(s.payload()) < e.gsoSize {
				// PSH or FIN end the packet; a segment shorter than
				// the flow's gso_size is the last of a send
				// (tcp_gro_receive: flush = len < mss).
				g.closeAt(i)
			}
			return Merged
		}
		// It cannot join: the held packet goes first, and this
		// segment may start a new one (dev_gro_receive flushes p and
		// holds skb).
		g.closeAt(i)
	}

	// A new flow. The kernel delivers at once what has no payload or
	// carries URG, PSH, RST, SYN or FIN (tcp_gro_receive, out_check_final),
	// and a CWR segment can never be joined (flush on CWR, and flags
	// differing from it), so holding it would only delay it.
	// A segment that leaves no room under MaxSize for another byte is not
	// held either: nothing could join it.
	if len(s.payload()) == 0 || s.flags()&(flagURG|flagPSH|flagRST|flagSYN|flagFIN|flagCWR) != 0 ||
		len(s.frame)-s.l3 >= g.opts.MaxSize {
		g.entries = append(g.entries, entry{kind: entryFrame, outcome: Alone, csum: s.csum, tag: in.Tag,
			frame: frame, arena: -1, l3: s.l3, l4: s.l4, hdr: s.hdr})
		return Alone
	}
	if len(g.open) >= g.opts.MaxFlows {
		g.closeAt(int(g.open[0])) // gro_flush_oldest
	}
	e := entry{
		kind: entryFlow, open: true, outcome: Held, csum: s.csum, tag: in.Tag,
		frame: frame, arena: -1,
		key: s.key, l3: s.l3, l4: s.l4, hdr: s.hdr,
		nextSeq: s.seq + uint32(len(s.payload())),
		gsoSize: len(s.payload()), segs: 1, payLen: len(s.payload()),
		first: -1, last: -1,
		firstID: s.id,
		sum:     s.paySum, sumOK: s.sumOK,
	}
	if g.opts.FlushInterval > 0 {
		e.start = g.opts.Now()
	}
	g.entries = append(g.entries, e)
	g.open = append(g.open, int32(len(g.entries)-1))
	return Held
}

func (g *GRO) passOn(frame []byte, in Input, o Outcome) {
	g.entries = append(g.entries, entry{kind: entryFrame, outcome: o, csum: in.Csum, tag: in.Tag, frame: frame, arena: -1})
}

// parse checks that frame is a TCP segment GRO may hold, fills s, and
// returns Held for a candidate or the reason it is not one.
func (g *GRO) parse(frame []byte, in Input, s *seg) Outcome {
	s.frame = frame
	s.csum = in.Csum
	l3 := 0
	v6 := false
	if g.opts.Ethernet {
		if len(frame) < ethHdrLen {
			return Malformed
		}
		switch binary.BigEndian.Uint16(frame[12:]) {
		case 0x0800:
		case 0x86dd:
			v6 = true
		default:
			return NotTCP
		}
		copy(s.key.link[:], frame[:ethHdrLen])
		l3 = ethHdrLen
		if len(frame) == l3 {
			return Malformed
		}
	} else {
		if len(frame) == 0 {
			return Malformed
		}
		switch frame[0] >> 4 {
		case 4:
		case 6:
			v6 = true
		default:
			return NotTCP
		}
	}
	ip := frame[l3:]
	s.l3 = l3
	var l4 int // offset of the TCP header in ip
	var reason Outcome = Held
	if !v6 {
		// inet_gro_receive: only 0x45 (no options), tot_len equal to
		// the length, no fragment bits, valid header checksum.
		if len(ip) < ipv4Len {
			return Malformed
		}
		if ip[0]>>4 != 4 {
			return Malformed
		}
		ihl := int(ip[0]&0x0f) * 4
		if ihl < ipv4Len || ihl > len(ip) {
			return Malformed
		}
		total := int(binary.BigEndian.Uint16(ip[2:]))
		if total < ihl || total > len(ip) {
			return Malformed
		}
		if ip[9] != 6 {
			return NotTCP
		}
		ff := binary.BigEndian.Uint16(ip[6:])
		if ff&0x1fff != 0 {
			return Ineligible // not the first fragment: no TCP header
		}
		copy(s.key.src[:4], ip[12:16])
		copy(s.key.dst[:4], ip[16:20])
		switch {
		case ihl != ipv4Len, ff&0xa000 != 0, total != len(ip):
			// Options, MF or the reserved bit, trailing bytes.
			reason = Ineligible
		case csum.Sum(ip[:ipv4Len], 0) != 0xffff:
			return BadChecksum
		}
		s.id = binary.BigEndian.Uint16(ip[4:])
		l4 = ihl
		ip = ip[:total]
	} else {
		if len(ip) < ipv6Len {
			return Malformed
		}
		if ip[0]>>4 != 6 {
			return Malformed
		}
		plen := int(binary.BigEndian.Uint16(ip[4:]))
		if ipv6Len+plen > len(ip) {
			return Malformed
		}
		switch ip[6] {
		case 6:
		case 0, 43, 44, 60, 51, 50, 135, 139, 140:
			// Extension headers (RFC 8200 section 4, IANA's list):
			// not walked, so their TCP port is unknown.
			return Ineligible
		default:
			return NotTCP
		}
		copy(s.key.src[:], ip[8:24])
		copy(s.key.dst[:], ip[24:40])
		s.key.v6word = binary.BigEndian.Uint32(ip[0:4]) & 0xf00fffff
		s.key.v6 = true
		if ipv6Len+plen != len(ip) || plen == 0 {
			// Trailing bytes, or a jumbogram's zero length.
			reason = Ineligible
		}
		l4 = ipv6Len
		ip = ip[:ipv6Len+plen]
	}
	tcp := ip[l4:]
	if len(tcp) < tcpMinLen {
		return Malformed
	}
	s.key.sport = binary.BigEndian.Uint16(tcp[0:])
	s.key.dport = binary.BigEndian.Uint16(tcp[2:])
	s.keyOK = true
	doff := int(tcp[12]>>4) * 4
	if doff < tcpMinLen || doff > len(tcp) {
		return Malformed
	}
	if reason != Held {
		return reason
	}
	s.l4 = l3 + l4
	s.hdr = s.l4 + doff
	s.seq = binary.BigEndian.Uint32(tcp[4:])
	s.ack = binary.BigEndian.Uint32(tcp[8:])
	s.word = binary.BigEndian.Uint32(tcp[12:])
	s.frame = frame[:l3+len(ip)]

	if in.Csum == CsumUnknown {
		// tcp4_gro_receive / tcp6_gro_receive validate the checksum
		// before anything else; the payload's sum is kept to build the
		// coalesced checksum without a second pass.
		var pseudo uint16
		if v6 {
			pseudo = csum.PseudoV6(6, ip[8:24], ip[24:40], uint32(len(tcp)))
		} else {
			pseudo = csum.PseudoV4(6, ip[12:16], ip[16:20], uint16(len(tcp)))
		}
		s.paySum = csum.Sum(tcp[doff:], 0)
		if csum.Add(csum.Sum(tcp[:doff], pseudo), s.paySum) != 0xffff {
			return BadChecksum
		}
		s.sumOK = true
	}
	return Held
}

// lookup returns the index in entries of the open flow with key k, or -1.
func (g *GRO) lookup(k *flowKey) int {
	for _, i := range g.open {
		e := &g.entries[i]
		if e.key.sport == k.sport && e.key.dport == k.dport && e.key == *k {
			return int(i)
		}
	}
	return -1
}

// closeFlow closes the open flow with key k, if any.
func (g *GRO) closeFlow(k *flowKey) {
	if i := g.lookup(k); i >= 0 {
		g.closeAt(i)
	}
}

// closeAt closes the open flow at entries[i]: it grows no more and is
// emitted at the next Flush, in its place.
func (g *GRO) closeAt(i int) {
	g.entries[i].open = false
	for j, k := range g.open {
		if int(k) == i {
			g.open = append(g.open[:j], g.open[j+1:]...)
			return
		}
	}
}

// mergeable reports whether s may be appended to the held flow e, under the
// kernel's rules.
func (g *GRO) mergeable(e *entry, s *seg) bool {
	base := e.frame
	th := base[e.l4:]
	n := len(s.payload())
	// tcp_gro_receive: a segment longer than the flow's gso_size (the
	// first segment's payload), or empty, is not merged:
	// flush |= (len - 1) >= mss.
	if n == 0 || n > e.gsoSize {
		return false
	}
	// Contiguous sequence: flush |= (th2->seq + skb_gro_len(p)) ^ th->seq.
	// A retransmission, a gap or reordering all fail here.
	if s.seq != e.nextSeq {
		return false
	}
	// CWR forces a flush (congestion signal, handled per segment).
	if s.flags()&flagCWR != 0 {
		return false
	}
	// The flag word (data offset, every flag but FIN and PSH, window)
	// must be equal: flush |= (flags ^ tcp_flag_word(th2)) & ~(FIN|PSH).
	if (s.word^binary.BigEndian.Uint32(th[12:]))&^uint32(wordFIN|wordPSH) != 0 {
		return false
	}
	// Same acknowledgement: flush |= th->ack_seq ^ th2->ack_seq.
	if s.ack != binary.BigEndian.Uint32(th[8:]) {
		return false
	}
	// Identical options, timestamps included (the word-by-word compare
	// in tcp_gro_receive): the data offset is equal by now.
	if string(s.frame[s.l4+tcpMinLen:s.hdr]) != string(base[e.l4+tcpMinLen:e.hdr]) {
		return false
	}
	// The size cap (skb_gro_receive: -E2BIG).
	if (e.hdr-e.l3)+e.payLen+n > g.opts.MaxSize {
		return false
	}
	ip, sip := base[e.l3:], s.frame[s.l3:]
	if e.key.v6 {
		// ipv6_gro_flush: traffic class and hop limit must match.
		if (binary.BigEndian.Uint32(ip)^binary.BigEndian.Uint32(sip))&0x0ff00000 != 0 || ip[7] != sip[7] {
			return false
		}
		return true
	}
	// inet_gro_flush: TTL, TOS and DF must match.
	if ip[8] != sip[8] || ip[1] != sip[1] || (ip[6]^sip[6])&0x40 != 0 {
		return false
	}
	// The IP ID either increments by one per segment, or (with DF) stays
	// fixed, decided at the second segment (NAPI_GRO_CB(p)->ip_fixedid).
	df := sip[6]&0x40 != 0
	off := s.id - e.firstID
	fixed := e.fixedID || (e.segs == 1 && df && off == 0)
	if fixed && df {
		return off == 0
	}
	return off == uint16(e.segs)
}

// merge appends s's payload to e.
func (g *GRO) merge(e *entry, s *seg) {
	p := s.payload()
	if e.segs == 1 && !e.key.v6 {
		// The second segment decides between a fixed and an
		// incrementing ID (inet_gro_flush).
		e.fixedID = e.frame[e.l3+6]&0x40 != 0 && s.id == e.firstID
	}
	if s.sumOK && e.sumOK {
		// The payload starts at an even offset (the TCP header is a
		// multiple of 4 bytes), so the parity of e.payLen places it.
		e.sum = csum.Add(e.sum, csum.AtOffset(s.paySum, e.payLen))
	} else {
		e.sumOK = false
	}
	g.refs = append(g.refs, ref{payload: p, next: -1})
	r := int32(len(g.refs) - 1)
	if e.last >= 0 {
		g.refs[e.last].next = r
	} else {
		e.first = r
	}
	e.last = r
	e.segs++
	e.payLen += len(p)
	e.nextSeq += uint32(len(p))
	// tcp_gro_receive: tcp_flag_word(th2) |= flags & (FIN|PSH).
	e.orFlags |= s.flags() & (flagFIN | flagPSH)
}

// Flush emits every packet of the batch, except flows younger than
// FlushInterval, which are kept (copied) for a later Flush. See the package
// documentation for the contract.
func (g *GRO) Flush(emit func(out []byte, m Meta)) { g.flush(emit, false) }

// FlushAll emits every packet, held flows included.
func (g *GRO) FlushAll(emit func(out []byte, m Meta)) { g.flush(emit, true) }

func (g *GRO) flush(emit func([]byte, Meta), all bool) {
	keepYoung := !all && g.opts.FlushInterval > 0
	var now time.Time
	if keepYoung && len(g.open) > 0 {
		now = g.opts.Now()
	}
	kept := 0
	for i := range g.entries {
		e := &g.entries[i]
		if e.open && keepYoung && now.Sub(e.start) < g.opts.FlushInterval {
			g.materialize(e)
			g.entries[kept] = *e
			kept++
			continue
		}
		g.emit(e, emit)
	}
	clear(g.entries[kept:])
	g.entries = g.entries[:kept]
	g.open = g.open[:0]
	for i := range g.entries {
		g.open = append(g.open, int32(i))
	}
	clear(g.refs)
	g.refs = g.refs[:0]
}

// materialize copies a flow's segments out of caller memory into a pooled
// buffer, so that it can be held across a Flush.
func (g *GRO) materialize(e *entry) {
	if e.arena >= 0 && e.first < 0 {
		return
	}
	buf, idx := g.bufFor(e)
	n := len(buf)
	for r := e.first; r >= 0; r = g.refs[r].next {
		n += copy(buf[n:cap(buf)], g.refs[r].payload)
	}
	e.frame, e.arena = buf[:n], idx
	e.first, e.last = -1, -1
}

// bufFor returns e's bytes so far in a pooled buffer (e's own when it has
// one), and the buffer's index.
func (g *GRO) bufFor(e *entry) ([]byte, int32) {
	if e.arena >= 0 {
		return e.frame, e.arena
	}
	var idx int32
	if n := len(g.free); n > 0 {
		idx = g.free[n-1]
		g.free = g.free[:n-1]
	} else {
		g.arena = append(g.arena, make([]byte, g.linkLen+g.opts.MaxSize))
		idx = int32(len(g.arena) - 1)
	}
	b := g.arena[idx]
	n := copy(b, e.frame)
	return b[:n], idx
}

func (g *GRO) emit(e *entry, emit func([]byte, Meta)) {
	g.packets.Add(1)
	if e.kind == entryFrame {
		m := Meta{Outcome: e.outcome, Aliased: true, Tag: e.tag}
		if e.outcome == Alone {
			m.Segments = 1
			m.Vnet = g.singleVnet(e)
		}
		emit(e.frame, m)
		return
	}
	if e.segs == 1 {
		m := Meta{Outcome: Held, Aliased: e.arena < 0, Tag: e.tag, Segments: 1, Vnet: g.singleVnet(e)}
		emit(e.frame, m)
		g.release(e)
		return
	}

	// Build the coalesced packet: in the flow's own buffer if it has one
	// (held across a Flush), else in scratch.
	var out []byte
	if e.arena >= 0 {
		out = e.frame
	} else {
		out = g.scratch[:copy(g.scratch, e.frame)]
	}
	for r := e.first; r >= 0; r = g.refs[r].next {
		n := len(out)
		out = out[:n+len(g.refs[r].payload)]
		copy(out[n:], g.refs[r].payload)
	}
	ipLen := len(out) - e.l3
	tcpLen := len(out) - e.l4
	ip := out[e.l3:]
	var pseudo uint16
	gsoType := uint8(dataplane.VnetGSOTCPv4)
	if e.key.v6 {
		gsoType = dataplane.VnetGSOTCPv6
		binary.BigEndian.PutUint16(ip[4:], uint16(ipLen-ipv6Len))
		pseudo = csum.PseudoV6(6, ip[8:24], ip[24:40], uint32(tcpLen))
	} else {
		binary.BigEndian.PutUint16(ip[2:], uint16(ipLen))
		ip[10], ip[11] = 0, 0
		binary.BigEndian.PutUint16(ip[10:], csum.IPv4Header(ip[:ipv4Len]))
		pseudo = csum.PseudoV4(6, ip[12:16], ip[16:20], uint16(tcpLen))
	}
	th := out[e.l4:]
	th[13] |= e.orFlags
	m := Meta{
		Outcome:  Merged,
		Segments: e.segs,
		FixedID:  e.fixedID,
		Vnet: dataplane.VnetHdr{
			GSOType:    gsoType,
			HdrLen:     uint16(e.hdr),
			GSOSize:    uint16(e.gsoSize),
			CsumStart:  uint16(e.l4),
			CsumOffset: 16,
		},
	}
	if g.opts.PartialChecksum {
		// tcp4_gro_complete: th->check = ~tcp_v4_check(len, saddr,
		// daddr, 0), the folded pseudo-header sum, CHECKSUM_PARTIAL.
		binary.BigEndian.PutUint16(th[16:], pseudo)
		m.Vnet.Flags = dataplane.VnetFlagNeedsCsum
	} else {
		th[16], th[17] = 0, 0
		pay := e.sum
		if !e.sumOK {
			pay = csum.Sum(out[e.hdr:], 0)
		}
		s := csum.Add(csum.Sum(th[:e.hdr-e.l4], pseudo), pay)
		binary.BigEndian.PutUint16(th[16:], csum.Finish(s))
		m.Vnet.Flags = dataplane.VnetFlagDataValid
	}
	g.coalesced.Add(1)
	emit(out, m)
	g.release(e)
}

// singleVnet is the virtio_net_hdr of a TCP segment emitted as it arrived.
func (g *GRO) singleVnet(e *entry) dataplane.VnetHdr {
	if e.csum == CsumPartial {
		return dataplane.VnetHdr{Flags: dataplane.VnetFlagNeedsCsum, CsumStart: uint16(e.l4), CsumOffset: 16}
	}
	return dataplane.VnetHdr{Flags: dataplane.VnetFlagDataValid}
}

func (g *GRO) release(e *entry) {
	if e.arena >= 0 {
		g.free = append(g.free, e.arena)
		e.arena = -1
	}
}
