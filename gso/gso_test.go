package gso

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/gro"
	ot "github.com/sluicenet/sluice/internal/offloadtest"
)

const mss = 1448

// frameInfo is what checkFrame reads from a segment.
type frameInfo struct {
	seq     uint32
	id      uint16
	flags   header.TCPFlags
	payload []byte
	l4      []byte
	src     tcpip.Address
	dst     tcpip.Address
}

// checkFrame verifies a segment with gVisor's header package: consistent IP
// and transport lengths, a valid IPv4 header checksum, and a valid
// transport checksum (or, partial, the pseudo-header sum in its field).
func checkFrame(tb testing.TB, b []byte, eth, udp, partial bool) frameInfo {
	tb.Helper()
	var fi frameInfo
	if eth {
		b = b[header.EthernetMinimumSize:]
	}
	proto := header.TCPProtocolNumber
	if udp {
		proto = header.UDPProtocolNumber
	}
	switch header.IPVersion(b) {
	case header.IPv4Version:
		h := header.IPv4(b)
		if !h.IsValid(len(b)) || int(h.TotalLength()) != len(b) || !h.IsChecksumValid() {
			tb.Fatalf("bad IPv4 header (total length %d, %d bytes)", h.TotalLength(), len(b))
		}
		fi.id = h.ID()
		fi.src, fi.dst = h.SourceAddress(), h.DestinationAddress()
		fi.l4 = h.Payload()
	case header.IPv6Version:
		h := header.IPv6(b)
		if !h.IsValid(len(b)) || int(h.PayloadLength())+header.IPv6MinimumSize != len(b) {
			tb.Fatalf("bad IPv6 header")
		}
		fi.src, fi.dst = h.SourceAddress(), h.DestinationAddress()
		fi.l4 = h.Payload()
		if h.NextHeader() != uint8(proto) {
			// Skip the test's one hop-by-hop header.
			fi.l4 = fi.l4[(int(fi.l4[1])+1)*8:]
		}
	default:
		tb.Fatalf("not IP")
	}
	var field uint16
	if udp {
		u := header.UDP(fi.l4)
		if int(u.Length()) != len(fi.l4) {
			tb.Fatalf("UDP length %d, %d bytes", u.Length(), len(fi.l4))
		}
		fi.payload = u.Payload()
		field = u.Checksum()
		if !partial && !u.IsChecksumValid(fi.src, fi.dst, checksum.Checksum(fi.payload, 0)) {
			tb.Fatalf("bad UDP checksum %#x", field)
		}
	} else {
		t := header.TCP(fi.l4)
		fi.payload = t.Payload()
		fi.seq = t.SequenceNumber()
		fi.flags = t.Flags()
		field = t.Checksum()
		if !partial && !t.IsChecksumValid(fi.src, fi.dst, checksum.Checksum(fi.payload, 0), uint16(len(fi.payload))) {
			tb.Fatalf("bad TCP checksum %#x", field)
		}
	}
	if partial {
		if want := header.PseudoHeaderChecksum(proto, fi.src, fi.dst, uint16(len(fi.l4))); field != want {
			tb.Fatalf("partial checksum field %#x, want the pseudo-header sum %#x", field, want)
		}
	}
	return fi
}

func buffers(n, size int) [][]byte {
	d := make([][]byte, n)
	for i := range d {
		d[i] = make([]byte, 0, size)
	}
	return d
}

