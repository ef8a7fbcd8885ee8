package gro

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	ot "github.com/sluicenet/sluice/internal/offloadtest"
)

// runConfig is how checkRun drives a GRO.
type runConfig struct {
	opts Options
	in   RxCsum
	// flushEvery > 0 calls Flush after that many frames, with a clock
	// that advances 1 ms per frame, and clobbers every frame enqueued
	// before the Flush, as a caller recycling its buffers would.
	flushEvery int
}

type seqPayload struct {
	seq     uint32
	payload []byte
}

// flowID is what the test considers one flow: the fields GRO's flow key
// holds, parsed with gVisor's header package.
func flowID(b []byte, eth bool) (string, bool) {
	var link []byte
	if eth {
		if len(b) < header.EthernetMinimumSize {
			return "", false
		}
		link, b = b[:header.EthernetMinimumSize], b[header.EthernetMinimumSize:]
	}
	var tcp header.TCP
	var id string
	switch header.IPVersion(b) {
	case header.IPv4Version:
		h := header.IPv4(b)
		if len(b) < header.IPv4MinimumSize || int(h.HeaderLength()) > len(b) {
			return "", false
		}
		id = fmt.Sprintf("4 %v %v", h.SourceAddress(), h.DestinationAddress())
		tcp = header.TCP(b[h.HeaderLength():])
	case header.IPv6Version:
		if len(b) < header.IPv6MinimumSize {
			return "", false
		}
		h := header.IPv6(b)
		id = fmt.Sprintf("6 %v %v %x", h.SourceAddress(), h.DestinationAddress(), binary.BigEndian.Uint32(b)&0xf00fffff)
		tcp = header.TCP(b[header.IPv6MinimumSize:])
	default:
		return "", false
	}
	if len(tcp) < 4 {
		return "", false
	}
	return fmt.Sprintf("%x %s %d %d", link, id, tcp.SourcePort(), tcp.DestinationPort()), true
}

