package sandbox

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/loopback"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/xdp"
)

// TCP buffer sizes of the netstack, in bytes. The receive side starts at
// gVisor's 1 MiB default and may grow to 8 MiB: the stack terminates every
// TCP flow of the sandbox, and a window that cannot cover the bandwidth-delay
// product of a fast uplink caps the flow (Linux's tcp_rmem maximum is 6 MiB).
const (
	tcpBufMin     = 4 << 10
	tcpBufDefault = 1 << 20
	tcpBufMax     = 8 << 20
)

// NewStack returns a gVisor stack with IPv4, IPv6, ARP, TCP, UDP and ICMP,
// set up as the sandbox's gateway.
func NewStack() (*stack.Stack, error) {
	s := stack.New(stack.Options{
		NetworkProtocols: []stack.NetworkProtocolFactory{
			ipv4.NewProtocol,
			// The zero DADConfigs switches duplicate address detection
			// off: the gateway addresses are usable at once, and nothing
			// else on a sandbox's private segment could own them.
			ipv6.NewProtocolWithOptions(ipv6.Options{}),
			arp.NewProtocol,
		},
		TransportProtocols: []stack.TransportProtocolFactory{
			tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6,
		},
	})
	opts := []tcpip.SettableTransportProtocolOption{
		// SACK recovers several losses per round trip; Linux and the
		// reference have it on.
		ptr(tcpip.TCPSACKEnabled(true)),
		// Receive-buffer auto-tuning, as Linux's tcp_moderate_rcvbuf: the
		// window grows with the flow instead of staying at the default.
		ptr(tcpip.TCPModerateReceiveBufferOption(true)),
		&tcpip.TCPReceiveBufferSizeRangeOption{Min: tcpBufMin, Default: tcpBufDefault, Max: tcpBufMax},
		&tcpip.TCPSendBufferSizeRangeOption{Min: tcpBufMin, Default: tcpBufDefault, Max: tcpBufMax},
		// CUBIC, Linux's default, instead of gVisor's Reno: the uplink
		// side of a terminated flow behaves like the host's own TCP.
		ptr(tcpip.CongestionControlOption("cubic")),
	}
	for _, o := range opts {
		if tcpipErr := s.SetTransportProtocolOption(tcp.ProtocolNumber, o); tcpipErr != nil {
			s.Close()
			return nil, fmt.Errorf("sandbox: set TCP option %T: %s", o, tcpipErr)
		}
	}
	return s, nil
}

func ptr[T any](v T) *T { return &v }

// OpenedLink is the endpoint of an FDBasedLink and what to ask it and free
// afterwards.
type OpenedLink struct {
	Endpoint stack.LinkEndpoint
	// Stats and Modes report the endpoint's counters and dispatch modes;
	// nil when unknown.
	Stats func() dataplane.Stats
	Modes func() []dataplane.Mode
	// Offloads reports which offloads the endpoint runs and why; nil when
	// unknown.
	Offloads func() *dataplane.OffloadReport
	// ModeNames, when set, replaces Modes: how each channel or queue
	// reads (for AF_XDP, "xdp" and the bind mode).
	ModeNames func() []string
	// XDP reports an AF_XDP endpoint's own counters; nil for others.
	XDP func() *xdp.XDPStats
	// Stop stops the endpoint's goroutines and waits for them; nil means
	// Endpoint.Close and Endpoint.Wait.
	Stop func()
	// Release frees what the endpoint borrowed (its descriptors) once the
	// stack is done with it.
	Release func()
}

// EndpointOpener opens the link endpoint of one fd-based link. The sandbox's
// opener binds packet sockets in the stack namespace and makes an fdbased
// endpoint; tests can hand out in-memory endpoints.
type EndpointOpener func(FDBasedLink) (OpenedLink, error)

// XDPOpener opens the AF_XDP endpoint of one XDP link (package xdp's modes).
type XDPOpener func(XDPLink) (OpenedLink, error)

// LinkInfo names a NIC of the stack and its counters.
type LinkInfo struct {
	Name  string
	NICID tcpip.NICID
	link  OpenedLink
}

// Links are the NICs CreateLinksAndRoutes made.
type Links struct {
	// FDBased are the fd-based links, in Args order.
	FDBased []LinkInfo
	// XDP are the AF_XDP links, in Args order.
	XDP  []LinkInfo
	nics map[string]tcpip.NICID
}

// NIC returns the NIC ID of the link called name, or 0.
func (l *Links) NIC(name string) tcpip.NICID { return l.nics[name] }

// all returns every link with an endpoint of its own: fd-based, then XDP.
func (l *Links) all() []LinkInfo {
	return append(l.FDBased[:len(l.FDBased):len(l.FDBased)], l.XDP...)
}