func TestSegmentTCP(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, eth := range []bool{false, true} {
			for _, partial := range []bool{false, true} {
				t.Run(fmt.Sprintf("v6=%v/eth=%v/partial=%v", v6, eth, partial), func(t *testing.T) {
					payload := 44*mss + 700
					p := ot.Packet{V6: v6, Ethernet: eth, Seq: 0xffff0000, ID: 65530, Ack: 3,
						Flags: ot.ACK | ot.PSH | ot.FIN | ot.CWR, TCPOpts: ot.TimestampOption(5, 6),
						Payload: ot.Payload(0, payload), PartialL4Csum: true}
					pkt := ot.Build(p)
					orig := append([]byte(nil), pkt...)
					o := Options{MSS: mss, Ethernet: eth, PartialChecksum: partial}
					in, err := Inspect(pkt, o)
					if err != nil {
						t.Fatal(err)
					}
					if in.Segments != 45 {
						t.Fatalf("Info.Segments %d, want 45", in.Segments)
					}
					dst := buffers(50, in.MaxFrameLen(mss))
					n, err := Segment(dst, pkt, o)
					if err != nil || n != 45 {
						t.Fatalf("Segment: %d, %v", n, err)
					}
					if !bytes.Equal(pkt, orig) {
						t.Fatal("input packet modified")
					}
					var all []byte
					for i, f := range dst[:n] {
						if partial {
							checkFrame(t, f, eth, false, true)
							if err := CompleteChecksum(f, in.CsumStart, in.CsumOffset); err != nil {
								t.Fatal(err)
							}
						}
						fi := checkFrame(t, f, eth, false, false)
						if want := uint32(0xffff0000 + i*mss); fi.seq != want {
							t.Errorf("segment %d: seq %#x, want %#x", i, fi.seq, want)
						}
						if !v6 && fi.id != uint16(65530+i) {
							t.Errorf("segment %d: IP ID %d, want %d", i, fi.id, uint16(65530+i))
						}
						want := header.TCPFlagAck
						if i == 0 {
							want |= header.TCPFlagCwr
						}
						if i == n-1 {
							want |= header.TCPFlagPsh | header.TCPFlagFin
						}
						if fi.flags != want {
							t.Errorf("segment %d: flags %v, want %v", i, fi.flags, want)
						}
						if i < n-1 && len(fi.payload) != mss {
							t.Errorf("segment %d: %d payload bytes", i, len(fi.payload))
						}
						if eth && !bytes.Equal(f[:14], pkt[:14]) {
							t.Errorf("segment %d: Ethernet header differs", i)
						}
						all = append(all, fi.payload...)
					}
					if !bytes.Equal(all, p.Payload) {
						t.Fatal("payload bytes out differ from in")
					}
				})
			}
		}
	}
}

// TestRoundTripWithGRO: segmenting a large segment and coalescing the
// segments gives back the original packet, byte for byte.
func TestRoundTripWithGRO(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, eth := range []bool{false, true} {
			for _, fixed := range []bool{false, true} {
				t.Run(fmt.Sprintf("v6=%v/eth=%v/fixedid=%v", v6, eth, fixed), func(t *testing.T) {
					p := ot.Packet{V6: v6, Ethernet: eth, Seq: 77, ID: 1000, Ack: 3, Flags: ot.ACK | ot.PSH,
						TCPOpts: ot.TimestampOption(5, 6), Payload: ot.Payload(3, 44*mss+1)}
					pkt := ot.Build(p)
					o := Options{MSS: mss, Ethernet: eth, FixedID: fixed}
					dst := buffers(64, 2000)
					n, err := Segment(dst, pkt, o)
					if err != nil {
						t.Fatal(err)
					}
					g, err := gro.New(gro.Options{Ethernet: eth})
					if err != nil {
						t.Fatal(err)
					}
					for i, f := range dst[:n] {
						if out := g.Enqueue(f, gro.Input{}); out != gro.Held && out != gro.Merged {
							t.Fatalf("segment %d: GRO outcome %v", i, out)
						}
					}
					var outs [][]byte
					var metas []gro.Meta
					g.FlushAll(func(b []byte, m gro.Meta) {
						outs = append(outs, append([]byte(nil), b...))
						metas = append(metas, m)
					})
					if len(outs) != 1 {
						t.Fatalf("%d packets from GRO", len(outs))
					}
					if !bytes.Equal(outs[0], pkt) {
						t.Errorf("round trip differs from the original")
					}
					m := metas[0]
					if m.Segments != n || int(m.Vnet.GSOSize) != mss || m.FixedID != (fixed && !v6) {
						t.Errorf("GRO meta %+v", m)
					}
					// And back again, from what GRO says.
					dst2 := buffers(64, 2000)
					n2, err := Segment(dst2, outs[0], Options{MSS: int(m.Vnet.GSOSize), Ethernet: eth, FixedID: m.FixedID})
					if err != nil || n2 != n {
						t.Fatalf("resegment: %d, %v", n2, err)
					}
					for i := range n {
						if !bytes.Equal(dst[i], dst2[i]) {
							t.Fatalf("resegmented frame %d differs", i)
						}
					}
				})
			}
		}
	}
}