// checkRun feeds frames to a GRO and checks the invariants GRO promises,
// whatever the frames are:
//   - every frame comes out exactly once: aliased and unchanged, or merged
//     into one emitted packet (segments out == TCP segments in);
//   - every TCP packet GRO built parses, with consistent lengths and valid
//     checksums (or the pseudo-header sum when partial), within MaxSize;
//   - per flow, the TCP payload bytes out equal the bytes in, in order, and
//     each output packet is a run of in-order contiguous input segments
//     starting at its sequence number;
//   - each Meta.Vnet validates against its frame;
//   - no frame passed to Enqueue is modified.
func checkRun(t *testing.T, cfg runConfig, frames [][]byte) (merged int) {
	t.Helper()
	clk := &fakeClock{t: time.Unix(1, 0)}
	opts := cfg.opts
	if cfg.flushEvery > 0 {
		opts.FlushInterval = 3 * time.Millisecond
		opts.Now = clk.now
	}
	g, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	eth := opts.Ethernet
	maxSize := opts.MaxSize
	if maxSize == 0 {
		maxSize = MaxIPSize
	}
	orig := clone(frames)
	outcomes := make([]Outcome, len(frames))
	emittedAliased := make([]bool, len(frames))
	inSegs := map[string][]seqPayload{}
	type outPkt struct {
		seqPayload
		segs int
	}
	outSegs := map[string][]outPkt{}
	tcpIn, tcpOut, packets := 0, 0, 0

	emit := func(b []byte, m Meta) {
		packets++
		if m.Aliased {
			if m.Tag >= uint64(len(frames)) || emittedAliased[m.Tag] {
				t.Fatalf("aliased tag %d unknown or emitted twice", m.Tag)
			}
			emittedAliased[m.Tag] = true
			if len(b) != len(frames[m.Tag]) || (len(b) > 0 && &b[0] != &frames[m.Tag][0]) {
				t.Fatalf("aliased output is not frame %d itself", m.Tag)
			}
			if !bytes.Equal(b, orig[m.Tag]) {
				t.Fatalf("aliased frame %d was modified", m.Tag)
			}
		}
		if err := m.Vnet.Validate(len(b)); err != nil {
			t.Fatalf("Vnet %+v: %v", m.Vnet, err)
		}
		if m.Segments == 0 {
			return
		}
		tcpOut += m.Segments
		if m.Segments > 1 && len(b)-g.linkLen > maxSize {
			t.Fatalf("coalesced packet of %d bytes over MaxSize %d", len(b), maxSize)
		}
		// Checksums were verified on input unless the caller vouched
		// for them; what GRO built itself must always be right.
		verify := cfg.in == CsumUnknown || !m.Aliased && m.Segments > 1
		var p parsed
		if verify {
			p = checkPacket(t, b, eth, m.Segments > 1 && opts.PartialChecksum)
		} else {
			p = parseLoose(t, b, eth)
		}
		if m.Segments > 1 {
			if int(m.Vnet.GSOSize) == 0 || len(p.payload) <= (m.Segments-1)*int(m.Vnet.GSOSize) || len(p.payload) > m.Segments*int(m.Vnet.GSOSize) {
				t.Fatalf("%d payload bytes do not fit %d segments of %d", len(p.payload), m.Segments, m.Vnet.GSOSize)
			}
		}
		id, _ := flowID(b, eth)
		outSegs[id] = append(outSegs[id], outPkt{seqPayload{p.seq, append([]byte(nil), p.payload...)}, m.Segments})
	}

	var enqueued []int
	for i, f := range frames {
		outcomes[i] = g.Enqueue(f, Input{Csum: cfg.in, Tag: uint64(i)})
		enqueued = append(enqueued, i)
		switch outcomes[i] {
		case Held, Merged, Alone:
			tcpIn++
			p := parseLoose(t, orig[i], eth)
			id, _ := flowID(orig[i], eth)
			inSegs[id] = append(inSegs[id], seqPayload{p.seq, p.payload})
		}
		if cfg.flushEvery > 0 {
			clk.t = clk.t.Add(time.Millisecond)
			if (i+1)%cfg.flushEvery == 0 {
				g.Flush(emit)
				for _, j := range enqueued {
					for k := range frames[j] {
						frames[j][k] = 0xa5
					}
				}
				enqueued = enqueued[:0]
			}
		}
	}
	g.FlushAll(emit)
	if g.Held() != 0 {
		t.Fatalf("%d flows held after FlushAll", g.Held())
	}
	for i := range frames {
		switch outcomes[i] {
		case Held, Merged:
		default:
			if !emittedAliased[i] {
				t.Fatalf("frame %d (%v) was not passed on", i, outcomes[i])
			}
		}
		if cfg.flushEvery == 0 && !bytes.Equal(frames[i], orig[i]) {
			t.Fatalf("input frame %d was modified", i)
		}
	}
	if tcpIn != tcpOut {
		t.Fatalf("%d TCP segments in, %d out", tcpIn, tcpOut)
	}
	for _, o := range outcomes {
		if o == Merged {
			merged++
		}
	}
	if packets != len(frames)-merged {
		t.Fatalf("%d packets out for %d frames of which %d merged", packets, len(frames), merged)
	}
	for id, outs := range outSegs {
		ins := inSegs[id]
		k := 0
		for _, o := range outs {
			if k+o.segs > len(ins) {
				t.Fatalf("flow %s: output claims more segments than came in", id)
			}
			if ins[k].seq != o.seq {
				t.Fatalf("flow %s: output seq %d, input segment %d has seq %d", id, o.seq, k, ins[k].seq)
			}
			var cat []byte
			next := ins[k].seq
			for j := k; j < k+o.segs; j++ {
				if ins[j].seq != next {
					t.Fatalf("flow %s: merged segments are not contiguous", id)
				}
				next += uint32(len(ins[j].payload))
				cat = append(cat, ins[j].payload...)
			}
			if !bytes.Equal(cat, o.payload) {
				t.Fatalf("flow %s: payload out differs from payload in", id)
			}
			k += o.segs
		}
		if k != len(ins) {
			t.Fatalf("flow %s: %d segments in, %d out", id, len(ins), k)
		}
	}
	for id := range inSegs {
		if _, ok := outSegs[id]; !ok {
			t.Fatalf("flow %s: nothing came out", id)
		}
	}
	return merged
}

// parseLoose extracts seq and payload from a frame GRO accepted, without
// checking checksums (the caller vouched for them).
func parseLoose(t *testing.T, b []byte, eth bool) parsed {
	t.Helper()
	if eth {
		b = b[header.EthernetMinimumSize:]
	}
	var tcp header.TCP
	if header.IPVersion(b) == header.IPv4Version {
		h := header.IPv4(b)
		tcp = header.TCP(b[h.HeaderLength():h.TotalLength()])
	} else {
		h := header.IPv6(b)
		tcp = header.TCP(b[header.IPv6MinimumSize : header.IPv6MinimumSize+int(h.PayloadLength())])
	}
	return parsed{seq: tcp.SequenceNumber(), payload: tcp.Payload()}
}

