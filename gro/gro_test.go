package gro

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/sluicenet/sluice/dataplane"
	ot "github.com/sluicenet/sluice/internal/offloadtest"
)

const mss = 1448

// out is one emitted packet, copied.
type out struct {
	b []byte
	m Meta
	// ptr is the address of the emitted slice's first byte, to check
	// aliasing.
	ptr *byte
}

func mustNew(tb testing.TB, o Options) *GRO {
	tb.Helper()
	g, err := New(o)
	if err != nil {
		tb.Fatalf("New(%+v): %v", o, err)
	}
	return g
}

func flushAll(g *GRO) []out {
	var res []out
	g.FlushAll(func(b []byte, m Meta) {
		o := out{b: append([]byte(nil), b...), m: m}
		if len(b) > 0 {
			o.ptr = &b[0]
		}
		res = append(res, o)
	})
	return res
}

func flush(g *GRO) []out {
	var res []out
	g.Flush(func(b []byte, m Meta) {
		res = append(res, out{b: append([]byte(nil), b...), m: m})
	})
	return res
}

// stream builds n in-order segments of one flow from seq, each with size
// payload bytes (the last one last bytes when last > 0), starting from p.
func stream(p ot.Packet, seq uint32, id uint16, n, size, last int) [][]byte {
	var frames [][]byte
	off := 0
	for i := 0; i < n; i++ {
		sz := size
		if i == n-1 && last > 0 {
			sz = last
		}
		q := p
		q.Seq = seq + uint32(off)
		q.ID = id + uint16(i)
		q.Payload = ot.Payload(off, sz)
		frames = append(frames, ot.Build(q))
		off += sz
	}
	return frames
}

func enqueueAll(tb testing.TB, g *GRO, frames [][]byte, in Input) []Outcome {
	tb.Helper()
	var res []Outcome
	for i, f := range frames {
		in.Tag = uint64(i)
		res = append(res, g.Enqueue(f, in))
	}
	return res
}

// parsed is a checked output packet.
type parsed struct {
	v6       bool
	src, dst tcpip.Address
	sport    uint16
	dport    uint16
	seq      uint32
	flags    header.TCPFlags
	payload  []byte
	ipID     uint16
}

// checkPacket verifies with gVisor's header package that b is a well-formed
// TCP packet with consistent lengths, a valid IPv4 header checksum, and a
// TCP checksum that is valid, or (partial) holds the pseudo-header sum.
func checkPacket(tb testing.TB, b []byte, eth, partial bool) parsed {
	tb.Helper()
	var p parsed
	l3 := 0
	if eth {
		l3 = header.EthernetMinimumSize
		if len(b) < l3 {
			tb.Fatalf("frame of %d bytes has no Ethernet header", len(b))
		}
	}
	ip := b[l3:]
	var tcp header.TCP
	switch header.IPVersion(ip) {
	case header.IPv4Version:
		h := header.IPv4(ip)
		if !h.IsValid(len(ip)) || int(h.TotalLength()) != len(ip) {
			tb.Fatalf("invalid IPv4 header: total length %d, %d bytes", h.TotalLength(), len(ip))
		}
		if !h.IsChecksumValid() {
			tb.Fatalf("bad IPv4 header checksum %#x", h.Checksum())
		}
		p.src, p.dst = h.SourceAddress(), h.DestinationAddress()
		p.ipID = h.ID()
		tcp = header.TCP(h.Payload())
	case header.IPv6Version:
		h := header.IPv6(ip)
		if !h.IsValid(len(ip)) || int(h.PayloadLength())+header.IPv6MinimumSize != len(ip) {
			tb.Fatalf("invalid IPv6 header: payload length %d, %d bytes", h.PayloadLength(), len(ip))
		}
		p.v6 = true
		p.src, p.dst = h.SourceAddress(), h.DestinationAddress()
		tcp = header.TCP(h.Payload())
	default:
		tb.Fatalf("not IP: version %d", header.IPVersion(ip))
	}
	if len(tcp) < header.TCPMinimumSize || int(tcp.DataOffset()) > len(tcp) {
		tb.Fatalf("bad TCP header")
	}
	p.payload = tcp.Payload()
	p.seq = tcp.SequenceNumber()
	p.flags = tcp.Flags()
	p.sport, p.dport = tcp.SourcePort(), tcp.DestinationPort()
	if partial {
		want := header.PseudoHeaderChecksum(header.TCPProtocolNumber, p.src, p.dst, uint16(len(tcp)))
		if got := tcp.Checksum(); got != want {
			tb.Fatalf("partial TCP checksum field %#x, want the pseudo-header sum %#x", got, want)
		}
	} else if !tcp.IsChecksumValid(p.src, p.dst, checksum.Checksum(p.payload, 0), uint16(len(p.payload))) {
		tb.Fatalf("bad TCP checksum %#x", tcp.Checksum())
	}
	return p
}

