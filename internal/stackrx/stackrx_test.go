package stackrx

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/offloadtest"
)

// chain copies frame into views of the given sizes (the last takes the
// rest), as a readv dispatcher spreads a frame over its buffer chain.
func chain(frame []byte, sizes ...int) []dataplane.Buffer {
	var bufs []dataplane.Buffer
	for i := 0; len(frame) > 0; i++ {
		n := len(frame)
		if i < len(sizes) {
			n = min(n, sizes[i])
		}
		b := ViewAllocator{}.Alloc(n)
		copy(b.Data, frame[:n])
		bufs = append(bufs, b)
		frame = frame[n:]
	}
	return bufs
}

func TestVerifyFrame(t *testing.T) {
	pay := offloadtest.Payload(0, 1001) // odd, so pieces land at odd offsets
	frag := offloadtest.Build(offloadtest.Packet{Ethernet: true, UDP: true, Payload: pay, BadL4Csum: true, NoDF: true})
	binary.BigEndian.PutUint16(frag[14+6:], 0x2000) // MF
	frag[14+10], frag[14+11] = 0, 0
	sum := uint32(0)
	for i := 14; i < 34; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(frag[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(frag[14+10:], ^uint16(sum))
	badIP := offloadtest.Build(offloadtest.Packet{Ethernet: true, Payload: pay})
	badIP[14+8]-- // TTL changed, header checksum not
	for _, tc := range []struct {
		name  string
		frame []byte
		eth   bool
		want  verdict
	}{
		{"tcp4", offloadtest.Build(offloadtest.Packet{Ethernet: true, Payload: pay}), true, verified},
		{"tcp4 bad", offloadtest.Build(offloadtest.Packet{Ethernet: true, Payload: pay, BadL4Csum: true}), true, badChecksum},
		{"tcp4 bad ip header", badIP, true, badChecksum},
		{"udp6", offloadtest.Build(offloadtest.Packet{Ethernet: true, V6: true, UDP: true, Payload: pay}), true, verified},
		{"udp6 bad", offloadtest.Build(offloadtest.Packet{Ethernet: true, V6: true, UDP: true, Payload: pay, BadL4Csum: true}), true, badChecksum},
		{"udp6 zero", offloadtest.Build(offloadtest.Packet{Ethernet: true, V6: true, UDP: true, Payload: pay, NoL4Csum: true}), true, badChecksum},
		{"udp4 zero", offloadtest.Build(offloadtest.Packet{Ethernet: true, UDP: true, Payload: pay, NoL4Csum: true}), true, verified},
		{"tcp6 with hop-by-hop", offloadtest.Build(offloadtest.Packet{Ethernet: true, V6: true, Payload: pay, ExtProto: 0,
			ExtHdrs: []byte{6, 0, 1, 4, 0, 0, 0, 0}}), true, verified},
		{"tcp6 routing header", offloadtest.Build(offloadtest.Packet{Ethernet: true, V6: true, Payload: pay, ExtProto: 43,
			ExtHdrs: []byte{6, 0, 0, 0, 0, 0, 0, 0}}), true, notVerified},
		{"ipv4 fragment, transport unverifiable", frag, true, notVerified},
		{"tun tcp4", offloadtest.Build(offloadtest.Packet{Payload: pay}), false, verified},
		{"tun tcp4 bad", offloadtest.Build(offloadtest.Packet{Payload: pay, BadL4Csum: true}), false, badChecksum},
		{"arp", append(make([]byte, 12), 0x08, 0x06, 0, 1), true, notVerified},
		{"runt", []byte{0x45}, false, notVerified},
	} {
		for _, sizes := range [][]int{{1 << 20}, {128, 256, 256, 512}, {15, 3, 7}} {
			t.Run(fmt.Sprintf("%s/chain=%v", tc.name, sizes), func(t *testing.T) {
				bufs := chain(tc.frame, sizes...)
				if got := verifyFrame(bufs, len(tc.frame), tc.eth); got != tc.want {
					t.Errorf("verifyFrame = %d, want %d", got, tc.want)
				}
			})
		}
	}
}

// recorder is a Sink that keeps the packets' bytes.
type recorder struct {
	mu   sync.Mutex
	pkts [][]byte
	ch   chan struct{}
}

func newRecorder() *recorder { return &recorder{ch: make(chan struct{}, 1024)} }

func (r *recorder) sink(pkt *stack.PacketBuffer) {
	b := pkt.ToView()
	r.mu.Lock()
	r.pkts = append(r.pkts, append([]byte(nil), b.AsSlice()...))
	r.mu.Unlock()
	b.Release()
	r.ch <- struct{}{}
}

func (r *recorder) got() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.pkts...)
}

