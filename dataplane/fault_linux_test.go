//go:build linux

package dataplane

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// faultMarker is the payload that makes panicky panic.
var faultMarker = []byte("FAULT-MARKER")

// panicky is a Deliverer that handles frames one at a time, reporting each
// to the link's fault guard, and panics on a frame whose bytes contain
// faultMarker: a stand-in for a parser bug that one hostile frame trips.
// The other frames go to next.
type panicky struct {
	guard func() *FaultGuard
	mark  bool // report the frame in hand (Handling)
	next  *collector
}

func (p *panicky) Deliver(frames []Frame) {
	g := p.guard()
	for i := range frames {
		if p.mark {
			g.Handling(frames[i].Processor, i)
		}
		if bytes.Contains(frames[i].Head(), faultMarker) {
			panic(fmt.Sprintf("test fault on frame %d", i))
		}
		p.next.Deliver(frames[i : i+1])
	}
}

// TestLinkContainsFault sends frames, one of them the marker, through a
// link whose Deliverer panics on the marker: the link must keep delivering
// the frames after it (in the same batch and later ones), count one fault,
// log it, and write the marker frame into the corpus directory in Go's fuzz
// corpus format.
func TestLinkContainsFault(t *testing.T) {
	for _, mode := range []Mode{Readv, RecvMMsg} {
		for _, procs := range []int{1, 2} {
			t.Run(fmt.Sprintf("%v/procs=%d", mode, procs), func(t *testing.T) {
				a, b := mustSocketpair(t, unix.SOCK_DGRAM)
				dir := filepath.Join(t.TempDir(), "corpus")
				var logs logBuffer
				c := &collector{}
				var l *Link
				p := &panicky{guard: func() *FaultGuard { return l.Faults() }, mark: true, next: c}
				l = mustLink(t, LinkOptions{
					FDs: []int{a}, Mode: mode, EthernetHeader: true, ProcessorsPerChannel: procs,
					Logger: logs.logger(), Faults: FaultOptions{CorpusDir: dir},
				}, p)
				// All frames are one flow, so they reach one
				// deliverer in order and recvmmsg reads them in few
				// batches: the marker has frames after it in its batch.
				var want [][]byte
				var frames [][]byte
				var marker []byte
				for i := range 20 {
					f := udpFrame(1, uint32(i), 64)
					if i == 5 {
						copy(f[testPayloadOff+testMinPayload:], faultMarker)
						marker = f
					} else {
						want = append(want, f)
					}
					frames = append(frames, f)
				}
				writeAll(t, b, frames...)
				l.Start()
				if !c.waitFor(len(want), 10*time.Second) {
					t.Fatalf("delivered %d frames, want the %d that are not the marker", c.n.Load(), len(want))
				}
				var got [][]byte
				for _, f := range c.frames() {
					got = append(got, f.data)
				}
				if len(got) != len(want) {
					t.Fatalf("delivered %d frames, want %d", len(got), len(want))
				}
				for i := range want {
					if !bytes.Equal(got[i], want[i]) {
						t.Fatalf("frame %d delivered out of order or changed", i)
					}
				}
				// Later batches still flow.
				after := udpFrame(1, 100, 64)
				writeAll(t, b, after)
				if !c.waitFor(len(want)+1, 10*time.Second) {
					t.Fatalf("a frame sent after the fault was not delivered")
				}
				if st := l.Stats(); st.Faults != 1 || st.RxPackets != 21 {
					t.Errorf("Stats: Faults %d, RxPackets %d; want 1 and 21", st.Faults, st.RxPackets)
				}
				if s := logs.String(); !strings.Contains(s, "contained a fault") || !strings.Contains(s, "test fault on frame") || !strings.Contains(s, "corpus_file=") {
					t.Errorf("fault not logged with its panic and corpus file:\n%s", s)
				}
				files, err := os.ReadDir(dir)
				if err != nil || len(files) != 1 {
					t.Fatalf("corpus dir: %v, %d files; want 1", err, len(files))
				}
				data, err := os.ReadFile(filepath.Join(dir, files[0].Name()))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.HasPrefix(data, []byte("go test fuzz v1\n[]byte(")) {
					t.Errorf("corpus file is not in Go's fuzz format:\n%s", data)
				}
				frame, vnet, err := UnmarshalFaultCorpus(data)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(frame, marker) || len(vnet) != 0 {
					t.Errorf("corpus holds a %d-byte frame (vnet %x), want the %d-byte marker frame, no vnet", len(frame), vnet, len(marker))
				}
			})
		}
	}
}

