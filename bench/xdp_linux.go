package bench

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	gxdpep "gvisor.dev/gvisor/pkg/tcpip/link/xdp"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/sluicenet/sluice/bpf"
	"github.com/sluicenet/sluice/internal/netns"
	"github.com/sluicenet/sluice/xdp"
)

// attachXDP is attach for ModeXDP: the endpoints of newXDPEndpoint with
// nothing beyond each implementation's defaults.
func attachXDP(topo *topology, m measurement) (*attached, error) {
	return newXDPEndpoint(topo, m.impl, xdpConfig{channels: m.channels})
}

// xdpConfig is what newXDPEndpoint gives an xdp endpoint beyond what it
// fixes (MTU, MAC, RX checksum offload).
type xdpConfig struct {
	channels int
	// gsoMaxSize is sluice's EndpointOptions.GSOMaxSize (it segments in
	// software); gVisor's xdp endpoint has no GSO, so callers must not
	// ask it for any.
	gsoMaxSize uint32
	// gro is both endpoints' GRO option.
	gro bool
}

// newXDPEndpoint makes impl's xdp endpoint on va: va gets one rx and tx
// queue per channel (and vb as many, so that flows spread over them),
// sluice's redirect program, and AF_XDP sockets, each implementation with
// its own defaults apart from what c and the fixed options set. gVisor's
// endpoint reads one queue only and has no GSO; for more channels, or with
// GSO asked for, it is not measured (errNotMeasured).
func newXDPEndpoint(topo *topology, impl string, c xdpConfig) (_ *attached, err error) {
	if impl == ImplGVisor && c.channels != 1 {
		return nil, fmt.Errorf("gVisor's xdp endpoint reads a single rx queue (its Options.QueueID): %w", errNotMeasured)
	}
	if impl == ImplGVisor && c.gsoMaxSize != 0 {
		return nil, fmt.Errorf("gVisor's xdp endpoint has no GSO (pkg/tcpip/link/xdp sets no GSOOptions): %w", errNotMeasured)
	}
	if err := setChannels(topo, c.channels); err != nil {
		return nil, err
	}
	var undo []func() error
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	undo = append(undo, func() error { return setChannels(topo, 1) })
	switch impl {
	case ImplSluice:
		l, err := xdp.OpenNS(xdp.NSOptions{Netns: topo.nsA, Iface: ifA, LinkOptions: xdp.LinkOptions{
			Endpoint: xdp.EndpointOptions{
				MTU: vethMTU, Address: tcpip.LinkAddress(macA), RXChecksumOffload: true,
				GSOMaxSize: c.gsoMaxSize, GRO: c.gro,
			},
		}})
		if err != nil {
			return nil, fmt.Errorf("bench: sluice xdp endpoint: %w", err)
		}
		undo = append(undo, l.Close)
		if got := l.Sockets.Len(); got != c.channels {
			return nil, fmt.Errorf("bench: sluice xdp endpoint: %d sockets for %d channels", got, c.channels)
		}
		return &attached{ep: l.Endpoint, release: func() error {
			return errors.Join(l.Close(), setChannels(topo, 1))
		}}, nil
	case ImplGVisor:
		a, err := bpf.Attach(bpf.AttachOptions{Netns: topo.nsA, Iface: ifA, Program: bpf.Redirect})
		if err != nil {
			return nil, fmt.Errorf("bench: gvisor xdp endpoint: %w", err)
		}
		undo = append(undo, a.Detach)
		g, err := newGVisorXDP(topo, c.gro)
		if err != nil {
			return nil, err
		}
		undo = append(undo, g.release)
		if err := a.Objects.XSKs.Put(uint32(0), uint32(g.keep)); err != nil {
			g.stop()
			return nil, fmt.Errorf("bench: gvisor xdp endpoint: put its socket in the XSKMAP: %w", err)
		}
		return &attached{ep: g, release: func() error {
			return errors.Join(a.Detach(), g.release(), setChannels(topo, 1))
		}}, nil
	}
	return nil, fmt.Errorf("bench: unknown implementation %q", impl)
}

