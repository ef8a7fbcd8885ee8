package fdbased

import (
	"bytes"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/offloadtest"
	"github.com/sluicenet/sluice/qdisc"
)

// Host GSO: a super-segment leaves as one frame behind the virtio_net_hdr
// KERNEL-NOTES specifies, whose partial checksum completes to a valid one;
// a segment no larger than the MSS leaves with NEEDS_CSUM and no GSO type.
func TestWriteHostGSOHeader(t *testing.T) {
	payload := offloadtest.Payload(0, 30000)
	for _, tc := range []struct {
		name string
		v6   bool
		eth  bool
		want dataplane.VnetHdr
	}{
		{"ipv4 ethernet", false, true, dataplane.VnetHdr{Flags: 1, GSOType: dataplane.VnetGSOTCPv4, HdrLen: 54, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}},
		{"ipv6 ethernet", true, true, dataplane.VnetHdr{Flags: 1, GSOType: dataplane.VnetGSOTCPv6, HdrLen: 74, GSOSize: 1448, CsumStart: 54, CsumOffset: 16}},
		{"ipv4 tun", false, false, dataplane.VnetHdr{Flags: 1, GSOType: dataplane.VnetGSOTCPv4, HdrLen: 40, GSOSize: 1448, CsumStart: 20, CsumOffset: 16}},
		{"ipv6 tun", true, false, dataplane.VnetHdr{Flags: 1, GSOType: dataplane.VnetGSOTCPv6, HdrLen: 60, GSOSize: 1448, CsumStart: 40, CsumOffset: 16}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ep, peer := pairEndpoint(t, Options{EthernetHeader: tc.eth, GSOMaxSize: 65536})
			if ep.SupportedGSO() != stack.HostGSOSupported || ep.GSOMaxSize() != 65536 {
				t.Errorf("SupportedGSO %v GSOMaxSize %d", ep.SupportedGSO(), ep.GSOMaxSize())
			}
			typ := stack.GSOTCPv4
			if tc.v6 {
				typ = stack.GSOTCPv6
			}
			small := offloadtest.Payload(0, 1000)
			if n, err := writePkts(t, ep, tcpPacket(tc.v6, tc.eth, payload, typ, 1448, header.TCPFlagAck|header.TCPFlagPsh),
				tcpPacket(tc.v6, tc.eth, small, typ, 1448, header.TCPFlagAck)); n != 2 || err != nil {
				t.Fatalf("WritePackets = %d, %v", n, err)
			}
			hs, fs := readFrames(t, peer, 2, true)
			noMoreFrames(t, peer)
			if hs[0] != tc.want {
				t.Errorf("super-segment header %+v, want %+v", hs[0], tc.want)
			}
			l3 := 0
			if tc.eth {
				l3 = 14
			}
			for i, want := range [][]byte{payload, small} {
				_, got, err := checkL4(fs[i], l3, hs[i])
				if err != nil {
					t.Errorf("frame %d: %v", i, err)
				} else if !bytes.Equal(got, want) {
					t.Errorf("frame %d: payload differs", i)
				}
			}
			if want := (dataplane.VnetHdr{Flags: 1, CsumStart: tc.want.CsumStart, CsumOffset: 16}); hs[1] != want {
				t.Errorf("single segment header %+v, want %+v", hs[1], want)
			}
			if err := hs[0].ValidateFrame(fs[0], len(fs[0]), tc.eth); err != nil {
				t.Errorf("our own header does not validate: %v", err)
			}
		})
	}
}

