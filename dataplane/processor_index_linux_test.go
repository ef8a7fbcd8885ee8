package dataplane

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Frame.Processor names the delivering goroutine: every frame of a Deliver
// call carries the same one, it is below NumDeliverers and belongs to the
// frame's channel, and no two Deliver calls with the same Processor overlap,
// so a Deliverer may keep unlocked per-goroutine state indexed by it.
func TestFrameProcessorIndex(t *testing.T) {
	for _, procs := range []int{1, 3} {
		t.Run(fmt.Sprintf("processors=%d", procs), func(t *testing.T) {
			const channels, flows, perFlow = 2, 12, 20
			var fds, peers []int
			for range channels {
				a, b := mustSocketpair(t, unix.SOCK_DGRAM)
				fds, peers = append(fds, a), append(peers, b)
			}
			var (
				inFlight [channels * 3]atomic.Int32
				mu       sync.Mutex
				seen     = map[int]bool{}
				errs     []string
				n        atomic.Int64
			)
			fail := func(format string, args ...any) {
				mu.Lock()
				errs = append(errs, fmt.Sprintf(format, args...))
				mu.Unlock()
			}
			var l *Link
			d := DelivererFunc(func(frames []Frame) {
				p := frames[0].Processor
				if p < 0 || p >= l.NumDeliverers() {
					fail("Processor %d outside [0, %d)", p, l.NumDeliverers())
					return
				}
				if inFlight[p].Add(1) != 1 {
					fail("two Deliver calls with Processor %d at once", p)
				}
				for i := range frames {
					f := &frames[i]
					if f.Processor != p {
						fail("one Deliver call mixes Processor %d and %d", p, f.Processor)
					}
					if f.Processor/procs != f.Channel {
						fail("Processor %d does not belong to channel %d", f.Processor, f.Channel)
					}
				}
				mu.Lock()
				seen[p] = true
				mu.Unlock()
				// Widen the window in which an overlap would show.
				time.Sleep(50 * time.Microsecond)
				inFlight[p].Add(-1)
				n.Add(int64(len(frames)))
			})
			l = mustLink(t, LinkOptions{FDs: fds, Mode: RecvMMsg, EthernetHeader: true, ProcessorsPerChannel: procs}, d)
			if got, want := l.NumDeliverers(), channels*procs; got != want {
				t.Fatalf("NumDeliverers = %d, want %d", got, want)
			}
			l.Start()
			sent := 0
			for seq := range perFlow {
				for flow := range flows {
					writeAll(t, peers[flow%channels], udpFrame(flow, uint32(seq), 20))
					sent++
				}
			}
			if !waitUntil(10*time.Second, func() bool { return n.Load() == int64(sent) }) {
				t.Fatalf("delivered %d of %d frames; Stats %+v", n.Load(), sent, l.Stats())
			}
			mu.Lock()
			defer mu.Unlock()
			for _, e := range errs {
				t.Error(e)
			}
			if procs > 1 && len(seen) < channels*2 {
				// 12 flows over 3 processors per channel: more than
				// one processor per channel must have delivered.
				t.Errorf("only processors %v delivered", seen)
			}
		})
	}
}