// segments returns n in-order TCP segments of one flow, mss payload bytes
// each, as Ethernet frames in single views.
func segments(from, n, mss int) ([]dataplane.Frame, []byte) {
	var frames []dataplane.Frame
	var all []byte
	for i := range n {
		p := offloadtest.Payload((from+i)*mss, mss)
		all = append(all, p...)
		f := offloadtest.Build(offloadtest.Packet{Ethernet: true, Seq: uint32((from + i) * mss), Payload: p,
			ID: uint16(from + i), TCPOpts: offloadtest.TimestampOption(1, 2)})
		frames = append(frames, dataplane.Frame{Data: chain(f, 1<<20), Len: len(f)})
	}
	return frames, all
}

// With GRO, consecutive segments reach the sink as one packet; a frame
// spread over buffers is delivered after what came before it, in order.
func TestReceiverGRO(t *testing.T) {
	var c dataplane.Counters
	rec := newRecorder()
	r, err := New(Options{Ethernet: true, Trust: VerifyHere, GRO: true, Counters: &c}, rec.sink)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	frames, all := segments(0, 10, 1000)
	// A later segment of the flow, spread over three buffers: it cannot
	// join (GRO needs it contiguous) and must come out last.
	tail, tailPay := segments(10, 1, 1000)
	tailBytes := make([]byte, tail[0].Len)
	tail[0].CopyTo(tailBytes)
	tail[0].Data = chain(tailBytes, 100, 500)
	r.Deliver(append(frames, tail...))
	got := rec.got()
	if len(got) != 2 {
		t.Fatalf("%d packets, want a coalesced one and the tail", len(got))
	}
	if p := got[0][66:]; !bytes.Equal(p, all) {
		t.Errorf("coalesced payload: %d bytes, want the %d of the segments in order", len(p), len(all))
	}
	if p := got[1][66:]; !bytes.Equal(p, tailPay) {
		t.Errorf("the spread frame is not last")
	}
	if s := r.GROStats(); s.Coalesced != 1 || s.Frames[1] != 9 {
		t.Errorf("GRO stats %+v", s)
	}
	if c.RxErrors.Load() != 0 {
		t.Errorf("RxErrors %d", c.RxErrors.Load())
	}
}

// With a flush interval a flow is held across Deliver calls, and the timer
// hands it over when no more segments come.
func TestReceiverGROFlushTimer(t *testing.T) {
	var c dataplane.Counters
	rec := newRecorder()
	r, err := New(Options{Ethernet: true, Trust: TrustAll, GRO: true, GROFlushInterval: 5 * time.Millisecond, Counters: &c, Deliverers: 2}, rec.sink)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	a, pa := segments(0, 3, 500)
	b, pb := segments(3, 3, 500)
	for i := range b {
		b[i].Processor = 0
	}
	r.Deliver(a)
	r.Deliver(b)
	select {
	case <-rec.ch:
	case <-time.After(10 * time.Second):
		t.Fatal("the held flow was never flushed")
	}
	got := rec.got()
	if len(got) != 1 || !bytes.Equal(got[0][66:], append(pa, pb...)) {
		t.Fatalf("%d packets; want one holding both calls' segments", len(got))
	}
}