// Software GSO: a super-segment leaves as MSS-sized frames in one batch,
// each with right headers and a full checksum, or with a partial one behind
// NEEDS_CSUM when there is a virtio_net_hdr.
func TestWriteSoftwareGSO(t *testing.T) {
	payload := offloadtest.Payload(3, 64000)
	for _, v6 := range []bool{false, true} {
		// The MSS of a 1500-byte MTU, as gVisor's TCP sets it.
		mss := 1460
		if v6 {
			mss = 1440
		}
		segs := (len(payload) + mss - 1) / mss
		for _, vnet := range []bool{false, true} {
			t.Run(fmt.Sprintf("ipv6=%t/vnet=%t", v6, vnet), func(t *testing.T) {
				ep, peer := pairEndpoint(t, Options{EthernetHeader: true, GSOMaxSize: 65536, GVisorGSOEnabled: true, VnetHdr: vnet})
				typ := stack.GSOTCPv4
				if v6 {
					typ = stack.GSOTCPv6
				}
				if n, err := writePkts(t, ep, tcpPacket(v6, true, payload, typ, uint16(mss), header.TCPFlagAck|header.TCPFlagPsh)); n != 1 || err != nil {
					t.Fatalf("WritePackets = %d, %v", n, err)
				}
				hs, fs := readFrames(t, peer, segs, vnet)
				noMoreFrames(t, peer)
				var got []byte
				for i, f := range fs {
					if vnet != (hs[i].Flags == dataplane.VnetFlagNeedsCsum) || hs[i].IsGSO() {
						t.Errorf("segment %d: header %+v (vnet %t)", i, hs[i], vnet)
					}
					if len(f) > 1514 {
						t.Errorf("segment %d: %d bytes, above the MTU", i, len(f))
					}
					l4, p, err := checkL4(f, 14, hs[i])
					if err != nil {
						t.Fatalf("segment %d: %v", i, err)
					}
					tcp := header.TCP(f[l4:])
					if want := uint32(1<<20 + i*mss); tcp.SequenceNumber() != want {
						t.Errorf("segment %d: seq %d, want %d", i, tcp.SequenceNumber(), want)
					}
					if psh := tcp.Flags().Contains(header.TCPFlagPsh); psh != (i == segs-1) {
						t.Errorf("segment %d: PSH %t", i, psh)
					}
					if !v6 {
						if id := header.IPv4(f[14:]).ID(); id != uint16(100+i) {
							t.Errorf("segment %d: IP ID %d, want %d", i, id, 100+i)
						}
					}
					got = append(got, p...)
				}
				if !bytes.Equal(got, payload) {
					t.Errorf("payload of the segments differs from the super-segment's")
				}
				if st := ep.Stats(); st.TxPackets != uint64(segs) {
					t.Errorf("TxPackets %d, want %d frames", st.TxPackets, segs)
				}
			})
		}
	}
}

// Without a virtio_net_hdr nothing completes a partial checksum, so the
// endpoint does: a host-GSO-style segment (seeded checksum) leaves with a
// full one.
func TestWriteCompletesPartialChecksum(t *testing.T) {
	ep, peer := pairEndpoint(t, Options{EthernetHeader: true, GSOMaxSize: 65536, GVisorGSOEnabled: true})
	for _, v6 := range []bool{false, true} {
		typ := stack.GSOTCPv4
		if v6 {
			typ = stack.GSOTCPv6
		}
		p := offloadtest.Payload(1, 777) // odd length: the sum's last byte is padded
		writePkts(t, ep, tcpPacket(v6, true, p, typ, 1448, header.TCPFlagAck))
		hs, fs := readFrames(t, peer, 1, false)
		if _, got, err := checkL4(fs[0], 14, hs[0]); err != nil || !bytes.Equal(got, p) {
			t.Errorf("ipv6=%t: %v (payload equal %t)", v6, err, bytes.Equal(got, p))
		}
	}
}

// TX checksum offload is a capability only behind a virtio_net_hdr, where
// the endpoint seeds the checksums the stack left out and flags them
// NEEDS_CSUM; without one it is refused, and says why.
func TestTXChecksumOffload(t *testing.T) {
	t.Run("with a virtio_net_hdr", func(t *testing.T) {
		ep, peer := pairEndpoint(t, Options{EthernetHeader: true, VnetHdr: true, TXChecksumOffload: true})
		if ep.Capabilities()&stack.CapabilityTXChecksumOffload == 0 {
			t.Fatalf("capability not advertised: %s", ep.Offloads())
		}
		for _, v6 := range []bool{false, true} {
			p := offloadtest.Payload(0, 101)
			writePkts(t, ep, udpPacket(v6, true, p), tcpPacket(v6, true, p, stack.GSONone, 0, header.TCPFlagAck))
			hs, fs := readFrames(t, peer, 2, true)
			for i, f := range fs {
				if hs[i].Flags != dataplane.VnetFlagNeedsCsum {
					t.Errorf("ipv6=%t frame %d: header %+v, want NEEDS_CSUM", v6, i, hs[i])
				}
				if _, got, err := checkL4(f, 14, hs[i]); err != nil || !bytes.Equal(got, p) {
					t.Errorf("ipv6=%t frame %d: %v", v6, i, err)
				}
			}
		}
	})
	t.Run("without a virtio_net_hdr", func(t *testing.T) {
		ep, peer := pairEndpoint(t, Options{EthernetHeader: true, TXChecksumOffload: true})
		if ep.Capabilities()&stack.CapabilityTXChecksumOffload != 0 {
			t.Fatal("TX checksum offload advertised without a virtio_net_hdr")
		}
		s, _ := ep.Offloads().Get(dataplane.OffloadTxChecksum)
		if !s.Requested || s.Effective || !strings.Contains(s.Reason, "no virtio_net_hdr") {
			t.Errorf("report: %+v", s)
		}
		// The stack, not told, computes the checksum; the endpoint
		// leaves it alone.
		p := offloadtest.Payload(0, 100)
		writePkts(t, ep, tcpPacket(false, true, p, stack.GSONone, 0, header.TCPFlagAck))
		hs, fs := readFrames(t, peer, 1, false)
		if _, _, err := checkL4(fs[0], 14, hs[0]); err != nil {
			t.Error(err)
		}
	})
}