func TestCoalesceInOrder(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, eth := range []bool{false, true} {
			for _, partial := range []bool{false, true} {
				for _, trusted := range []bool{false, true} {
					name := fmt.Sprintf("v6=%v/eth=%v/partial=%v/trusted=%v", v6, eth, partial, trusted)
					t.Run(name, func(t *testing.T) {
						g := mustNew(t, Options{Ethernet: eth, PartialChecksum: partial})
						p := ot.Packet{V6: v6, Ethernet: eth, TCPOpts: ot.TimestampOption(100, 200), Ack: 77}
						frames := stream(p, 1000, 50, 10, mss, 500)
						orig := clone(frames)
						in := Input{}
						if trusted {
							in.Csum = CsumValid
						}
						got := enqueueAll(t, g, frames, in)
						want := []Outcome{Held, Merged, Merged, Merged, Merged, Merged, Merged, Merged, Merged, Merged}
						if fmt.Sprint(got) != fmt.Sprint(want) {
							t.Fatalf("outcomes %v, want %v", got, want)
						}
						outs := flushAll(g)
						if len(outs) != 1 {
							t.Fatalf("%d packets out, want 1", len(outs))
						}
						o := outs[0]
						pp := checkPacket(t, o.b, eth, partial)
						if want := ot.Payload(0, 9*mss+500); !bytes.Equal(pp.payload, want) {
							t.Fatalf("payload differs: %d bytes, want %d", len(pp.payload), len(want))
						}
						if pp.seq != 1000 {
							t.Errorf("seq %d, want 1000", pp.seq)
						}
						if !v6 && pp.ipID != 50 {
							t.Errorf("IP ID %d, want the first segment's 50", pp.ipID)
						}
						l3 := 0
						if eth {
							l3 = 14
						}
						iph := 20
						gsoType := uint8(dataplane.VnetGSOTCPv4)
						if v6 {
							iph = 40
							gsoType = dataplane.VnetGSOTCPv6
						}
						flags := uint8(dataplane.VnetFlagDataValid)
						if partial {
							flags = dataplane.VnetFlagNeedsCsum
						}
						wantMeta := Meta{Outcome: Merged, Segments: 10, FixedID: false, Vnet: dataplane.VnetHdr{
							Flags: flags, GSOType: gsoType, HdrLen: uint16(l3 + iph + 32), GSOSize: mss,
							CsumStart: uint16(l3 + iph), CsumOffset: 16,
						}}
						if o.m != wantMeta {
							t.Errorf("meta\n got %+v\nwant %+v", o.m, wantMeta)
						}
						if err := o.m.Vnet.Validate(len(o.b)); err != nil {
							t.Errorf("Vnet does not validate against the frame: %v", err)
						}
						// Headers other than lengths and checksums are the first segment's.
						if !bytes.Equal(o.b[:l3], orig[0][:l3]) {
							t.Errorf("Ethernet header changed")
						}
						for i := range frames {
							if !bytes.Equal(frames[i], orig[i]) {
								t.Fatalf("input frame %d was modified", i)
							}
						}
						st := g.Stats()
						if st.Frames[Held] != 1 || st.Frames[Merged] != 9 || st.Packets != 1 || st.Coalesced != 1 {
							t.Errorf("stats %+v", st)
						}
					})
				}
			}
		}
	}
}

func clone(frames [][]byte) [][]byte {
	c := make([][]byte, len(frames))
	for i, f := range frames {
		c[i] = append([]byte(nil), f...)
	}
	return c
}

// segs describes each output packet as "seq+len/segments".
func segsOf(tb testing.TB, outs []out, eth bool) []string {
	tb.Helper()
	var s []string
	for _, o := range outs {
		if o.m.Segments == 0 {
			s = append(s, "pass")
			continue
		}
		p := checkPacket(tb, o.b, eth, false)
		s = append(s, fmt.Sprintf("%d+%d/%d", p.seq, len(p.payload), o.m.Segments))
	}
	return s
}