// Stats returns the counters of every fd-based and XDP link.
func (l *Links) Stats() []LinkStats {
	var out []LinkStats
	for _, li := range l.all() {
		ls := LinkStats{Name: li.Name}
		if li.link.Stats != nil {
			ls.Stats = li.link.Stats()
		}
		if li.link.Modes != nil {
			for _, m := range li.link.Modes() {
				ls.Modes = append(ls.Modes, m.String())
			}
		}
		if li.link.ModeNames != nil {
			ls.Modes = li.link.ModeNames()
		}
		if li.link.Offloads != nil {
			ls.Offloads = li.link.Offloads()
		}
		if li.link.XDP != nil {
			ls.XDP = li.link.XDP()
		}
		out = append(out, ls)
	}
	return out
}

// Stop stops every fd-based link's goroutines and waits for them. Call it
// before closing the stack: gVisor's Stack.Wait waits for each link
// endpoint while holding the stack's lock, and an endpoint goroutine that is
// delivering a packet at that moment may need that very lock (a route
// lookup), so waiting there can deadlock. Stopped first, the endpoints have
// nothing left to wait for.
func (l *Links) Stop() {
	for _, li := range l.all() {
		if li.link.Stop != nil {
			li.link.Stop()
			continue
		}
		li.link.Endpoint.Close()
		li.link.Endpoint.Wait()
	}
}

// Release frees every link's descriptors. Call it after the stack has been
// closed and waited for, which detaches and stops the endpoints.
func (l *Links) Release() {
	for _, li := range l.all() {
		if li.link.Release != nil {
			li.link.Release()
		}
	}
}

// CreateLinksAndRoutes creates the NICs of args in s, with their addresses,
// routes and neighbours, over endpoints from open (fd-based links) and
// openXDP (XDP links). On failure it stops and releases every endpoint it
// opened; NICs already created stay in s, which the caller closes.
func CreateLinksAndRoutes(s *stack.Stack, args *Args, open EndpointOpener, openXDP XDPOpener) (_ *Links, err error) {
	if len(args.XDPLinks) > 0 && openXDP == nil {
		return nil, errors.New("sandbox: the plan has XDP links and nothing opens them")
	}
	links := &Links{nics: map[string]tcpip.NICID{}}
	defer func() {
		if err != nil {
			links.Stop()
			links.Release()
		}
	}()
	var routes []tcpip.Route
	var nicID tcpip.NICID

	// Loopback first, as the reference and Linux number them.
	for _, l := range args.LoopbackLinks {
		nicID++
		links.nics[l.Name] = nicID
		if err := createNIC(s, nicID, l.Name, loopback.New(), stack.NICOptions{Name: l.Name}, l.Addresses); err != nil {
			return nil, err
		}
		rs, err := toRoutes(nicID, l.Routes)
		if err != nil {
			return nil, fmt.Errorf("sandbox: link %s: %w", l.Name, err)
		}
		routes = append(routes, rs...)
	}

	for _, l := range args.FDBasedLinks {
		nicID++
		links.nics[l.Name] = nicID
		ol, err := open(l)
		if err != nil {
			return nil, fmt.Errorf("sandbox: open link %s: %w", l.Name, err)
		}
		links.FDBased = append(links.FDBased, LinkInfo{Name: l.Name, NICID: nicID, link: ol})
		// The queueing discipline (l.QDisc) is the endpoint's own: the
		// opener sets it up (fdbased's FIFO pushes back on the stack
		// instead of tail-dropping as gVisor's does,
		// ../shared/FIELD-NOTES.md).
		rs, err := setUpNIC(s, nicID, ol.Endpoint, nicSetup{l.Name, l.Addresses, l.Routes, l.Neighbors, l.Promiscuous, l.Spoofing})
		if err != nil {
			return nil, err
		}
		routes = append(routes, rs...)
	}
	for _, l := range args.XDPLinks {
		nicID++
		links.nics[l.Name] = nicID
		ol, err := openXDP(l)
		if err != nil {
			return nil, fmt.Errorf("sandbox: open XDP link %s (--xdp %v): %w", l.Name, XDPConfig{Mode: l.Mode, Interface: ifaceOf(l)}, err)
		}
		links.XDP = append(links.XDP, LinkInfo{Name: l.Name, NICID: nicID, link: ol})
		rs, err := setUpNIC(s, nicID, ol.Endpoint, nicSetup{l.Name, l.Addresses, l.Routes, l.Neighbors, l.Promiscuous, l.Spoofing})
		if err != nil {
			return nil, err
		}
		routes = append(routes, rs...)
	}

	for _, d := range []DefaultRoute{args.Defaultv4Gateway, args.Defaultv6Gateway} {
		if d.Empty() {
			continue
		}
		id, ok := links.nics[d.Name]
		if !ok {
			return nil, fmt.Errorf("sandbox: default route through unknown link %q", d.Name)
		}
		rs, err := toRoutes(id, []Route{d.Route})
		if err != nil {
			return nil, fmt.Errorf("sandbox: default route: %w", err)
		}
		routes = append(routes, rs...)
	}
	s.SetRouteTable(routes)
	return links, nil
}