func TestSplitMatchesSegment(t *testing.T) {
	for _, udp := range []bool{false, true} {
		for _, partial := range []bool{false, true} {
			pkt := ot.Build(ot.Packet{Ethernet: true, V6: true, UDP: udp, Payload: ot.Payload(0, 10*1000+1)})
			o := Options{MSS: 1000, Ethernet: true, PartialChecksum: partial}
			in, err := Inspect(pkt, o)
			if err != nil {
				t.Fatal(err)
			}
			dst := buffers(in.Segments, in.MaxFrameLen(o.MSS))
			if _, err := Segment(dst, pkt, o); err != nil {
				t.Fatal(err)
			}
			frames := make([]Frame, in.Segments)
			hdrs := make([]byte, in.Segments*in.HdrLen)
			n, err := Split(frames, hdrs, pkt, o)
			if err != nil || n != 11 {
				t.Fatalf("Split: %d, %v", n, err)
			}
			for i := range n {
				got := append(append([]byte(nil), frames[i].Header...), frames[i].Payload...)
				if !bytes.Equal(got, dst[i]) {
					t.Errorf("udp=%v partial=%v: Split frame %d differs from Segment's", udp, partial, i)
				}
				if &frames[i].Payload[0] != &pkt[in.HdrLen+i*o.MSS] {
					t.Errorf("Split frame %d payload does not alias the packet", i)
				}
			}
		}
	}
}

func TestSegmentUDP(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v6=%v", v6), func(t *testing.T) {
			p := ot.Packet{V6: v6, UDP: true, ID: 9, Payload: ot.Payload(0, 5*1200+17)}
			pkt := ot.Build(p)
			dst := buffers(8, 1300)
			n, err := Segment(dst, pkt, Options{MSS: 1200})
			if err != nil || n != 6 {
				t.Fatalf("%d, %v", n, err)
			}
			var all []byte
			for i, f := range dst[:n] {
				fi := checkFrame(t, f, false, true, false)
				if !v6 && fi.id != uint16(9+i) {
					t.Errorf("segment %d: ID %d", i, fi.id)
				}
				all = append(all, fi.payload...)
			}
			if !bytes.Equal(all, p.Payload) {
				t.Error("payload differs")
			}
		})
	}
}

func TestExtensionHeadersAndOptions(t *testing.T) {
	hbh := []byte{ot.ProtoTCP, 0, 1, 4, 0, 0, 0, 0}
	for _, p := range []ot.Packet{
		{V6: true, ExtHdrs: hbh, ExtProto: 0, Payload: ot.Payload(0, 3000)},
		{IPOpts: []byte{1, 1, 1, 0}, Payload: ot.Payload(0, 3000)},
	} {
		pkt := ot.Build(p)
		dst := buffers(4, 1600)
		n, err := Segment(dst, pkt, Options{MSS: 1400})
		if err != nil || n != 3 {
			t.Fatalf("%d, %v", n, err)
		}
		var all []byte
		for _, f := range dst[:n] {
			all = append(all, checkFrame(t, f, false, false, false).payload...)
		}
		if !bytes.Equal(all, p.Payload) {
			t.Error("payload differs")
		}
	}
}

func TestSingleSegment(t *testing.T) {
	pkt := ot.Build(ot.Packet{Payload: ot.Payload(0, 100), Flags: ot.ACK | ot.FIN | ot.CWR, NoL4Csum: true})
	dst := buffers(1, 200)
	n, err := Segment(dst, pkt, Options{MSS: mss})
	if err != nil || n != 1 {
		t.Fatalf("%d, %v", n, err)
	}
	if fi := checkFrame(t, dst[0], false, false, false); fi.flags != header.TCPFlagAck|header.TCPFlagFin|header.TCPFlagCwr {
		t.Errorf("flags %v", fi.flags)
	}
	// A pure ACK is one segment too.
	n, err = Segment(dst, ot.Build(ot.Packet{}), Options{MSS: mss})
	if err != nil || n != 1 {
		t.Fatalf("pure ACK: %d, %v", n, err)
	}
	checkFrame(t, dst[0], false, false, false)
}

