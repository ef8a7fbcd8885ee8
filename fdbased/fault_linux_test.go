package fdbased

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicenet/sluice/internal/syncbuf"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/offloadtest"
	"github.com/sluicenet/sluice/internal/stackrx"
)

// faultMarker in a packet makes the test's sinkFault panic: a stand-in for
// a netstack bug that one hostile frame trips.
var faultMarker = []byte("FAULT-MARKER")

// TestEndpointContainsFault: a frame that makes the stack panic is dropped,
// counted in Stats.Faults, logged and written to the corpus directory,
// while the frames after it (written in the same burst, so read in the same
// batch with recvmmsg) reach the stack in order. The corpus file then
// replays through FuzzEndpointFrame's body without the fault.
func TestEndpointContainsFault(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"plain", Options{PacketDispatchMode: dataplane.RecvMMsg}},
		{"vnet+gro", Options{PacketDispatchMode: dataplane.RecvMMsg, VnetHdr: true, GRO: true}},
		{"readv", Options{PacketDispatchMode: dataplane.Readv}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "corpus")
			var logs syncbuf.Buffer
			opts := tc.opts
			opts.Faults = dataplane.FaultOptions{CorpusDir: dir, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
			opts.sinkFault = func(pkt *stack.PacketBuffer) {
				if v := pkt.ToView(); bytes.Contains(v.AsSlice(), faultMarker) {
					v.Release()
					panic("test fault: the stack choked on a frame")
				} else {
					v.Release()
				}
			}
			p := newPairStack(t, opts)
			var markerFrame []byte
			var want [][]byte
			for i := range 6 {
				payload := []byte(fmt.Sprintf("datagram %d", i))
				if i == 2 {
					payload = append([]byte("x "), faultMarker...)
				}
				f := offloadtest.Build(inbound(offloadtest.Packet{UDP: true, Payload: payload}))
				if i == 2 {
					markerFrame = f
				} else {
					want = append(want, payload)
				}
				p.send(t, dataplane.VnetHdr{}, f)
			}
			for _, w := range want {
				if got := p.recv(t, false); !bytes.Equal(got, w) {
					t.Fatalf("got %q, want %q: the frames after the fault must arrive, in order", got, w)
				}
			}
			if st := p.ep.Stats(); st.Faults != 1 {
				t.Errorf("Stats.Faults = %d, want 1 (stats %+v)", st.Faults, st)
			}
			if s := logs.String(); !strings.Contains(s, "test fault: the stack choked") || !strings.Contains(s, "corpus_file=") {
				t.Errorf("fault not logged with its panic and corpus file:\n%s", s)
			}
			files, err := os.ReadDir(dir)
			if err != nil || len(files) != 1 {
				t.Fatalf("corpus dir: %v, %d files, want 1", err, len(files))
			}
			data, err := os.ReadFile(filepath.Join(dir, files[0].Name()))
			if err != nil {
				t.Fatal(err)
			}
			frame, vnet, err := dataplane.UnmarshalFaultCorpus(data)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(frame, markerFrame) {
				t.Errorf("corpus frame is %d bytes %x, want the %d-byte marker frame", len(frame), frame[:min(len(frame), 32)], len(markerFrame))
			}
			if wantVnet := opts.VnetHdr; (len(vnet) == dataplane.VnetHdrLen) != wantVnet {
				t.Errorf("corpus vnet header %x; want one: %v", vnet, wantVnet)
			}
			// The replay: the fuzz target's body takes the file's
			// values as it takes any seed.
			endpointFrame(t, fuzzStacks(t), frame, vnet)
		})
	}
}

// endpointStacks are FuzzEndpointFrame's two netstacks: one on an endpoint
// that reads plain frames (the stack verifies checksums) and one that reads
// frames behind a virtio_net_hdr, with GRO.
type endpointStacks struct {
	plain, vnet *pairStack
}