// randomFrames builds a batch of segments of a few flows with the things
// that break coalescing: reordering, gaps, retransmissions, flags, option
// and header changes, short segments, bad checksums, other protocols.
func randomFrames(r *rand.Rand, eth bool) [][]byte {
	nflows := 1 + r.IntN(4)
	type flow struct {
		p   ot.Packet
		seq uint32
		id  uint16
		mss int
	}
	flows := make([]flow, nflows)
	for i := range flows {
		flows[i] = flow{
			p:   ot.Packet{Ethernet: eth, V6: r.IntN(2) == 0, SrcPort: uint16(1 + r.IntN(3)), Ack: 9, TCPOpts: ot.TimestampOption(1, 1)},
			seq: r.Uint32(), id: uint16(r.Uint32()), mss: 1 + r.IntN(1500),
		}
		if r.IntN(4) == 0 {
			flows[i].p.TCPOpts = nil
		}
	}
	var frames [][]byte
	n := r.IntN(120)
	for range n {
		f := &flows[r.IntN(nflows)]
		p := f.p
		size := f.mss
		switch r.IntN(10) {
		case 0:
			size = r.IntN(f.mss + 1)
		case 1:
			size = f.mss + r.IntN(100)
		}
		p.Seq, p.ID = f.seq, f.id
		p.Payload = ot.Payload(int(f.seq), size)
		switch r.IntN(40) {
		case 0:
			p.Seq -= uint32(r.IntN(3000)) // retransmission
		case 1:
			p.Seq += uint32(1 + r.IntN(3000)) // gap
		case 2:
			p.Flags = ot.ACK | ot.PSH
		case 3:
			p.Flags = ot.ACK | ot.FIN
		case 4:
			p.Flags = []uint8{ot.SYN, ot.RST, ot.ACK | ot.URG, ot.ACK | ot.CWR, ot.ACK | ot.ECE}[r.IntN(5)]
		case 5:
			p.TCPOpts = ot.TimestampOption(2, 1)
		case 6:
			p.TTL = 1
		case 7:
			p.BadL4Csum = true
		case 8:
			p.Ack++
		case 9:
			p.ID += 3
		case 10:
			p.UDP = true
		case 11:
			p.IPOpts = []byte{1, 1, 1, 0}
		case 12:
			p.Window = 7
		}
		frames = append(frames, ot.Build(p))
		if p.Seq == f.seq && !p.UDP {
			f.seq += uint32(size)
		}
		f.id++
	}
	return frames
}

func TestRandomFlows(t *testing.T) {
	merged := 0
	for seed := uint64(0); seed < 300; seed++ {
		r := rand.New(rand.NewPCG(seed, 7))
		eth := seed%2 == 0
		cfg := runConfig{
			opts: Options{Ethernet: eth, PartialChecksum: seed%3 == 0},
			in:   RxCsum(seed % 3),
		}
		if seed%4 == 1 {
			cfg.opts.MaxSize = 1000 + r.IntN(20000)
		}
		if seed%5 == 2 {
			cfg.flushEvery = 1 + r.IntN(10)
		}
		if seed%7 == 3 {
			cfg.opts.MaxFlows = 1 + r.IntN(3)
		}
		frames := randomFrames(r, eth)
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { merged += checkRun(t, cfg, frames) })
	}
	// The generator must exercise coalescing, or the invariants above
	// prove little.
	if merged < 1000 {
		t.Errorf("only %d segments merged over all seeds", merged)
	}
}

// encodeFrames is FuzzGRO's input format: each frame as a 2-byte big-endian
// length and its bytes.
func encodeFrames(frames [][]byte) []byte {
	var b []byte
	for _, f := range frames {
		b = binary.BigEndian.AppendUint16(b, uint16(len(f)))
		b = append(b, f...)
	}
	return b
}

func decodeFrames(b []byte) [][]byte {
	var frames [][]byte
	for len(b) >= 2 && len(frames) < 256 {
		n := int(binary.BigEndian.Uint16(b))
		b = b[2:]
		n = min(n, len(b))
		frames = append(frames, append([]byte(nil), b[:n]...))
		b = b[n:]
	}
	return frames
}

// FuzzGRO feeds arbitrary frame sequences to GRO under options picked by
// mode, and checks checkRun's invariants.
func FuzzGRO(f *testing.F) {
	for seed := uint64(0); seed < 16; seed++ {
		r := rand.New(rand.NewPCG(seed, 11))
		eth := seed%2 == 0
		frames := randomFrames(r, eth)
		if len(frames) > 40 {
			frames = frames[:40]
		}
		mode := byte(seed)
		if eth {
			mode |= 1
		} else {
			mode &^= 1
		}
		f.Add(mode, encodeFrames(frames))
	}
	f.Add(byte(4), encodeFrames(stream(ot.Packet{V6: true}, 0, 0, 8, 100, 7)))
	f.Fuzz(func(t *testing.T, mode byte, data []byte) {
		cfg := runConfig{opts: Options{
			Ethernet:        mode&1 != 0,
			PartialChecksum: mode&2 != 0,
		}}
		if mode&4 != 0 {
			cfg.in = CsumValid
		}
		if mode&8 != 0 {
			cfg.opts.MaxSize = 400
		}
		if mode&16 != 0 {
			cfg.flushEvery = 3
		}
		if mode&32 != 0 {
			cfg.opts.MaxFlows = 2
		}
		_ = checkRun(t, cfg, decodeFrames(data))
	})
}

var _ = checksum.Checksum
