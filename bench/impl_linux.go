package bench

import (
	"errors"
	"fmt"
	"os"
	"slices"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	gfdbased "gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/fdbased"
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
	// gsoMaxSize is Options.GSOMaxSize: 0 for no GSO. Host GSO
	// (softwareGSO false) needs fds opened with PACKET_VNET_HDR.
	gsoMaxSize uint32
	// softwareGSO is Options.GVisorGSOEnabled.
	softwareGSO bool
	// gro is Options.GRO.
	gro bool
}

// newEndpoint makes the link endpoint of impl over c.fds. The descriptors
// are borrowed: the caller closes them after stopEndpoint. release, never
// nil, frees what the endpoint does not free itself; call it once the
// endpoint has stopped.
func newEndpoint(impl string, c endpointConfig) (ep stack.LinkEndpoint, release func() error, err error) {
	switch impl {
	case ImplSluice:
		ep, err = newSluiceEndpoint(c)
		return ep, func() error { return nil }, err
	case ImplGVisor:
		return newGVisorEndpoint(c)
	}
	return nil, nil, fmt.Errorf("bench: unknown implementation %q", impl)
}

// newSluiceEndpoint makes sluice's endpoint.
func newSluiceEndpoint(c endpointConfig) (stack.LinkEndpoint, error) {
	ep, err := fdbased.New(&fdbased.Options{
		FDs:                c.fds,
		MTU:                c.mtu,
		EthernetHeader:     true,
		Address:            c.addr,
		PacketDispatchMode: c.mode,
		RXChecksumOffload:  c.rxChecksumOffload,
		GSOMaxSize:         c.gsoMaxSize,
		GVisorGSOEnabled:   c.softwareGSO,
		GRO:                c.gro,
	})
	if err != nil {
		return nil, fmt.Errorf("bench: sluice endpoint: %w", err)
	}
	return ep, nil
}

// newGVisorEndpoint makes gVisor's fdbased endpoint, the reference, and
// the release of what it leaks (see gvisorleak_unsafe_linux.go).
func newGVisorEndpoint(c endpointConfig) (stack.LinkEndpoint, func() error, error) {
	var mode gfdbased.PacketDispatchMode
	switch c.mode {
	case dataplane.Readv:
		mode = gfdbased.Readv
	case dataplane.RecvMMsg:
		mode = gfdbased.RecvMMsg
	case dataplane.PacketMMap:
		mode = gfdbased.PacketMMap
	default:
		return nil, nil, fmt.Errorf("bench: gvisor endpoint: unknown dispatch mode %v", c.mode)
	}
	isPacket := make([]bool, len(c.fds))
	for i := range isPacket {
		isPacket[i] = true
	}
	before, err := fdTable()
	if err != nil {
		return nil, nil, fmt.Errorf("bench: gvisor endpoint: %w", err)
	}
	ep, err := gfdbased.New(&gfdbased.Options{
		FDs:                c.fds,
		MTU:                c.mtu,
		EthernetHeader:     true,
		Address:            c.addr,
		PacketDispatchMode: mode,
		RXChecksumOffload:  c.rxChecksumOffload,
		GSOMaxSize:         c.gsoMaxSize,
		GVisorGSOEnabled:   c.softwareGSO,
		GRO:                c.gro,
		// openSockets has already joined the sockets to one fanout
		// group; without PreConfigured the endpoint would try to join
		// another and fail.
		PreConfigured:  true,
		IsPacketSocket: isPacket,
	})
	after, terr := fdTable()
	// The stop eventfds New made; on failure it made them too.
	stopFDs := newEventFDs(before, after)
	if err != nil || terr != nil {
		closeFDs(stopFDs)
		return nil, nil, fmt.Errorf("bench: gvisor endpoint: %w", errors.Join(err, terr))
	}
	fds := slices.Clone(c.fds)
	release := func() error {
		return errors.Join(unmapSocketMappings(fds), closeFDs(stopFDs), dropDispatchers(ep))
	}
	return ep, release, nil
}

// stopEndpoint stops ep's readers as a NIC removal does and waits for them.
func stopEndpoint(ep stack.LinkEndpoint) {
	ep.Attach(nil)
	ep.Close()
	ep.Wait()
}

// openSockets opens n AF_PACKET sockets (ETH_P_ALL, as runsc opens them)
// bound to ifname inside ns; several are joined in one PACKET_FANOUT_HASH
// group with an id the kernel makes unique. vnetHdr sets PACKET_VNET_HDR,
// which host GSO needs (runsc sets it exactly then). The caller owns and
// closes them.
func openSockets(ns, ifname string, n int, vnetHdr bool) ([]int, error) {
	fds, err := dataplane.OpenPacketSockets(dataplane.SocketOptions{NetNS: ns, Interface: ifname, Protocol: dataplane.EthPAll, VnetHdr: vnetHdr}, n)
	if err != nil {
		return nil, fmt.Errorf("bench: open packet sockets: %w", err)
	}
	return fds, nil
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