// ifaceOf is the interface an XDP link's flag names: none in ns mode.
func ifaceOf(l XDPLink) string {
	if l.Mode == XDPNS {
		return ""
	}
	return l.Interface
}

// nicSetup is what a NIC over a link endpoint gets besides the endpoint.
type nicSetup struct {
	name                  string
	addrs                 []netip.Prefix
	routes                []Route
	neighbors             []Neighbor
	promiscuous, spoofing bool
}

// setUpNIC creates NIC id over ep with n's addresses, modes and static
// neighbours, and returns its routes.
func setUpNIC(s *stack.Stack, id tcpip.NICID, ep stack.LinkEndpoint, n nicSetup) ([]tcpip.Route, error) {
	if err := createNIC(s, id, n.name, ep, stack.NICOptions{Name: n.name}, n.addrs); err != nil {
		return nil, err
	}
	if n.promiscuous {
		if tcpipErr := s.SetPromiscuousMode(id, true); tcpipErr != nil {
			return nil, fmt.Errorf("sandbox: link %s: promiscuous mode: %s", n.name, tcpipErr)
		}
	}
	if n.spoofing {
		if tcpipErr := s.SetSpoofing(id, true); tcpipErr != nil {
			return nil, fmt.Errorf("sandbox: link %s: spoofing: %s", n.name, tcpipErr)
		}
	}
	for _, nb := range n.neighbors {
		if tcpipErr := s.AddStaticNeighbor(id, protoOf(nb.Addr), tcpip.AddrFromSlice(nb.Addr.AsSlice()), tcpip.LinkAddress(nb.LinkAddress)); tcpipErr != nil {
			return nil, fmt.Errorf("sandbox: link %s: neighbour %v: %s", n.name, nb.Addr, tcpipErr)
		}
	}
	rs, err := toRoutes(id, n.routes)
	if err != nil {
		return nil, fmt.Errorf("sandbox: link %s: %w", n.name, err)
	}
	return rs, nil
}

func createNIC(s *stack.Stack, id tcpip.NICID, name string, ep stack.LinkEndpoint, opts stack.NICOptions, addrs []netip.Prefix) error {
	if tcpipErr := s.CreateNICWithOptions(id, ep, opts); tcpipErr != nil {
		return fmt.Errorf("sandbox: create NIC %d (%s): %s", id, name, tcpipErr)
	}
	for _, a := range addrs {
		pa := tcpip.ProtocolAddress{
			Protocol: protoOf(a.Addr()),
			AddressWithPrefix: tcpip.AddressWithPrefix{
				Address:   tcpip.AddrFromSlice(a.Addr().AsSlice()),
				PrefixLen: a.Bits(),
			},
		}
		if tcpipErr := s.AddProtocolAddress(id, pa, stack.AddressProperties{}); tcpipErr != nil {
			return fmt.Errorf("sandbox: NIC %s: add address %v: %s", name, a, tcpipErr)
		}
	}
	return nil
}

func toRoutes(nic tcpip.NICID, rs []Route) ([]tcpip.Route, error) {
	var out []tcpip.Route
	for _, r := range rs {
		if !r.Destination.IsValid() {
			return nil, errors.New("route without a destination")
		}
		d := r.Destination.Masked()
		sub, err := tcpip.NewSubnet(tcpip.AddrFromSlice(d.Addr().AsSlice()), tcpip.MaskFromBytes(prefixMask(d)))
		if err != nil {
			return nil, fmt.Errorf("route %v: %w", r.Destination, err)
		}
		tr := tcpip.Route{Destination: sub, NIC: nic}
		if r.Gateway.IsValid() {
			tr.Gateway = tcpip.AddrFromSlice(r.Gateway.AsSlice())
		}
		out = append(out, tr)
	}
	return out, nil
}

// prefixMask returns the netmask bytes of p.
func prefixMask(p netip.Prefix) []byte {
	m := make([]byte, p.Addr().BitLen()/8)
	for i := 0; i < p.Bits(); i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}

func protoOf(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

// toAddr converts a gVisor address to netip.
func toAddr(a tcpip.Address) netip.Addr {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return ip
}

func tcpipLinkAddress(mac net.HardwareAddr) tcpip.LinkAddress { return tcpip.LinkAddress(string(mac)) }