// TestFaultGuardUnmarked: a Deliverer that does not report the frame in
// hand loses the rest of its batch to a fault, which is still counted and
// logged, without a corpus file (the frame is unknown); the next batch is
// delivered.
func TestFaultGuardUnmarked(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "corpus")
	var logs logBuffer
	var counters Counters
	g := NewFaultGuard(FaultOptions{CorpusDir: dir, Logger: logs.logger()}, &counters, 1)
	c := &collector{}
	p := &panicky{guard: func() *FaultGuard { return g }, next: c}
	batch := func(from int, markAt int) []Frame {
		var fs []Frame
		for i := range 4 {
			b := udpFrame(1, uint32(from+i), 64)
			if i == markAt {
				copy(b[testPayloadOff+testMinPayload:], faultMarker)
			}
			fs = append(fs, Frame{Data: []Buffer{{Data: b}}, Len: len(b)})
		}
		return fs
	}
	g.Deliver(p, batch(0, 1))
	if n := c.n.Load(); n != 1 {
		t.Errorf("delivered %d frames of the faulting batch, want the 1 before the marker", n)
	}
	g.Deliver(p, batch(10, -1))
	if n := c.n.Load(); n != 5 {
		t.Errorf("delivered %d frames in all, want 5: the next batch must go through", n)
	}
	if n := counters.Faults.Load(); n != 1 {
		t.Errorf("Faults = %d, want 1", n)
	}
	if !strings.Contains(logs.String(), "frame unknown") {
		t.Errorf("log does not say the frame is unknown:\n%s", logs.String())
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("corpus dir exists (%v) although no frame was known", err)
	}
}

// TestFaultGuardBounds: repeated faults are counted every time, logged at
// most once per interval, and written at most MaxCorpusFiles times, once
// per distinct frame.
func TestFaultGuardBounds(t *testing.T) {
	dir := t.TempDir()
	var logs logBuffer
	var counters Counters
	g := NewFaultGuard(FaultOptions{CorpusDir: dir, MaxCorpusFiles: 3, LogInterval: time.Hour, Logger: logs.logger()}, &counters, 1)
	c := &collector{}
	p := &panicky{guard: func() *FaultGuard { return g }, mark: true, next: c}
	for i := range 10 {
		b := udpFrame(1, uint32(i%5), 64) // 5 distinct frames, each twice
		copy(b[testPayloadOff+testMinPayload:], faultMarker)
		g.Deliver(p, []Frame{{Data: []Buffer{{Data: b}}, Len: len(b)}})
	}
	if n := counters.Faults.Load(); n != 10 {
		t.Errorf("Faults = %d, want 10", n)
	}
	if n := strings.Count(logs.String(), "contained a fault"); n != 1 {
		t.Errorf("%d log lines within one interval, want 1", n)
	}
	files, _ := os.ReadDir(dir)
	if len(files) != 3 {
		t.Errorf("%d corpus files, want MaxCorpusFiles = 3", len(files))
	}
}

func TestFaultCorpusRoundTrip(t *testing.T) {
	for _, tc := range []struct{ frame, vnet []byte }{
		{nil, nil},
		{[]byte("\x00\x01\xff\"\\\n)"), []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{bytes.Repeat([]byte{0xab}, 70000), nil},
	} {
		frame, vnet, err := UnmarshalFaultCorpus(MarshalFaultCorpus(tc.frame, tc.vnet))
		if err != nil || !bytes.Equal(frame, tc.frame) || !bytes.Equal(vnet, tc.vnet) {
			t.Errorf("round trip of %d+%d bytes: got %d+%d bytes, %v", len(tc.frame), len(tc.vnet), len(frame), len(vnet), err)
		}
	}
	for _, bad := range []string{"", "go test fuzz v2\n", "go test fuzz v1\n[]byte(\"a\")\n", "go test fuzz v1\nstring(\"a\")\n[]byte(\"\")\n", "go test fuzz v1\n[]byte(\"a)\n[]byte(\"\")\n"} {
		if _, _, err := UnmarshalFaultCorpus([]byte(bad)); err == nil {
			t.Errorf("UnmarshalFaultCorpus(%q) = nil error", bad)
		}
	}
}

// deliverPlain is how a Link delivered before FaultGuard: one call through
// the Deliverer interface, which the compiler cannot see through here
// either.
//
//go:noinline
func deliverPlain(d Deliverer, frames []Frame) { d.Deliver(frames) }

// BenchmarkDeliverGuard is the cost of fault containment at the delivery
// boundary: a batch handed to a Deliverer directly (guard=off) and through
// FaultGuard.Deliver with the Deliverer reporting each frame (guard=on).
//
//	go test ./dataplane -run '^$' -bench BenchmarkDeliverGuard -count 5
func BenchmarkDeliverGuard(b *testing.B) {
	for _, batch := range []int{1, 8, 64} {
		frames := make([]Frame, batch)
		for i := range frames {
			d := udpFrame(1, uint32(i), 64)
			frames[i] = Frame{Data: []Buffer{{Data: d}}, Len: len(d)}
		}
		var counters Counters
		g := NewFaultGuard(FaultOptions{}, &counters, 1)
		var sink int
		handle := func(fs []Frame, mark bool) {
			for i := range fs {
				if mark {
					g.Handling(fs[i].Processor, i)
				}
				sink += int(fs[i].Head()[23]) // touch the frame, as a parser would
			}
		}
		off := DelivererFunc(func(fs []Frame) { handle(fs, false) })
		on := DelivererFunc(func(fs []Frame) { handle(fs, true) })
		b.Run(fmt.Sprintf("batch=%d/guard=off", batch), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				deliverPlain(off, frames)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/frame")
		})
		b.Run(fmt.Sprintf("batch=%d/guard=on-unmarked", batch), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				g.Deliver(off, frames)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/frame")
		})
		b.Run(fmt.Sprintf("batch=%d/guard=on", batch), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				g.Deliver(on, frames)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/frame")
		})
		_ = sink
	}
}