// TestRules checks one coalescing rule per case: two or three segments of
// one flow where the later ones differ from the kernel's expectation in one
// way.
func TestRules(t *testing.T) {
	base := ot.Packet{TCPOpts: ot.TimestampOption(1, 2), Ack: 5}
	seg := func(mod func(*ot.Packet), i int, size int) []byte {
		p := base
		p.Seq = uint32(i * mss)
		p.ID = uint16(100 + i)
		p.Payload = ot.Payload(i*mss, size)
		if mod != nil {
			mod(&p)
		}
		return ot.Build(p)
	}
	tests := []struct {
		name string
		// second modifies the second segment (of three full ones).
		second func(*ot.Packet)
		want   []string
	}{
		{"identical", nil, []string{"0+4344/3"}},
		{"gap", func(p *ot.Packet) { p.Seq += 1 }, []string{"0+1448/1", "1449+1448/1", "2896+1448/1"}},
		{"retransmit", func(p *ot.Packet) { p.Seq = 0 }, []string{"0+1448/1", "0+1448/1", "2896+1448/1"}},
		{"ack differs", func(p *ot.Packet) { p.Ack++ }, []string{"0+1448/1", "1448+1448/1", "2896+1448/1"}},
		{"window differs", func(p *ot.Packet) { p.Window = 1000 }, []string{"0+1448/1", "1448+1448/1", "2896+1448/1"}},
		{"ECE differs", func(p *ot.Packet) { p.Flags = ot.ACK | ot.ECE }, []string{"0+1448/1", "1448+1448/1", "2896+1448/1"}},
		{"timestamp differs", func(p *ot.Packet) { p.TCPOpts = ot.TimestampOption(2, 2) }, []string{"0+1448/1", "1448+1448/1", "2896+1448/1"}},
		{"options length differs", func(p *ot.Packet) { p.TCPOpts = nil }, []string{"0+1448/1", "1448+1448/1", "2896+1448/1"}},
		{"TTL differs", func(p *ot.Packet) { p.TTL = 3 }, []string{"0+1448/1", "1448+1448/1", "2896+1448/1"}},
		{"TOS differs", func(p *ot.Packet) { p.TOS = 4 }, []string{"0+1448/1", "1448+1448/1", "2896+1448/1"}},
		{"DF differs", func(p *ot.Packet) { p.NoDF = true }, []string{"0+1448/1", "1448+1448/1", "2896+1448/1"}},
		{"ID jumps", func(p *ot.Packet) { p.ID += 5 }, []string{"0+1448/1", "1448+1448/1", "2896+1448/1"}},
		// PSH on a middle segment ends the packet there; the next starts anew.
		{"PSH in the middle", func(p *ot.Packet) { p.Flags = ot.ACK | ot.PSH }, []string{"0+2896/2", "2896+1448/1"}},
		{"FIN in the middle", func(p *ot.Packet) { p.Flags = ot.ACK | ot.FIN }, []string{"0+2896/2", "2896+1448/1"}},
		{"URG", func(p *ot.Packet) { p.Flags = ot.ACK | ot.URG }, []string{"0+1448/1", "1448+1448/1", "2896+1448/1"}},
		{"RST", func(p *ot.Packet) { p.Flags = ot.ACK | ot.RST }, []string{"0+1448/1", "1448+1448/1", "2896+1448/1"}},
		{"SYN", func(p *ot.Packet) { p.Flags = ot.ACK | ot.SYN }, []string{"0+1448/1", "1448+1448/1", "2896+1448/1"}},
		{"CWR", func(p *ot.Packet) { p.Flags = ot.ACK | ot.CWR }, []string{"0+1448/1", "1448+1448/1", "2896+1448/1"}},
		{"bad checksum", func(p *ot.Packet) { p.BadL4Csum = true }, []string{"0+1448/1", "pass", "2896+1448/1"}},
		{"shorter", func(p *ot.Packet) { p.Payload = p.Payload[:1000] }, []string{"0+2448/2", "2896+1448/1"}},
		{"other source port", func(p *ot.Packet) { p.SrcPort = 7 }, []string{"0+1448/1", "1448+1448/1", "2896+1448/1"}},
		{"IP options", func(p *ot.Packet) { p.IPOpts = []byte{1, 1, 1, 0} }, []string{"0+1448/1", "pass", "2896+1448/1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := mustNew(t, Options{})
			frames := [][]byte{seg(nil, 0, mss), seg(tt.second, 1, mss), seg(nil, 2, mss)}
			enqueueAll(t, g, frames, Input{})
			got := segsOf(t, flushAll(g), false)
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestLargerAfterSmallerHead(t *testing.T) {
	g := mustNew(t, Options{})
	p := ot.Packet{}
	p.Payload = ot.Payload(0, 1000)
	a := ot.Build(p)
	p.Seq, p.ID, p.Payload = 1000, 1, ot.Payload(1000, mss)
	b := ot.Build(p)
	if o := g.Enqueue(a, Input{}); o != Held {
		t.Fatalf("first: %v", o)
	}
	if o := g.Enqueue(b, Input{}); o != Held {
		t.Fatalf("a segment longer than the flow's gso_size: %v, want a new flow (held)", o)
	}
	if got := segsOf(t, flushAll(g), false); fmt.Sprint(got) != "[0+1000/1 1000+1448/1]" {
		t.Errorf("got %v", got)
	}
}

func TestPSHOnLast(t *testing.T) {
	g := mustNew(t, Options{})
	frames := stream(ot.Packet{}, 0, 0, 4, mss, 0)
	last := ot.Packet{Seq: 4 * mss, ID: 4, Flags: ot.ACK | ot.PSH, Payload: ot.Payload(4*mss, 10)}
	frames = append(frames, ot.Build(last))
	enqueueAll(t, g, frames, Input{})
	if g.Held() != 0 {
		t.Errorf("PSH did not close the flow: %d held", g.Held())
	}
	outs := flushAll(g)
	if len(outs) != 1 {
		t.Fatalf("%d packets, want 1", len(outs))
	}
	p := checkPacket(t, outs[0].b, false, false)
	if p.flags != header.TCPFlagAck|header.TCPFlagPsh {
		t.Errorf("flags %v, want ACK|PSH", p.flags)
	}
	if outs[0].m.Segments != 5 {
		t.Errorf("segments %d", outs[0].m.Segments)
	}
}

func TestIPv4ID(t *testing.T) {
	tests := []struct {
		name  string
		ids   []uint16
		noDF  bool
		want  []string
		fixed bool
	}{
		{"incrementing", []uint16{7, 8, 9}, false, []string{"0+4344/3"}, false},
		{"incrementing wraps", []uint16{65535, 0, 1}, false, []string{"0+4344/3"}, false},
		{"fixed with DF", []uint16{7, 7, 7}, false, []string{"0+4344/3"}, true},
		{"fixed without DF", []uint16{7, 7, 7}, true, []string{"0+1448/1", "1448+1448/1", "2896+1448/1"}, false},
		{"fixed then incrementing", []uint16{7, 7, 8}, false, []string{"0+2896/2", "2896+1448/1"}, true},
		{"incrementing then fixed", []uint16{7, 8, 8}, false, []string{"0+2896/2", "2896+1448/1"}, false},
		{"decrementing", []uint16{7, 6, 5}, false, []string{"0+1448/1", "1448+1448/1", "2896+1448/1"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := mustNew(t, Options{})
			var frames [][]byte
			for i, id := range tt.ids {
				frames = append(frames, ot.Build(ot.Packet{Seq: uint32(i * mss), ID: id, NoDF: tt.noDF, Payload: ot.Payload(i*mss, mss)}))
			}
			enqueueAll(t, g, frames, Input{})
			outs := flushAll(g)
			if got := segsOf(t, outs, false); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			if outs[0].m.FixedID != tt.fixed {
				t.Errorf("FixedID %v, want %v", outs[0].m.FixedID, tt.fixed)
			}
		})
	}
}

func TestIPv6Rules(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*ot.Packet)
		want []string
	}{
		{"identical", nil, []string{"0+2896/2"}},
		{"traffic class", func(p *ot.Packet) { p.TOS = 8 }, []string{"0+1448/1", "1448+1448/1"}},
		{"hop limit", func(p *ot.Packet) { p.TTL = 9 }, []string{"0+1448/1", "1448+1448/1"}},
		{"flow label", func(p *ot.Packet) { p.FlowLbl = 99 }, []string{"0+1448/1", "1448+1448/1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := mustNew(t, Options{})
			p := ot.Packet{V6: true, FlowLbl: 5, Payload: ot.Payload(0, mss)}
			a := ot.Build(p)
			p.Seq, p.Payload = mss, ot.Payload(mss, mss)
			if tt.mod != nil {
				tt.mod(&p)
			}
			enqueueAll(t, g, [][]byte{a, ot.Build(p)}, Input{})
			if got := segsOf(t, flushAll(g), false); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestIPv6ExtensionHeaderPassesThrough(t *testing.T) {
	g := mustNew(t, Options{})
	// A hop-by-hop header with PadN filling its 8 bytes, then TCP.
	ext := []byte{ot.ProtoTCP, 0, 1, 4, 0, 0, 0, 0}
	f := ot.Build(ot.Packet{V6: true, ExtHdrs: ext, ExtProto: 0, Payload: ot.Payload(0, 100)})
	if o := g.Enqueue(f, Input{}); o != Ineligible {
		t.Fatalf("outcome %v, want ineligible", o)
	}
	outs := flushAll(g)
	if len(outs) != 1 || !bytes.Equal(outs[0].b, f) || !outs[0].m.Aliased || outs[0].m.Segments != 0 || outs[0].m.Vnet != (dataplane.VnetHdr{}) {
		t.Errorf("not passed through unchanged: %+v", outs)
	}
}

func TestInterleavedFlows(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v6=%v", v6), func(t *testing.T) {
			g := mustNew(t, Options{Ethernet: true})
			var flows [3][][]byte
			for f := range flows {
				flows[f] = stream(ot.Packet{Ethernet: true, V6: v6, SrcPort: uint16(100 + f)}, uint32(f)*1e6, 0, 5, mss, 0)
			}
			for i := 0; i < 5; i++ {
				for f := range flows {
					if o := g.Enqueue(flows[f][i], Input{}); (i == 0) != (o == Held) {
						t.Fatalf("flow %d segment %d: %v", f, i, o)
					}
				}
			}
			// A non-TCP frame in between passes through in place.
			arp := make([]byte, 42)
			binary.BigEndian.PutUint16(arp[12:], 0x0806)
			if o := g.Enqueue(arp, Input{Tag: 99}); o != NotTCP {
				t.Fatalf("ARP: %v", o)
			}
			outs := flushAll(g)
			if len(outs) != 4 {
				t.Fatalf("%d packets, want 4", len(outs))
			}
			for f := 0; f < 3; f++ {
				p := checkPacket(t, outs[f].b, true, false)
				if p.sport != uint16(100+f) || outs[f].m.Segments != 5 || !bytes.Equal(p.payload, ot.Payload(0, 5*mss)) {
					t.Errorf("flow %d: port %d, %d segments", f, p.sport, outs[f].m.Segments)
				}
			}
			if outs[3].m.Outcome != NotTCP || outs[3].m.Tag != 99 || !outs[3].m.Aliased || outs[3].ptr != &arp[0] {
				t.Errorf("ARP frame not passed through as itself: %+v", outs[3].m)
			}
		})
	}
}

func TestSizeCap(t *testing.T) {
	tests := []struct {
		name    string
		maxSize int
		v6      bool
		want    []int // segments per packet
	}{
		// 40 header bytes + 45*1448 = 65200 <= 65535; 46 would be 66648.
		{"default v4", 0, false, []int{45, 5}},
		// 60 header bytes + 45*1448 = 65220.
		{"default v6", 0, true, []int{45, 5}},
		{"3000 bytes", 3000, false, []int{2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := mustNew(t, Options{MaxSize: tt.maxSize})
			enqueueAll(t, g, stream(ot.Packet{V6: tt.v6}, 0, 0, 50, mss, 0), Input{})
			var got []int
			for _, o := range flushAll(g) {
				checkPacket(t, o.b, false, false)
				max := tt.maxSize
				if max == 0 {
					max = MaxIPSize
				}
				if len(o.b) > max {
					t.Errorf("packet of %d bytes exceeds %d", len(o.b), max)
				}
				got = append(got, o.m.Segments)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("segments per packet %v, want %v", got, tt.want)
			}
		})
	}
}

// TestChecksumTrust: a segment whose checksum is wrong is merged only when
// the caller vouches for it, and the output checksum is right either way.
func TestChecksumTrust(t *testing.T) {
	mk := func(partialField bool) [][]byte {
		var frames [][]byte
		for i := 0; i < 3; i++ {
			frames = append(frames, ot.Build(ot.Packet{Seq: uint32(i * mss), ID: uint16(i), Payload: ot.Payload(i*mss, mss),
				BadL4Csum: !partialField, PartialL4Csum: partialField}))
		}
		return frames
	}
	t.Run("unknown", func(t *testing.T) {
		g := mustNew(t, Options{})
		frames := mk(false)
		got := enqueueAll(t, g, frames, Input{})
		if fmt.Sprint(got) != "[bad-checksum bad-checksum bad-checksum]" {
			t.Fatalf("outcomes %v", got)
		}
		for i, o := range flushAll(g) {
			if !o.m.Aliased || o.ptr != &frames[i][0] || o.m.Vnet != (dataplane.VnetHdr{}) {
				t.Errorf("frame %d not passed on unchanged for the stack to drop: %+v", i, o.m)
			}
		}
	})
	for _, c := range []struct {
		name    string
		in      RxCsum
		partial bool
	}{{"valid", CsumValid, false}, {"partial", CsumPartial, true}} {
		t.Run(c.name, func(t *testing.T) {
			g := mustNew(t, Options{})
			got := enqueueAll(t, g, mk(c.partial), Input{Csum: c.in})
			if fmt.Sprint(got) != "[held merged merged]" {
				t.Fatalf("outcomes %v", got)
			}
			outs := flushAll(g)
			if len(outs) != 1 {
				t.Fatalf("%d packets", len(outs))
			}
			checkPacket(t, outs[0].b, false, false)
			if outs[0].m.Vnet.Flags != dataplane.VnetFlagDataValid {
				t.Errorf("flags %#x", outs[0].m.Vnet.Flags)
			}
		})
	}
	t.Run("single partial", func(t *testing.T) {
		g := mustNew(t, Options{Ethernet: true})
		f := ot.Build(ot.Packet{Ethernet: true, Payload: ot.Payload(0, 10), PartialL4Csum: true, Flags: ot.ACK | ot.PSH})
		if o := g.Enqueue(f, Input{Csum: CsumPartial, Tag: 3}); o != Alone {
			t.Fatalf("outcome %v", o)
		}
		outs := flushAll(g)
		want := Meta{Outcome: Alone, Aliased: true, Tag: 3, Segments: 1,
			Vnet: dataplane.VnetHdr{Flags: dataplane.VnetFlagNeedsCsum, CsumStart: 34, CsumOffset: 16}}
		if len(outs) != 1 || outs[0].m != want || !bytes.Equal(outs[0].b, f) {
			t.Errorf("got %+v, want %+v", outs[0].m, want)
		}
	})
}

func TestPassThrough(t *testing.T) {
	tcp := ot.Packet{Payload: ot.Payload(0, 100)}
	frag := ot.Build(tcp)
	binary.BigEndian.PutUint16(frag[6:], 0x2000) // MF: a first fragment
	fixIPv4Checksum(frag)
	trailing := append(ot.Build(tcp), 0, 0, 0, 0)
	badIP := ot.Build(tcp)
	badIP[10] ^= 1
	tests := []struct {
		name  string
		frame []byte
		want  Outcome
	}{
		{"UDP", ot.Build(ot.Packet{UDP: true, Payload: []byte("x")}), NotTCP},
		{"empty", []byte{}, Malformed},
		{"version 5", []byte{0x50, 0, 0, 0}, NotTCP},
		{"truncated IPv4", ot.Build(tcp)[:30], Malformed},
		{"truncated TCP header", func() []byte {
			b := ot.Build(ot.Packet{})
			binary.BigEndian.PutUint16(b[2:], 30)
			fixIPv4Checksum(b)
			return b[:30]
		}(), Malformed},
		{"total length beyond frame", func() []byte {
			b := ot.Build(tcp)
			binary.BigEndian.PutUint16(b[2:], 65535)
			fixIPv4Checksum(b)
			return b
		}(), Malformed},
		{"fragment", frag, Ineligible},
		{"trailing bytes", trailing, Ineligible},
		{"bad IP checksum", badIP, BadChecksum},
		{"pure ACK", ot.Build(ot.Packet{}), Alone},
		{"SYN", ot.Build(ot.Packet{Flags: ot.SYN}), Alone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := mustNew(t, Options{})
			orig := append([]byte(nil), tt.frame...)
			if o := g.Enqueue(tt.frame, Input{Tag: 42}); o != tt.want {
				t.Fatalf("outcome %v, want %v", o, tt.want)
			}
			outs := flushAll(g)
			if len(outs) != 1 || !outs[0].m.Aliased || outs[0].m.Tag != 42 || outs[0].m.Outcome != tt.want || !bytes.Equal(outs[0].b, orig) {
				t.Fatalf("not passed through: %+v", outs)
			}
		})
	}
}

// TestIneligibleClosesFlow: a segment of a held flow that GRO cannot hold
// must come out after the held packet.
func TestIneligibleClosesFlow(t *testing.T) {
	g := mustNew(t, Options{})
	frames := stream(ot.Packet{}, 0, 0, 2, mss, 0)
	withOpts := ot.Build(ot.Packet{Seq: 2 * mss, ID: 2, IPOpts: []byte{1, 1, 1, 0}, Payload: ot.Payload(2*mss, mss)})
	after := ot.Build(ot.Packet{Seq: 3 * mss, ID: 3, Payload: ot.Payload(3*mss, mss)})
	enqueueAll(t, g, append(frames, withOpts, after), Input{})
	outs := flushAll(g)
	if len(outs) != 3 || outs[0].m.Segments != 2 || outs[1].m.Outcome != Ineligible || outs[2].m.Segments != 1 {
		t.Fatalf("got %d packets: %+v", len(outs), outs)
	}
}

func fixIPv4Checksum(b []byte) {
	h := header.IPv4(b)
	h.SetChecksum(0)
	h.SetChecksum(^h.CalculateChecksum())
}

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestFlushInterval(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	g := mustNew(t, Options{FlushInterval: 10 * time.Millisecond, Now: clk.now})
	frames := stream(ot.Packet{}, 0, 0, 6, mss, 0)
	enqueueAll(t, g, frames[:3], Input{})
	if outs := flush(g); len(outs) != 0 {
		t.Fatalf("a young flow was emitted: %d packets", len(outs))
	}
	if d, ok := g.Deadline(); !ok || !d.Equal(clk.t.Add(10*time.Millisecond)) {
		t.Fatalf("Deadline %v %v", d, ok)
	}
	// The caller may reuse the frames once Flush has returned.
	for _, f := range frames[:3] {
		clear(f)
	}
	clk.t = clk.t.Add(5 * time.Millisecond)
	enqueueAll(t, g, frames[3:5], Input{})
	if outs := flush(g); len(outs) != 0 {
		t.Fatalf("emitted before the interval: %d packets", len(outs))
	}
	clear(frames[3])
	clear(frames[4])
	clk.t = clk.t.Add(5 * time.Millisecond)
	outs := flush(g)
	if len(outs) != 1 || outs[0].m.Segments != 5 || outs[0].m.Aliased {
		t.Fatalf("after the interval: %+v", outs)
	}
	p := checkPacket(t, outs[0].b, false, false)
	if !bytes.Equal(p.payload, ot.Payload(0, 5*mss)) {
		t.Errorf("payload of the held flow was not preserved across Flush")
	}
	if _, ok := g.Deadline(); ok {
		t.Errorf("Deadline reports a held flow after everything was emitted")
	}
	// A held single segment comes out from GRO's copy, not aliased.
	enqueueAll(t, g, frames[5:], Input{Tag: 5})
	flush(g)
	clear(frames[5])
	outs = flushAll(g)
	if len(outs) != 1 || outs[0].m.Aliased || outs[0].m.Segments != 1 || outs[0].m.Outcome != Held {
		t.Fatalf("held single: %+v", outs)
	}
	checkPacket(t, outs[0].b, false, false)
}

// TestHeldFlowOrdering: a flow held across a Flush is emitted before later
// segments of the same flow that cannot join it.
func TestHeldFlowOrdering(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	g := mustNew(t, Options{FlushInterval: time.Second, Now: clk.now})
	frames := stream(ot.Packet{}, 0, 0, 3, mss, 0)
	enqueueAll(t, g, frames[:2], Input{})
	flush(g)
	// A gap: the third segment starts a new flow, closing the held one.
	gap := ot.Build(ot.Packet{Seq: 5 * mss, ID: 2, Payload: ot.Payload(5*mss, mss), Flags: ot.ACK | ot.PSH})
	g.Enqueue(gap, Input{})
	got := segsOf(t, flush(g), false)
	if fmt.Sprint(got) != "[0+2896/2 7240+1448/1]" {
		t.Errorf("got %v", got)
	}
}

func TestMaxFlows(t *testing.T) {
	g := mustNew(t, Options{MaxFlows: 2})
	var flows [3][][]byte
	for f := range flows {
		flows[f] = stream(ot.Packet{SrcPort: uint16(10 + f)}, 0, 0, 2, mss, 0)
	}
	for i := 0; i < 2; i++ {
		for f := range flows {
			g.Enqueue(flows[f][i], Input{})
		}
	}
	if g.Held() != 2 {
		t.Errorf("%d held, want 2", g.Held())
	}
	// Flow 0 was evicted by flow 2 and its second segment evicted flow 1,
	// and so on: with 3 flows round robin over 2 slots nothing coalesces.
	for _, o := range flushAll(g) {
		if o.m.Segments != 1 {
			t.Errorf("segments %d, want 1 (evicted before the next segment)", o.m.Segments)
		}
	}
}

func TestOptionsValidation(t *testing.T) {
	for _, o := range []Options{{MaxSize: 65536}, {MaxSize: 10}, {FlushInterval: -1}, {MaxFlows: -1}} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) succeeded", o)
		}
	}
	var err error
	_, err = New(Options{MaxSize: 1 << 20})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("Options.MaxSize")) {
		t.Errorf("error does not name the field: %v", err)
	}
	_ = errors.New
}