// newGVisorXDP makes gVisor's xdp endpoint on queue 0 of va as runsc does:
// an AF_XDP socket created and bound inside nsA (the kernel resolves the
// interface index in the socket's namespace) with XDP_USE_NEED_WAKEUP, and
// the endpoint's own defaults (a 2 MiB UMEM of 2 KiB frames, 512-entry
// rings, MTU 1500), GRO as gro says.
func newGVisorXDP(topo *topology, gro bool) (*gvisorXDP, error) {
	g := &gvisorXDP{xsk: -1, keep: -1, stopFD: -1}
	var ep stack.LinkEndpoint
	err := netns.Do(topo.nsA, func() error {
		fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return os.NewSyscallError("socket AF_XDP", err)
		}
		g.xsk = fd
		before, err := fdTable()
		if err != nil {
			return err
		}
		e, err := gxdpep.New(&gxdpep.Options{
			FD:                fd,
			Address:           tcpip.LinkAddress(macA),
			RXChecksumOffload: true,
			InterfaceIndex:    topo.ifindexA,
			// Bound below, with retries: the previous measurement's
			// sockets may still hold the queue for a moment.
			Bind:    false,
			QueueID: 0,
			GRO:     gro,
		})
		after, terr := fdTable()
		if stop := newEventFDs(before, after); len(stop) == 1 {
			g.stopFD = stop[0]
		} else if err == nil {
			err = fmt.Errorf("found %d new eventfds, want the endpoint's stop eventfd: %w", len(stop), terr)
		}
		if err != nil {
			return err
		}
		ep = e
		// What runsc does (runsc/sandbox/xdp.go: xdp.Bind with its
		// EXPERIMENTAL-xdp-need-wakeup flag, true by default), retried
		// while the queue is busy. The need_wakeup flag matters: the
		// endpoint kicks the kernel only when the tx ring asks for it,
		// and without XDP_USE_NEED_WAKEUP it never asks, so in copy
		// mode nothing would be sent until the reader's next poll.
		sa := &unix.SockaddrXDP{Flags: unix.XDP_USE_NEED_WAKEUP, Ifindex: uint32(topo.ifindexA), QueueID: 0}
		deadline := time.Now().Add(queueReleaseWait)
		for {
			err := unix.Bind(fd, sa)
			if err == nil {
				return nil
			}
			if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
				return fmt.Errorf("bind queue 0 of %s: %w", ifA, os.NewSyscallError("bind", err))
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	if err == nil {
		g.keep, err = unix.FcntlInt(uintptr(g.xsk), unix.F_DUPFD_CLOEXEC, 0)
	}
	if err != nil {
		closeFDs(validFDs(g.xsk, g.stopFD))
		return nil, fmt.Errorf("bench: gvisor xdp endpoint: %w", err)
	}
	g.LinkEndpoint = ep
	if g.umem, err = gvisorUMEM(g.LinkEndpoint); err != nil {
		// Measurable, only not releasable: say so, carry on.
		fmt.Fprintf(os.Stderr, "%v (its UMEM stays mapped)\n", err)
	}
	return g, nil
}

func validFDs(fds ...int) []int {
	var out []int
	for _, fd := range fds {
		if fd >= 0 {
			out = append(out, fd)
		}
	}
	return out
}

// setChannels gives va n rx and tx queues, and vb as many, as `ethtool -L
// va rx n tx n` does: a veth sends a frame to the peer's rx queue of the
// same number as the tx queue it went out of (veth_xmit), and the sender's
// tx queue follows the flow hash.
//
// The kernel refuses to take away a queue that still has an AF_XDP socket
// (ethtool_set_channels, EINVAL), and releases a closed socket's queue
// from a workqueue (xp_release_deferred), so right after a measurement the
// change is retried for a while.
func setChannels(topo *topology, n int) error {
	for _, x := range []struct{ ns, dev string }{{topo.nsA, ifA}, {topo.nsB, ifB}} {
		deadline := time.Now().Add(queueReleaseWait)
		for {
			err := netns.Do(x.ns, func() error { return ethtoolSetChannels(x.dev, n) })
			if err == nil {
				break
			}
			if !errors.Is(err, unix.EINVAL) || time.Now().After(deadline) {
				return fmt.Errorf("bench: %d channels on %s: %w", n, x.dev, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return nil
}

// queueReleaseWait bounds the wait for the kernel to release the queues of
// AF_XDP sockets closed by a previous measurement.
const queueReleaseWait = 2 * time.Second