// Close stops the timers: a flow held at Close is never delivered.
func TestReceiverCloseDropsHeld(t *testing.T) {
	var c dataplane.Counters
	rec := newRecorder()
	r, err := New(Options{Ethernet: true, Trust: TrustAll, GRO: true, GROFlushInterval: time.Millisecond, Counters: &c}, rec.sink)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := segments(0, 2, 500)
	r.Deliver(f)
	r.Close()
	// Deliver after Close frees the frames and delivers nothing.
	g, _ := segments(2, 2, 500)
	r.Deliver(g)
	time.Sleep(20 * time.Millisecond) // past the interval: a live timer would have fired
	if n := len(rec.got()); n != 0 {
		t.Errorf("%d packets delivered after Close", n)
	}
}

func TestNewRejects(t *testing.T) {
	if _, err := New(Options{}, nil); err == nil {
		t.Error("New without Counters succeeded")
	}
	if _, err := New(Options{Counters: new(dataplane.Counters), GRO: true, Trust: StackVerifies}, nil); err == nil {
		t.Error("GRO with StackVerifies succeeded: the stack would reject partial checksums")
	}
}

// BenchmarkReceiver compares handing 44 MTU-sized segments of one flow to
// the stack one by one with coalescing them first, with checksums verified
// here (the VerifyHere mode of an endpoint with GRO and no virtio_net_hdr).
func BenchmarkReceiver(b *testing.B) {
	for _, gro := range []bool{false, true} {
		b.Run(fmt.Sprintf("gro=%t", gro), func(b *testing.B) {
			var c dataplane.Counters
			n := 0
			r, err := New(Options{Ethernet: true, Trust: VerifyHere, GRO: gro, Counters: &c}, func(*stack.PacketBuffer) { n++ })
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			tmpl, _ := segments(0, 44, 1448)
			raw := make([][]byte, len(tmpl))
			for i := range tmpl {
				raw[i] = make([]byte, tmpl[i].Len)
				tmpl[i].CopyTo(raw[i])
			}
			frames := make([]dataplane.Frame, len(raw))
			b.ReportAllocs()
			b.SetBytes(int64(44 * 1448))
			for b.Loop() {
				for i, f := range raw {
					frames[i] = dataplane.Frame{Data: chain(f, 1<<20), Len: len(f)}
				}
				r.Deliver(frames)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*44), "ns/segment")
			b.ReportMetric(float64(n)/float64(b.N), "packets/op")
		})
	}
}

// FuzzVerifyFrame: no frame, however split over buffers, makes verifyFrame
// panic, and a frame built with correct checksums is never called bad.
func FuzzVerifyFrame(f *testing.F) {
	f.Add(offloadtest.Build(offloadtest.Packet{Ethernet: true, Payload: []byte("abc")}), uint8(7), true)
	f.Add(offloadtest.Build(offloadtest.Packet{V6: true, UDP: true, Payload: []byte("abcd")}), uint8(1), false)
	f.Add([]byte{0x60, 0, 0, 0, 0, 8, 0, 1}, uint8(3), false)
	f.Fuzz(func(t *testing.T, frame []byte, split uint8, eth bool) {
		bufs := chain(frame, int(split)+1, 3, 64)
		verifyFrame(bufs, len(frame), eth)
		// The same bytes as a payload of a well-formed packet: always
		// verified, whatever the split.
		for _, p := range []offloadtest.Packet{{Ethernet: eth, Payload: frame}, {Ethernet: eth, V6: true, UDP: true, Payload: frame}} {
			good := offloadtest.Build(p)
			if v := verifyFrame(chain(good, int(split)+1, 5), len(good), eth); v != verified {
				t.Fatalf("a correct %d-byte packet judged %d", len(good), v)
			}
		}
	})
}