// With the FIFO qdisc and a writer that cannot write, queues fill and
// packets are dropped, counted in TxDropped and the qdisc's counters, and
// WritePackets says ErrNoBufferSpace.
func TestQdiscDropsCounted(t *testing.T) {
	ep, _, fd := pairEndpointFDs(t, Options{EthernetHeader: true, Qdisc: qdisc.FIFO, QdiscQueueLen: 4, QdiscMaxWait: -1})
	// A send buffer of a few frames that nobody drains: the drainer's
	// write waits (up to a second), the queue fills behind it, and every
	// further packet is dropped at once (QdiscMaxWait < 0).
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096); err != nil {
		t.Fatal(err)
	}
	p := offloadtest.Payload(0, 60000)
	var noSpace, sent int
	for range 400 {
		sent++
		_, err := writePkts(t, ep, udpPacket(false, true, p[:1400]))
		if _, ok := err.(*tcpip.ErrNoBufferSpace); ok {
			noSpace++
		}
	}
	qs := ep.QdiscStats()
	st := ep.Stats()
	t.Logf("qdisc %+v, link %+v", qs, st)
	if noSpace == 0 || qs.Dropped != uint64(noSpace) {
		t.Errorf("%d ErrNoBufferSpace, qdisc dropped %d: want the same, above 0", noSpace, qs.Dropped)
	}
	if qs.Enqueued+qs.Dropped != uint64(sent) {
		t.Errorf("enqueued %d + dropped %d != %d sent", qs.Enqueued, qs.Dropped, sent)
	}
	if st.TxDropped < qs.Dropped {
		t.Errorf("TxDropped %d does not count the qdisc's %d drops", st.TxDropped, qs.Dropped)
	}
}

// Writing a software-GSO batch allocates nothing once the pools are warm.
func TestWriteAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	ep, peer := pairEndpoint(t, Options{EthernetHeader: true, GSOMaxSize: 65536, GVisorGSOEnabled: true})
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 70000)
		for !stop.Load() {
			pfd := []unix.PollFd{{Fd: int32(peer), Events: unix.POLLIN}}
			if n, _ := unix.Poll(pfd, 20); n > 0 {
				unix.Read(peer, buf)
			}
		}
	}()
	defer func() { stop.Store(true); <-done }()
	payload := offloadtest.Payload(0, 64000)
	pkt := tcpPacket(false, true, payload, stack.GSOTCPv4, 1448, header.TCPFlagAck)
	defer pkt.DecRef()
	list := []*stack.PacketBuffer{pkt}
	for range 5 {
		ep.writeList(list)
	}
	allocs := testing.AllocsPerRun(50, func() {
		if n, err := ep.writeList(list); n != 1 || err != nil {
			t.Fatalf("writeList = %d, %v", n, err)
		}
	})
	if allocs > 0 {
		t.Errorf("%.1f allocations per 45-segment software GSO write, want 0", allocs)
	}
}

// BenchmarkBuildBatch measures the endpoint's own cost of turning one
// 64000-byte TCP super-segment into frames for sendmmsg, without the system
// call: whole behind a GSO virtio_net_hdr (host GSO: one frame, nothing
// copied), or cut into 45 frames with full or partial checksums (software
// GSO: one copy to make the packet contiguous, plus the checksums).
func BenchmarkBuildBatch(b *testing.B) {
	payload := offloadtest.Payload(0, 64000)
	for _, bc := range []struct {
		name string
		opts Options
	}{
		{"gso=host", Options{GSOMaxSize: 65536}},
		{"gso=software/checksum=full", Options{GSOMaxSize: 65536, GVisorGSOEnabled: true}},
		{"gso=software/checksum=partial", Options{GSOMaxSize: 65536, GVisorGSOEnabled: true, VnetHdr: true}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			bc.opts.EthernetHeader = true
			ep, _ := pairEndpoint(b, bc.opts)
			pkt := tcpPacket(false, true, payload, stack.GSOTCPv4, 1448, header.TCPFlagAck)
			defer pkt.DecRef()
			tb := new(txBatch)
			b.ReportAllocs()
			b.SetBytes(int64(len(payload)))
			for b.Loop() {
				if err := ep.appendPacket(tb, pkt); err != nil {
					b.Fatal(err)
				}
				tb.reset()
			}
		})
	}
}