func TestNoAllocs(t *testing.T) {
	for _, interval := range []time.Duration{0, time.Hour} {
		t.Run(fmt.Sprintf("interval=%v", interval), func(t *testing.T) {
			clk := &fakeClock{t: time.Unix(1, 0)}
			g := mustNew(t, Options{Ethernet: true, FlushInterval: interval, Now: clk.now})
			var batch [][]byte
			for f := 0; f < 4; f++ {
				batch = append(batch, stream(ot.Packet{Ethernet: true, SrcPort: uint16(f + 1)}, 0, 0, 16, mss, 0)...)
			}
			batch = append(batch, ot.Build(ot.Packet{Ethernet: true, UDP: true}))
			emitted := 0
			emit := func([]byte, Meta) { emitted++ }
			run := func() {
				for i, f := range batch {
					g.Enqueue(f, Input{Tag: uint64(i)})
				}
				g.Flush(emit)
				g.FlushAll(emit)
			}
			run() // warm the pools
			if n := testing.AllocsPerRun(50, run); n != 0 {
				t.Errorf("%v allocations per batch, want 0", n)
			}
			if emitted == 0 {
				t.Fatal("nothing emitted")
			}
		})
	}
}

func BenchmarkGRO(b *testing.B) {
	for _, c := range []struct {
		name    string
		flows   int
		partial bool
		csum    RxCsum
	}{
		{"flows=1/csum=verify", 1, false, CsumUnknown},
		{"flows=1/csum=trusted", 1, false, CsumValid},
		{"flows=1/csum=partial-out", 1, true, CsumUnknown},
		{"flows=4/csum=verify", 4, false, CsumUnknown},
	} {
		b.Run(c.name, func(b *testing.B) {
			g := mustNew(b, Options{Ethernet: true, PartialChecksum: c.partial})
			// A 64-frame batch (recvmmsg-sized batches of a TSO-less
			// peer), flows round robin.
			var batch [][]byte
			per := 64 / c.flows
			streams := make([][][]byte, c.flows)
			for f := range streams {
				streams[f] = stream(ot.Packet{Ethernet: true, SrcPort: uint16(f + 1), TCPOpts: ot.TimestampOption(1, 2)}, 0, 0, per, mss, 0)
			}
			for i := 0; i < per; i++ {
				for f := range streams {
					batch = append(batch, streams[f][i])
				}
			}
			emit := func([]byte, Meta) {}
			b.ReportAllocs()
			b.SetBytes(int64(len(batch) * mss))
			for b.Loop() {
				for i, f := range batch {
					g.Enqueue(f, Input{Csum: c.csum, Tag: uint64(i)})
				}
				g.Flush(emit)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/pkt")
		})
	}
}

// Regression (found by FuzzGRO): a first segment longer than MaxSize was
// held and, when carried across a Flush, truncated into a MaxSize buffer.
func TestSegmentLongerThanMaxSize(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1, 0)}
	g := mustNew(t, Options{MaxSize: 400, FlushInterval: time.Second, Now: clk.now})
	big := ot.Build(ot.Packet{Payload: ot.Payload(0, 900)})
	if o := g.Enqueue(big, Input{}); o != Alone {
		t.Fatalf("outcome %v, want alone", o)
	}
	exact := ot.Build(ot.Packet{SrcPort: 9, Payload: ot.Payload(0, 400-40)})
	if o := g.Enqueue(exact, Input{}); o != Alone {
		t.Fatalf("a MaxSize segment: outcome %v, want alone", o)
	}
	small := ot.Build(ot.Packet{SrcPort: 7, Payload: ot.Payload(0, 300)})
	if o := g.Enqueue(small, Input{}); o != Held {
		t.Fatalf("outcome %v, want held", o)
	}
	if n := len(flush(g)); n != 2 {
		t.Fatalf("%d packets, want the 2 alone", n)
	}
	clear(small)
	outs := flushAll(g)
	if len(outs) != 1 {
		t.Fatalf("%d packets", len(outs))
	}
	if p := checkPacket(t, outs[0].b, false, false); !bytes.Equal(p.payload, ot.Payload(0, 300)) {
		t.Errorf("held segment damaged")
	}
}
