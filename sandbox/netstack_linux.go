package sandbox

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/fdbased"
	"github.com/sluicenet/sluice/internal/netns"
)

func init() {
	if err := RegisterStack(NetstackName, func() (Stack, error) { return &netstack{}, nil }); err != nil {
		panic(err)
	}
}

// netstack is the gVisor netstack as the sandbox's stack: it terminates every
// flow of the sandbox on sluice's fdbased endpoint over packet sockets on the
// stack side of the veth, and re-originates each from a host socket in the
// uplink namespace (uplink).
type netstack struct {
	env    *StackEnv
	s      *stack.Stack
	links  *Links
	uplink *uplink
}

// PreInit creates the veth and configures both ends. The init string is
// eth0's MAC address, which the netstack takes as a static neighbour.
func (n *netstack) PreInit(env *StackEnv) (string, []int, error) {
	n.env = env
	if _, ok := env.Args.StackLink(); !ok {
		return "", nil, fmt.Errorf("the plan has %d fd-based and %d XDP links and no stack-side veth; the netstack wires exactly one", len(env.Args.FDBasedLinks), len(env.Args.XDPLinks))
	}
	mac, err := env.SetUpSandboxLink()
	if err != nil {
		return "", nil, err
	}
	return mac.String(), nil, nil
}

// Init makes the gVisor stack.
func (n *netstack) Init(initStr string, fds []int) error {
	for _, fd := range fds {
		unix.Close(fd)
	}
	if len(fds) > 0 {
		return fmt.Errorf("the netstack takes no descriptors at init, got %d", len(fds))
	}
	mac, err := net.ParseMAC(initStr)
	if err != nil {
		return fmt.Errorf("init string %q: want eth0's MAC address: %w", initStr, err)
	}
	// The netstack knows the sandbox's address from the start; the
	// sandbox still resolves the gateway with ARP and NDP.
	a := n.env.Args
	link, _ := a.StackLink()
	for _, p := range a.Sandbox.Addresses {
		*link.Neighbors = append(*link.Neighbors, Neighbor{Addr: p.Addr(), LinkAddress: mac})
	}
	n.s, err = NewStack()
	return err
}

// CreateLinksAndRoutes opens the endpoints, creates the NICs and installs
// the uplink with its DNS and published ports.
func (n *netstack) CreateLinksAndRoutes() error {
	if n.s == nil {
		return errors.New("the netstack was not initialised")
	}
	env, a := n.env, n.env.Args
	links, err := CreateLinksAndRoutes(n.s, a, n.packetOpener(), n.xdpOpener())
	if err != nil {
		return err
	}
	n.links = links
	sl, _ := a.StackLink()
	n.uplink = newUplink(n.s, links.NIC(sl.Name), *a, env.UplinkNS, env.policy, env.Logger)
	if n.uplink.nsErr != nil {
		return fmt.Errorf("--uplink-netns %s: %w", a.Uplink.NetNS, n.uplink.nsErr)
	}
	if x, ok := uplinkXDPLink(a); ok {
		// --xdp redirect/tunnel: flows leave from the netstack over the
		// XDP NIC instead of host sockets.
		n.uplink.useNetstack(links.NIC(x.Name), x)
	}
	if env.DNSService {
		n.uplink.dns, n.uplink.names = env.DNS, env.names
	}
	if len(env.Publish) > 0 {
		var sb4, sb6 netip.Addr
		for _, p := range a.Sandbox.Addresses {
			if p.Addr().Is4() {
				sb4 = p.Addr()
			} else {
				sb6 = p.Addr()
			}
		}
		if err := n.uplink.publish(env.Publish, sb4, sb6); err != nil {
			return err
		}
	}
	return nil
}

// Stats returns the links' counters. A fault contained in an uplink flow
// counts on the stack-side link, which the flow came in over.
func (n *netstack) Stats() []LinkStats {
	if n.links == nil {
		return nil
	}
	st := n.links.Stats()
	if sl, ok := n.env.Args.StackLink(); ok && n.uplink != nil {
		for i := range st {
			if st[i].Name == sl.Name {
				st[i].Faults += n.uplink.Faults()
			}
		}
	}
	return st
}

// ServiceStats returns nil: the DNS and policy counters are the boot
// layer's (Sandbox.DNSStats, Sandbox.PolicyStats).
func (n *netstack) ServiceStats() map[string]uint64 { return nil }

// Close closes the uplink's host sockets, stops the endpoints, closes the
// stack and waits for the flows, then releases the sockets. The order is
// the one Links.Stop explains.
func (n *netstack) Close() error {
	if n.uplink != nil {
		n.uplink.close()
	}
	if n.links != nil {
		n.links.Stop()
	}
	if n.s != nil {
		n.s.Close()
		n.s.Wait()
	}
	if n.uplink != nil {
		n.uplink.wait()
	}
	if n.links != nil {
		n.links.Release()
	}
	return nil
}

// packetOpener opens the packet sockets of a link in the stack namespace and
// makes sluice's fdbased endpoint over them.
func (n *netstack) packetOpener() EndpointOpener {
	env := n.env
	return func(l FDBasedLink) (OpenedLink, error) {
		vnet := l.GSOMaxSize > 0 && !l.SoftwareGSOEnabled
		var fds []int
		err := netns.DoFD(env.StackNS, func() error {
			var err error
			fds, err = dataplane.OpenPacketSockets(dataplane.SocketOptions{
				Interface:   l.Name,
				VnetHdr:     vnet,
				RcvBufBytes: socketBufBytes,
				SndBufBytes: socketBufBytes,
			}, l.NumChannels)
			return err
		})
		if err != nil {
			return OpenedLink{}, err
		}
		release := func() {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
		ep, err := fdbased.NewEndpoint(fdbased.Options{
			FDs:                  fds,
			MTU:                  uint32(l.MTU),
			EthernetHeader:       true,
			Address:              tcpipLinkAddress(l.LinkAddress),
			GSOMaxSize:           l.GSOMaxSize,
			GVisorGSOEnabled:     l.SoftwareGSOEnabled,
			PacketDispatchMode:   l.Dispatch,
			TXChecksumOffload:    l.TXChecksumOffload,
			RXChecksumOffload:    l.RXChecksumOffload,
			GRO:                  l.GRO,
			ProcessorsPerChannel: l.ProcessorsPerChannel,
			Qdisc:                qdiscKind(l.QDisc),
			RingBlocks:           rxRingBytes / dataplane.DefaultRingBlockSize,
			Logger:               env.Logger,
			Faults:               dataplane.FaultOptions{CorpusDir: env.FaultCorpus},
		})
		if err != nil {
			release()
			return OpenedLink{}, err
		}
		var lep stack.LinkEndpoint = ep
		if env.tap != nil {
			lep = env.tap.wrap(ep)
		}
		return OpenedLink{Endpoint: lep, Stats: ep.Stats, Modes: ep.Modes, Offloads: ep.Offloads, Release: release}, nil
	}
}
