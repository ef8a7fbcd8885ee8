//go:build linux

package xdp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/testenv"
)

func TestKernelStructSizes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"struct xdp_desc", unsafe.Sizeof(Desc{}), 16},
		{"struct xdp_umem_reg", unsafe.Sizeof(unix.XDPUmemReg{}), 32},
		{"struct xdp_mmap_offsets", unsafe.Sizeof(unix.XDPMmapOffsets{}), 128},
		{"struct xdp_statistics", unsafe.Sizeof(unix.XDPStatistics{}), 48},
		{"struct ethtool_channels", unsafe.Sizeof(ethtoolChannels{}), 36},
		{"struct ifreq", unsafe.Sizeof(ifreqPtr{}), 40},
		{"Desc.Len offset", unsafe.Offsetof(Desc{}.Len), 8},
		{"Desc.Options offset", unsafe.Offsetof(Desc{}.Options), 12},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: %d bytes, want %d", tc.name, tc.got, tc.want)
		}
	}
}

// TestSocketsReceiveAndSend binds one socket per queue of a two-queue veth
// with a shared UMEM, receives frames of many flows on both queues through
// the redirect program, and sends frames back out of each socket.
func TestSocketsReceiveAndSend(t *testing.T) {
	testenv.RequireRoot(t)
	v := newVethQ(t, 2)
	a := attachRedirect(t, v.NSA, v.A)
	s, err := Open(Device{Netns: v.NSA, Iface: v.A}, Options{NumFrames: 256, RingSize: 64})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if s.Len() != 2 {
		t.Fatalf("%d sockets, want one per queue (2)", s.Len())
	}
	if s.Mode() != BindCopy {
		t.Errorf("bound in %v mode on a veth, want copy (veth has no zero-copy)", s.Mode())
	}
	if err := s.Register(a.Objects.XSKs); err != nil {
		t.Fatal(err)
	}
	_, macA := ifaceInfo(t, v.NSA, v.A)
	_, macB := ifaceInfo(t, v.NSB, v.B)

	// 64 flows, 10 frames each: more than one ring's worth per queue, so
	// the fill ring is recycled many times over.
	const flows, per = 64, 10
	var frames [][]byte
	for i := range per {
		for f := range flows {
			fr := udpFrame(macA, macB, uint16(10000+f), 18+i)
			frames = append(frames, fr)
		}
	}
	// Sent in batches of half a ring, each received before the next goes
	// out: the reader keeps up, so every frame must arrive, and the rings
	// wrap ten times.
	got := map[string]int{}
	perQueue := make([]int, s.Len())
	total := 0
	for start := 0; start < len(frames); start += 32 {
		batch := frames[start:min(start+32, len(frames))]
		sendFrames(t, v.NSB, v.B, batch)
		deadline := time.Now().Add(5 * time.Second)
		for total < start+len(batch) && time.Now().Before(deadline) {
			n := 0
			for i := 0; i < s.Len(); i++ {
				n += s.Socket(i).WithFrames(16, func(fs [][]byte) {
					for _, f := range fs {
						if len(f) >= 34 && binary.BigEndian.Uint16(f[12:]) == 0x0800 && f[23] == 17 {
							got[string(f)]++
							perQueue[i]++
							total++
						}
					}
				})
			}
			if n == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}
	for _, f := range frames {
		if got[string(f)] != 1 {
			st0, _ := s.Socket(0).KernelStats()
			st1, _ := s.Socket(1).KernelStats()
			t.Fatalf("frame of %d bytes received %d times, want once (total %d of %d; kernel stats %+v %+v)", len(f), got[string(f)], total, len(frames), st0, st1)
		}
	}
	for i, n := range perQueue {
		if n == 0 {
			t.Errorf("queue %d received nothing: flows were not spread (%v)", s.Socket(i).Queue(), perQueue)
		}
	}
	for i := 0; i < s.Len(); i++ {
		if bad := s.Socket(i).BadDescs(); bad != [numDescErrors]uint64{} {
			t.Errorf("queue %d refused descriptors: %v", i, bad)
		}
	}

	// Send: 100 frames from each socket, more than its send chunks'
	// ring of 64, so chunks come back through the completion ring.
	rcv := newPacketReceiver(t, v.NSB, v.B)
	var want [][]byte
	for i := 0; i < s.Len(); i++ {
		sk := s.Socket(i)
		for j := 0; j < 100; j++ {
			f := udpFrame(macB, macA, uint16(20000+100*i+j), 30)
			want = append(want, f)
			var n int
			for try := 0; try < 1000 && n == 0; try++ {
				if n = sk.txAcquire(1); n == 0 {
					time.Sleep(100 * time.Microsecond)
				}
			}
			if n != 1 {
				t.Fatalf("queue %d: no tx slot after frame %d", i, j)
			}
			copy(sk.txFrame(0), f)
			if err := sk.txCommit([]int{len(f)}); err != nil {
				t.Fatalf("queue %d: commit: %v", i, err)
			}
		}
	}
	sent := rcv.receive(10*time.Second, len(want), func(b []byte) bool {
		return len(b) > 34 && bytes.Equal(b[:6], macB) && b[23] == 17
	})
	if len(sent) != len(want) {
		t.Fatalf("peer received %d of %d frames sent", len(sent), len(want))
	}
	seen := map[string]bool{}
	for _, f := range sent {
		seen[string(f)] = true
	}
	for _, f := range want {
		if !seen[string(f)] {
			t.Fatalf("frame to port %d did not arrive intact", binary.BigEndian.Uint16(f[34:]))
		}
	}
	for i := 0; i < s.Len(); i++ {
		st, err := s.Socket(i).KernelStats()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("queue %d kernel stats %+v", i, st)
	}
}

// TestZeroCopyRefusedOnVeth: veth has no AF_XDP zero-copy, so a forced
// zero-copy bind fails with an error that says so and wraps
// dataplane.ErrNotSupported, leaving nothing bound; BindAuto falls back to
// copy mode.
func TestZeroCopyRefusedOnVeth(t *testing.T) {
	testenv.RequireRoot(t)
	v := newVethQ(t, 1)
	_, err := Open(Device{Netns: v.NSA, Iface: v.A}, Options{BindMode: BindZeroCopy, NumFrames: 64, RingSize: 32})
	if !errors.Is(err, dataplane.ErrNotSupported) || !errors.Is(err, unix.EOPNOTSUPP) || !strings.Contains(err.Error(), "zero-copy") {
		t.Fatalf("zero-copy bind on veth: %v, want EOPNOTSUPP wrapped in ErrNotSupported", err)
	}
	s, err := Open(Device{Netns: v.NSA, Iface: v.A}, Options{NumFrames: 64, RingSize: 32})
	if err != nil {
		t.Fatalf("auto bind after the refused one: %v", err)
	}
	defer s.Close()
	if s.Mode() != BindCopy || s.Socket(0).ZeroCopy() {
		t.Errorf("auto bind on veth: %v mode, want copy", s.Mode())
	}
}

// TestOpenErrors: what a caller can get wrong is named in the error.
func TestOpenErrors(t *testing.T) {
	testenv.RequireRoot(t)
	v := newVethQ(t, 2)
	for _, tc := range []struct {
		name string
		dev  Device
		want string
	}{
		{"no interface", Device{Netns: v.NSA}, "Device.Iface: required"},
		{"unknown interface", Device{Netns: v.NSA, Iface: "nosuch0"}, `interface "nosuch0"`},
		{"queue beyond the device", Device{Netns: v.NSA, Iface: v.A, Queues: []int{2}}, "has 2 rx queues: no queue 2"},
		{"queue twice", Device{Netns: v.NSA, Iface: v.A, Queues: []int{1, 1}}, "queue 1 of va given twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(tc.dev, Options{NumFrames: 64, RingSize: 32})
			if err == nil {
				s.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
	if k := xdpSocketsHeld(t); k != 0 {
		t.Errorf("%d AF_XDP sockets left open by failed Opens", k)
	}
}

// TestReflushSendsLeftovers: frames left in the tx ring without a kick (as
// when the kernel stopped at a full device queue) go out on the endpoint's
// reflush timer, with no further write to push them.
func TestReflushSendsLeftovers(t *testing.T) {
	testenv.RequireRoot(t)
	v := newVethQ(t, 1)
	l, err := OpenNS(NSOptions{Netns: v.NSA, Iface: v.A})
	l = mustLink(t, l, err)
	_, macA := ifaceInfo(t, v.NSA, v.A)
	_, macB := ifaceInfo(t, v.NSB, v.B)
	rcv := newPacketReceiver(t, v.NSB, v.B)
	q := l.Endpoint.queues[0]
	f := udpFrame(macB, macA, 4242, 30)
	q.mu.Lock()
	sk := q.sk
	if sk.txAcquire(1) != 1 {
		q.mu.Unlock()
		t.Fatal("no tx slot")
	}
	copy(sk.txFrame(0), f)
	sk.TX.Set(sk.txIdx, Desc{Addr: sk.txChunks[0], Len: uint32(len(f))})
	sk.TX.Submit(1) // published, not kicked
	q.armReflush()
	q.mu.Unlock()
	got := rcv.receive(2*time.Second, 1, func(b []byte) bool { return bytes.Equal(b, f) })
	if len(got) != 1 {
		t.Fatal("the frame left in the tx ring was never sent")
	}
}