// fuzzStacks builds the stacks, each with a UDP socket on port 2000 and a
// TCP listener on port 80 of both addresses, so that frames reach
// connection handling and not only the IP layer.
func fuzzStacks(tb testing.TB) *endpointStacks {
	tb.Helper()
	s := &endpointStacks{
		plain: newPairStack(tb, Options{PacketDispatchMode: dataplane.RecvMMsg}),
		vnet:  newPairStack(tb, Options{PacketDispatchMode: dataplane.RecvMMsg, VnetHdr: true, GRO: true}),
	}
	for _, p := range []*pairStack{s.plain, s.vnet} {
		for _, a := range []struct {
			addr  tcpip.Address
			proto tcpip.NetworkProtocolNumber
		}{{stackAddr4, ipv4.ProtocolNumber}, {stackAddr6, ipv6.ProtocolNumber}} {
			l, err := gonet.ListenTCP(p.s, tcpip.FullAddress{NIC: 1, Addr: a.addr, Port: 80}, a.proto)
			if err != nil {
				tb.Fatal(err)
			}
			tb.Cleanup(func() { l.Close() })
		}
	}
	return s
}

// endpointFrame pushes one frame through an endpoint into its netstack, as
// the endpoint's reader would after reading it: a vnet header (when vnet
// is not empty) is parsed and checked as the dispatchers check it, and a
// frame they would refuse is not delivered. It calls Deliver directly,
// without the fault guard, so that a panic is the fuzzer's crash.
func endpointFrame(tb testing.TB, s *endpointStacks, frame, vnet []byte) {
	p := s.plain
	var f dataplane.Frame
	if len(vnet) > 0 {
		p = s.vnet
		h, err := dataplane.ParseVnetHdr(vnet)
		if err != nil || h.ValidateFrame(frame, len(frame), true) != nil {
			return
		}
		f.Vnet, f.HasVnet = h, true
	}
	if len(frame) < 14 || len(frame) > 65664 {
		return // the dispatchers count these as errors
	}
	b := stackrx.ViewAllocator{}.Alloc(len(frame))
	copy(b.Data, frame)
	f.Data = []dataplane.Buffer{b}
	f.Len = len(frame)
	f.Hash = dataplane.FlowHash(frame, true, 0)
	p.ep.Deliver([]dataplane.Frame{f})
}

// FuzzEndpointFrame pushes one frame (and its virtio_net_hdr, when vnet is
// not empty) through the endpoint into a real gVisor stack. Frames whose
// handling panicked in a running endpoint are written in this target's
// corpus format (dataplane.FaultGuard, `sluice run --fault-corpus DIR`):
// copy such a file into testdata/fuzz/FuzzEndpointFrame to replay it.
func FuzzEndpointFrame(f *testing.F) {
	var vnet [dataplane.VnetHdrLen]byte
	dataplane.VnetHdr{Flags: dataplane.VnetFlagNeedsCsum, CsumStart: 34, CsumOffset: 16}.Encode(vnet[:])
	seeds := []offloadtest.Packet{
		{UDP: true, Payload: []byte("hello")},
		{UDP: true, V6: true, Payload: []byte("hello")},
		{Flags: offloadtest.SYN, DstPort: 80},
		{V6: true, Flags: offloadtest.SYN, DstPort: 80},
		{Payload: bytes.Repeat([]byte{'a'}, 1400), DstPort: 80},
		{UDP: true, BadL4Csum: true, Payload: []byte("bad")},
	}
	for _, p := range seeds {
		b := offloadtest.Build(inbound(p))
		f.Add(b, []byte(nil))
		f.Add(b, []byte{})
		f.Add(b[:len(b)/2], []byte(nil))
	}
	f.Add(offloadtest.Build(inbound(offloadtest.Packet{Payload: []byte("partial"), PartialL4Csum: true})), vnet[:])
	s := fuzzStacks(f)
	f.Fuzz(func(t *testing.T, frame, vnet []byte) {
		endpointFrame(t, s, frame, vnet)
	})
}
