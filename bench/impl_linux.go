package bench

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	gfdbased "gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/netns"
)

// endpointConfig is what both implementations are given; everything else
// is left at each one's default.
type endpointConfig struct {
	fds  []int // AF_PACKET sockets, already in one fanout group
	mode dataplane.Mode
	mtu  uint32
	addr tcpip.LinkAddress
	// rxChecksumOffload lets the stack accept the partial checksums of
	// the super-frames a TSO veth passes up (runsc's default).
	rxChecksumOffload bool
}

// newEndpoint makes the link endpoint of impl over c.fds. The descriptors
// are borrowed: the caller closes them after stopEndpoint.
func newEndpoint(impl string, c endpointConfig) (stack.LinkEndpoint, error) {
	switch impl {
	case ImplSluice:
		return newSluiceEndpoint(c)
	case ImplGVisor:
		return newGVisorEndpoint(c)
	}
	return nil, fmt.Errorf("bench: unknown implementation %q", impl)
}

// newSluiceEndpoint makes sluice's endpoint.
//
// TODO(bench): package fdbased has no endpoint yet; until it does this is
// gVisor's, so both columns measure the same code. Switch to
// fdbased.New(&fdbased.Options{...}) with the same fields and
// PacketDispatchMode: c.mode when it builds.
func newSluiceEndpoint(c endpointConfig) (stack.LinkEndpoint, error) {
	return newGVisorEndpoint(c)
}

// newGVisorEndpoint makes gVisor's fdbased endpoint, the reference.
func newGVisorEndpoint(c endpointConfig) (stack.LinkEndpoint, error) {
	var mode gfdbased.PacketDispatchMode
	switch c.mode {
	case dataplane.Readv:
		mode = gfdbased.Readv
	case dataplane.RecvMMsg:
		mode = gfdbased.RecvMMsg
	case dataplane.PacketMMap:
		mode = gfdbased.PacketMMap
	default:
		return nil, fmt.Errorf("bench: gvisor endpoint: unknown dispatch mode %v", c.mode)
	}
	isPacket := make([]bool, len(c.fds))
	for i := range isPacket {
		isPacket[i] = true
	}
	ep, err := gfdbased.New(&gfdbased.Options{
		FDs:                c.fds,
		MTU:                c.mtu,
		EthernetHeader:     true,
		Address:            c.addr,
		PacketDispatchMode: mode,
		RXChecksumOffload:  c.rxChecksumOffload,
		// openSockets has already joined the sockets to one fanout
		// group; without PreConfigured the endpoint would try to join
		// another and fail.
		PreConfigured:  true,
		IsPacketSocket: isPacket,
	})
	if err != nil {
		return nil, fmt.Errorf("bench: gvisor endpoint: %w", err)
	}
	return ep, nil
}

// stopEndpoint stops ep's readers as a NIC removal does and waits for them.
func stopEndpoint(ep stack.LinkEndpoint) {
	ep.Attach(nil)
	ep.Close()
	ep.Wait()
}

// fanoutSeq hands out fanout group ids: unique among the sockets of this
// process in nsA, which are the only ones there.
var fanoutSeq atomic.Uint32

// openSockets opens n AF_PACKET sockets (ETH_P_ALL, as runsc opens them)
// bound to ifname inside ns and joined in one PACKET_FANOUT_HASH group.
// The caller owns and closes them.
//
// TODO(bench): switch to dataplane.OpenPacketSockets(dataplane.SocketOptions{
// NetNS: ns, Interface: ifname, Protocol: unix.ETH_P_ALL, FanoutGroup: group}, n)
// when it builds.
func openSockets(ns, ifname string, n int) ([]int, error) {
	group := uint16(fanoutSeq.Add(1))
	return openPacketSockets(ns, ifname, n, group)
}

// openPacketSockets is the stand-in for dataplane.OpenPacketSockets.
func openPacketSockets(ns, ifname string, n int, group uint16) (fds []int, err error) {
	defer func() {
		if err != nil {
			closeFDs(fds)
			fds = nil
		}
	}()
	err = netns.Do(ns, func() error {
		ifi, err := interfaceIndex(ifname)
		if err != nil {
			return err
		}
		for range n {
			fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
			if err != nil {
				return os.NewSyscallError("socket", err)
			}
			fds = append(fds, fd)
			if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi}); err != nil {
				return os.NewSyscallError("bind", err)
			}
			if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT, int(group)|unix.PACKET_FANOUT_HASH<<16); err != nil {
				return os.NewSyscallError("setsockopt PACKET_FANOUT", err)
			}
		}
		return nil
	})
	if err != nil {
		return fds, fmt.Errorf("bench: open packet sockets on %s in %s: %w", ifname, ns, err)
	}
	return fds, nil
}

// interfaceIndex resolves ifname in the calling thread's namespace.
func interfaceIndex(ifname string) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(ifname)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, os.NewSyscallError("ioctl SIOCGIFINDEX "+ifname, err)
	}
	return int(ifr.Uint32()), nil
}

func closeFDs(fds []int) error {
	var errs []error
	for _, fd := range fds {
		if err := unix.Close(fd); err != nil {
			errs = append(errs, os.NewSyscallError("close", err))
		}
	}
	return errors.Join(errs...)
}

// htons converts a 16-bit protocol number to network byte order, as
// AF_PACKET's socket(2) and sockaddr_ll expect.
func htons(v uint16) uint16 { return v<<8 | v>>8 }