func TestMalformed(t *testing.T) {
	good := ot.Build(ot.Packet{Payload: ot.Payload(0, 3000)})
	mod := func(b []byte, f func([]byte) []byte) []byte { return f(append([]byte(nil), b...)) }
	tests := []struct {
		name string
		pkt  []byte
		o    Options
		want error
	}{
		{"mss 0", good, Options{}, ErrMalformed},
		{"negative mss", good, Options{MSS: -5}, ErrMalformed},
		{"empty", nil, Options{MSS: mss}, ErrMalformed},
		{"64 KiB in a 100-byte frame", mod(good, func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[2:], 65535)
			return b[:100]
		}), Options{MSS: mss}, ErrMalformed},
		{"total length short", mod(good, func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[2:], 1000)
			return b
		}), Options{MSS: mss}, ErrMalformed},
		{"IHL beyond packet", mod(good, func(b []byte) []byte {
			b[0] = 0x4f
			binary.BigEndian.PutUint16(b[2:], 50)
			return b[:50]
		}), Options{MSS: mss}, ErrMalformed},
		{"IHL below 5", mod(good, func(b []byte) []byte { b[0] = 0x44; return b }), Options{MSS: mss}, ErrMalformed},
		{"TCP header beyond packet", mod(good, func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[2:], 30)
			return b[:30]
		}), Options{MSS: mss}, ErrMalformed},
		{"TCP data offset beyond packet", mod(good, func(b []byte) []byte {
			b[32] = 0xf0
			binary.BigEndian.PutUint16(b[2:], 50)
			return b[:50]
		}), Options{MSS: mss}, ErrMalformed},
		{"TCP data offset below 5", mod(good, func(b []byte) []byte { b[32] = 0x40; return b }), Options{MSS: mss}, ErrMalformed},
		{"fragment", mod(good, func(b []byte) []byte { b[6] = 0x20; return b }), Options{MSS: mss}, ErrMalformed},
		{"version 5", mod(good, func(b []byte) []byte { b[0] = 0x55; return b }), Options{MSS: mss}, ErrMalformed},
		{"no Ethernet header", good[:10], Options{MSS: mss, Ethernet: true}, ErrMalformed},
		{"IPv4 behind the IPv6 ethertype", mod(ot.Build(ot.Packet{Ethernet: true}), func(b []byte) []byte {
			b[12], b[13] = 0x86, 0xdd
			return b
		}), Options{MSS: mss, Ethernet: true}, ErrMalformed},
		{"ARP", mod(ot.Build(ot.Packet{Ethernet: true}), func(b []byte) []byte {
			b[12], b[13] = 0x08, 0x06
			return b
		}), Options{MSS: mss, Ethernet: true}, ErrNotSupported},
		{"IPv6 payload length", mod(ot.Build(ot.Packet{V6: true, Payload: ot.Payload(0, 10)}), func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[4:], 9000)
			return b
		}), Options{MSS: mss}, ErrMalformed},
		{"IPv6 jumbogram", mod(ot.Build(ot.Packet{V6: true, Payload: ot.Payload(0, 10)}), func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[4:], 0)
			return b
		}), Options{MSS: mss}, ErrMalformed},
		{"IPv6 extension header beyond packet", ot.Build(ot.Packet{V6: true, ExtHdrs: []byte{6, 200, 0, 0, 0, 0, 0, 0}, ExtProto: 60}), Options{MSS: mss}, ErrMalformed},
		{"IPv6 fragment header", ot.Build(ot.Packet{V6: true, ExtHdrs: []byte{6, 0, 0, 0, 0, 0, 0, 0}, ExtProto: 44}), Options{MSS: mss}, ErrMalformed},
		{"IPv6 routing header", ot.Build(ot.Packet{V6: true, ExtHdrs: []byte{6, 0, 0, 0, 0, 0, 0, 0}, ExtProto: 43}), Options{MSS: mss}, ErrNotSupported},
		{"ICMP", mod(good, func(b []byte) []byte { b[9] = 1; return b }), Options{MSS: mss}, ErrNotSupported},
		{"UDP length", mod(ot.Build(ot.Packet{UDP: true, Payload: ot.Payload(0, 100)}), func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[24:], 50)
			return b
		}), Options{MSS: mss}, ErrMalformed},
		{"UDP header beyond packet", mod(ot.Build(ot.Packet{UDP: true}), func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[2:], 24)
			return b[:24]
		}), Options{MSS: mss}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := buffers(64, 2000)
			n, err := Segment(dst, tt.pkt, tt.o)
			if !errors.Is(err, tt.want) || n != 0 {
				t.Errorf("Segment: %d, %v; want an error wrapping %v", n, err, tt.want)
			}
			if errors.Is(err, dataplane.ErrMalformed) != errors.Is(tt.want, ErrMalformed) {
				t.Errorf("errors.Is(dataplane.ErrMalformed) disagrees")
			}
			n, err = Split(make([]Frame, 64), make([]byte, 1<<16), tt.pkt, tt.o)
			if !errors.Is(err, tt.want) || n != 0 {
				t.Errorf("Split: %d, %v", n, err)
			}
		})
	}
}

