//go:build linux

package dataplane

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/testenv"
)

// vethLink opens chans fanout sockets on v.A and a Link over them, and a
// packet socket on v.B to send from. Everything is closed in t.Cleanup, the
// link first.
func vethLink(t *testing.T, v *testenv.Veth, chans int, o LinkOptions, d Deliverer) (l *Link, tx int) {
	t.Helper()
	fds, err := OpenPacketSockets(SocketOptions{NetNS: v.NSA, Interface: v.A, RcvBufBytes: 8 << 20, VnetHdr: o.VnetHdr}, chans)
	if err != nil {
		t.Fatal(err)
	}
	tx, err = OpenPacketSocket(SocketOptions{NetNS: v.NSB, Interface: v.B, SndBufBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, fd := range append(fds, tx) {
			unix.Close(fd)
		}
	})
	o.FDs = fds
	l = mustLink(t, o, d)
	if o.Mode == PacketMMap {
		for i := range l.NumChannels() {
			if l.Mode(i) == PacketMMap {
				continue
			}
			if err := l.chans[i].fallbackErr; errors.Is(err, ErrNotSupported) {
				t.Skipf("PacketMMap not available (newMMapDispatcher: %v)", err)
			} else {
				t.Fatalf("channel %d fell back from PacketMMap to %v on an AF_PACKET socket: %v", i, l.Mode(i), err)
			}
		}
	}
	return l, tx
}

// For each mode, 1 and 2 channels, 1 and 2 processors: 2000 frames of 16
// flows sent from the peer namespace arrive exactly once, each flow in order
// and on one channel, with the stats to match.
func TestLinkReceiveVeth(t *testing.T) {
	testenv.RequireRoot(t)
	const flows, perFlow = 16, 125
	for _, mode := range Modes {
		for _, chans := range []int{1, 2} {
			for _, procs := range []int{1, 2} {
				t.Run(fmt.Sprintf("%v/channels=%d/procs=%d", mode, chans, procs), func(t *testing.T) {
					v := quietVeth(t)
					alloc := &countingAlloc{}
					c := &collector{alloc: alloc}
					l, tx := vethLink(t, v, chans, LinkOptions{Mode: mode, EthernetHeader: true, ProcessorsPerChannel: procs, Allocator: alloc}, c)
					l.Start()
					var nbytes uint64
					sent := 0
					for seq := range perFlow {
						for flow := range flows {
							f := udpFrame(flow, uint32(seq), 18+(seq*37+flow*101)%1400)
							writeAll(t, tx, f)
							nbytes += uint64(len(f))
							sent++
						}
						// Pace the sender: the receive path (socket
						// buffer, netdev backlog) has room for a few
						// hundred frames, not for 2000.
						if !c.waitFor(sent-256, 10*time.Second) {
							t.Fatalf("stalled: %d of %d frames delivered; Stats %+v", c.n.Load(), sent, l.Stats())
						}
					}
					if !c.waitFor(sent, 10*time.Second) {
						t.Fatalf("%d of %d frames delivered; Stats %+v", c.n.Load(), sent, l.Stats())
					}
					perChan := checkFlows(t, c.frames(), flows, perFlow)
					if chans == 2 && (perChan[0] == 0 || perChan[1] == 0) {
						t.Errorf("frames per channel %v: want both channels used", perChan)
					}
					want := Stats{RxPackets: uint64(sent), RxBytes: nbytes}
					if st := l.Stats(); st != want {
						t.Errorf("Stats = %+v, want %+v", st, want)
					}
					l.Close()
					l.Wait()
					if n := alloc.out.Load(); n != 0 {
						t.Errorf("%d buffers not freed after Wait", n)
					}
				})
			}
		}
	}
}

// Malformed input on a real packet socket: the kernel refuses to send a
// frame shorter than an Ethernet header on veth (dev_validate_header), so a
// runt cannot arrive; a header-only frame arrives unpadded and is delivered;
// a frame over MaxFrameSize is counted and dropped, and the link reads on.
func TestLinkMalformedVeth(t *testing.T) {
	testenv.RequireRoot(t)
	for _, mode := range Modes {
		t.Run(mode.String(), func(t *testing.T) {
			v := quietVeth(t)
			alloc := &countingAlloc{}
			c := &collector{alloc: alloc}
			l, tx := vethLink(t, v, 1, LinkOptions{Mode: mode, EthernetHeader: true, MaxFrameSize: 200, Allocator: alloc}, c)
			l.Start()

			runt := udpFrame(0, 0, 0)[:10]
			if _, err := unix.Write(tx, runt); !errors.Is(err, unix.EINVAL) {
				t.Errorf("sending a 10-byte frame on veth: %v, want EINVAL (if the kernel now sends runts, test that they count as RxErrors)", err)
			}
			hdrOnly := udpFrame(0, 0, 0)[:14]
			writeAll(t, tx, hdrOnly)
			if !c.waitFor(1, 10*time.Second) {
				t.Fatalf("header-only frame not delivered; Stats %+v", l.Stats())
			}
			if got := c.frames()[0].data; len(got) != 14 {
				t.Errorf("header-only frame arrived as %d bytes, want 14", len(got))
			}

			writeAll(t, tx, udpFrame(0, 0, 300), udpFrame(0, 0, 200-testHdrLen+1), udpFrame(0, 0, 200-testHdrLen))
			if !c.waitFor(2, 10*time.Second) {
				t.Fatalf("the good frame after the oversized ones never arrived; Stats %+v", l.Stats())
			}
			got := c.frames()
			if len(got) != 2 || len(got[1].data) != 200 {
				t.Errorf("delivered %d frames, want 2 (the second of 200 bytes)", len(got))
			}
			if st := l.Stats(); st.RxErrors != 2 || st.RxPackets != 2 || st.RxBytes != 214 {
				t.Errorf("Stats = %+v, want 2 errors and 2 packets of 214 bytes", st)
			}
			l.Close()
			l.Wait()
			if n := alloc.out.Load(); n != 0 {
				t.Errorf("%d buffers not freed after Wait", n)
			}
		})
	}
}