func TestShortBuffer(t *testing.T) {
	pkt := ot.Build(ot.Packet{Payload: ot.Payload(0, 3000)})
	o := Options{MSS: 1000}
	for _, dst := range [][][]byte{buffers(2, 2000), {make([]byte, 0, 2000), make([]byte, 0, 2000), make([]byte, 0, 100)}} {
		before := fmt.Sprint(dst)
		if n, err := Segment(dst, pkt, o); !errors.Is(err, io.ErrShortBuffer) || n != 0 {
			t.Errorf("Segment: %d, %v", n, err)
		}
		if fmt.Sprint(dst) != before {
			t.Errorf("Segment wrote into dst on error")
		}
	}
	if _, err := Split(make([]Frame, 2), make([]byte, 1000), pkt, o); !errors.Is(err, io.ErrShortBuffer) {
		t.Errorf("Split, few frames: %v", err)
	}
	if _, err := Split(make([]Frame, 3), make([]byte, 3*40-1), pkt, o); !errors.Is(err, io.ErrShortBuffer) {
		t.Errorf("Split, little header space: %v", err)
	}
}

func TestCompleteChecksum(t *testing.T) {
	for _, udp := range []bool{false, true} {
		pkt, off := ot.BuildOffsets(ot.Packet{UDP: udp, Ethernet: true, Payload: ot.Payload(0, 333), PartialL4Csum: true})
		co := 16
		if udp {
			co = 6
		}
		if err := CompleteChecksum(pkt, off.L4, co); err != nil {
			t.Fatal(err)
		}
		want := ot.Build(ot.Packet{UDP: udp, Ethernet: true, Payload: ot.Payload(0, 333)})
		if !bytes.Equal(pkt, want) {
			t.Errorf("udp=%v: completed checksum differs from a full one", udp)
		}
	}
	// Zero is stored as 0xffff: a UDP datagram whose checksum comes out 0.
	b := []byte{0, 0, 0, 0}
	if err := CompleteChecksum(b, 0, 2); err != nil || binary.BigEndian.Uint16(b[2:]) != 0xffff {
		t.Errorf("zero sum: %x, %v", b, err)
	}
	for _, c := range [][2]int{{-1, 0}, {0, -1}, {9, 0}, {0, 9}, {8, 1}, {7, 1}, {8, 0}, {0, 3}} {
		if err := CompleteChecksum(make([]byte, 9), c[0], c[1]); !errors.Is(err, ErrMalformed) {
			t.Errorf("CompleteChecksum(9 bytes, %d, %d): %v", c[0], c[1], err)
		}
	}
}

func TestNoAllocs(t *testing.T) {
	pkt := ot.Build(ot.Packet{Ethernet: true, Payload: ot.Payload(0, 44*mss+100)})
	o := Options{MSS: mss, Ethernet: true}
	dst := buffers(47, 1514)
	frames := make([]Frame, 47)
	hdrs := make([]byte, 47*54)
	if n := testing.AllocsPerRun(20, func() {
		if _, err := Segment(dst, pkt, o); err != nil {
			t.Fatal(err)
		}
		if _, err := Split(frames, hdrs, pkt, o); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("%v allocations, want 0", n)
	}
}

func BenchmarkSegment(b *testing.B) {
	pkt := ot.Build(ot.Packet{Ethernet: true, Payload: ot.Payload(0, 45*mss)})
	for _, partial := range []bool{false, true} {
		o := Options{MSS: mss, Ethernet: true, PartialChecksum: partial}
		b.Run(fmt.Sprintf("op=segment/partial=%v", partial), func(b *testing.B) {
			dst := buffers(47, 1514)
			b.ReportAllocs()
			b.SetBytes(int64(len(pkt)))
			for b.Loop() {
				Segment(dst, pkt, o)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*45), "ns/seg")
		})
		b.Run(fmt.Sprintf("op=split/partial=%v", partial), func(b *testing.B) {
			frames := make([]Frame, 47)
			hdrs := make([]byte, 47*54)
			b.ReportAllocs()
			b.SetBytes(int64(len(pkt)))
			for b.Loop() {
				Split(frames, hdrs, pkt, o)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*45), "ns/seg")
		})
	}
}
