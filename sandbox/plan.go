package sandbox

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/sluicenet/sluice/dataplane"
)

// Names of the links the plan creates.
const (
	// StackLinkName is the stack side of the veth, in the private namespace
	// (the name only has to be unique there; "sluice" makes a leak easy to
	// spot).
	StackLinkName = "sluice0"
	// SandboxLinkName is the command's side of the veth.
	SandboxLinkName = "eth0"
	// LoopbackName is the netstack's loopback NIC and the sandbox's lo.
	LoopbackName = "lo"
)

// GatewayMAC is the netstack's link address on the sandbox link: locally
// administered (bit 1 of the first octet) unicast, "slc" and the gateway's
// host number. Each sandbox is its own Ethernet segment, so one fixed
// address serves them all and makes captures easy to read. It differs from
// the stack-side veth's own address on purpose: frames for the netstack
// then arrive there as PACKET_OTHERHOST, which the stack namespace's kernel
// ignores while the packet sockets still see them.
var GatewayMAC = net.HardwareAddr{0x02, 0x73, 0x6c, 0x63, 0x00, 0x02}

// GSOMaxSize is the largest segment the netstack hands a GSO link: the
// veth's gso_max_size (GSO_LEGACY_MAX_SIZE, 65536), as the reference reads
// from the device.
const GSOMaxSize = 1 << 16

// Route is a route of a link; an invalid Gateway means on-link.
type Route struct {
	Destination netip.Prefix
	Gateway     netip.Addr
}

// DefaultRoute is the catch-all route of one address family, through the
// link called Name.
type DefaultRoute struct {
	Route Route
	Name  string
}

// Empty reports whether the route is unset.
func (r DefaultRoute) Empty() bool {
	return !r.Route.Destination.IsValid() && !r.Route.Gateway.IsValid()
}

// Neighbor is a static neighbour entry of a link.
type Neighbor struct {
	Addr        netip.Addr
	LinkAddress net.HardwareAddr
}

// LoopbackLink is a loopback NIC of the netstack.
type LoopbackLink struct {
	Name      string
	Addresses []netip.Prefix
	Routes    []Route
}

// FDBasedLink is a NIC of the netstack over sluice's fdbased endpoint on
// packet sockets bound to the device Name in the stack namespace.
type FDBasedLink struct {
	Name        string
	MTU         int
	Addresses   []netip.Prefix
	Routes      []Route
	Neighbors   []Neighbor
	LinkAddress net.HardwareAddr
	// NumChannels is the number of packet sockets, in one fanout group.
	NumChannels          int
	ProcessorsPerChannel int
	Dispatch             dataplane.Mode
	// GSOMaxSize is 0 without GSO; SoftwareGSOEnabled picks the
	// endpoint's segmentation over the kernel's.
	GSOMaxSize         uint32
	SoftwareGSOEnabled bool
	GRO                bool
	TXChecksumOffload  bool
	RXChecksumOffload  bool
	QDisc              QDisc
	// Promiscuous and Spoofing let the NIC accept packets for any
	// destination and answer from any source: the netstack terminates
	// every flow of the sandbox, whatever its destination, and replies as
	// that destination.
	Promiscuous bool
	Spoofing    bool
}

// XDPLink is a NIC of the netstack over sluice's AF_XDP endpoint (package
// xdp), in one of the reference's XDP modes:
//   - ns: the stack-side veth (Interface, in the stack namespace) is read
//     with AF_XDP instead of packet sockets; the link then stands where the
//     FDBasedLink would, with the same addresses, routes and neighbours;
//   - redirect and tunnel: a second NIC, on the host NIC Interface of the
//     uplink namespace, owning Addresses there; the uplink re-originates the
//     sandbox's flows from the netstack over it.
type XDPLink struct {
	Name string
	Mode XDPMode
	// Interface is the device the AF_XDP sockets read (ns: the stack-side
	// veth; redirect: the host NIC; tunnel: the host NIC, through a veth of
	// the mode's own).
	Interface string
	// NetNS is Interface's namespace for redirect and tunnel (the uplink
	// namespace; "" is sluice's own).
	NetNS string
	// MTU is the link's MTU; 0 takes the device's.
	MTU       int
	Addresses []netip.Prefix
	// AddressSource says where Addresses came from, for the log: the
	// flag, or the NIC they were taken over from.
	AddressSource string
	Routes        []Route
	Neighbors     []Neighbor
	// LinkAddress is the netstack's MAC; empty takes the device's.
	LinkAddress net.HardwareAddr
	// NumQueues is, in ns mode, the veth's queue count: one AF_XDP socket
	// per queue. Redirect and tunnel read every queue of the NIC.
	NumQueues int
	// FrameSize is the UMEM chunk size: a received frame must fit in it
	// after the kernel's 256 bytes of headroom.
	FrameSize  uint32
	NeedWakeup bool
	// GSOMaxSize is 0 without GSO; otherwise the stack hands the endpoint
	// large TCP segments, which it cuts into frames (AF_XDP has no kernel
	// segmentation).
	GSOMaxSize        uint32
	GRO               bool
	TXChecksumOffload bool
	RXChecksumOffload bool
	Promiscuous       bool
	Spoofing          bool
}

// NATRule rewrites a destination of the sandbox's flows before the uplink
// dials it.
type NATRule struct {
	Dst netip.Addr // as the sandbox addresses it
	To  netip.Addr // what the uplink dials instead
}

// SandboxLink is the command's side: eth0 in its namespace, with lo.
type SandboxLink struct {
	Name      string
	MTU       int
	Addresses []netip.Prefix
	// Gateway4 and Gateway6 are the default routes' next hops; invalid
	// when the family is off.
	Gateway4, Gateway6 netip.Addr
}

// Uplink says where and how flows leave the netstack.
type Uplink struct {
	// NetNS is the namespace the host sockets are opened in ("" is
	// sluice's own).
	NetNS string
	// Gateways are the netstack's own addresses: a flow to one of them is
	// refused unless NAT rewrites it.
	Gateways []netip.Addr
	// Subnets are the sandbox's subnets: no other host lives there, so
	// flows to them are refused.
	Subnets []netip.Prefix
}

// Args are the CreateLinksAndRoutes arguments: the whole network of one
// sandbox, computed by Plan without side effects.
type Args struct {
	Network       NetworkType
	LoopbackLinks []LoopbackLink
	FDBasedLinks  []FDBasedLink
	XDPLinks      []XDPLink
	// Defaultv4Gateway and Defaultv6Gateway are the netstack's own default
	// routes. With the host uplink they are empty: the netstack sends
	// nothing past its links; flows leave through host sockets.
	Defaultv4Gateway DefaultRoute
	Defaultv6Gateway DefaultRoute
	// NAT holds the uplink's destination rewrites (the gateway to the
	// uplink's loopback with --allow-host-loopback).
	NAT        []NATRule
	PCAPLog    string
	LogPackets bool
	Sandbox    SandboxLink
	Uplink     Uplink
}

// HostRoute is a route of the uplink namespace's main table.
type HostRoute struct {
	Dst netip.Prefix
	Dev string
}

// HostFacts is what Plan needs to know about the machine. Gathering them
// has no side effects.
type HostFacts struct {
	// Routes are the uplink namespace's routes.
	Routes []HostRoute
	// MissingCaps names the capabilities the sandbox needs and sluice lacks.
	MissingCaps []string
	// PacketRing reports whether AF_PACKET sockets take a PACKET_RX_RING.
	PacketRing bool
	// XDPNIC describes the host NIC of --xdp redirect:IFACE and
	// tunnel:IFACE; nil otherwise.
	XDPNIC *NICFacts
}

// FactSource reads host facts; tests substitute fakes.
type FactSource interface {
	// Routes returns the main-table routes of the namespace netns (name or
	// path; "" is the caller's).
	Routes(netns string) ([]HostRoute, error)
	// MissingCaps returns which of caps the process lacks in its effective
	// set.
	MissingCaps(caps []string) ([]string, error)
	// PacketRing reports whether PACKET_RX_RING works on this kernel.
	PacketRing() bool
}

// capsFor returns the capabilities a network type needs: namespaces need
// CAP_SYS_ADMIN, the veth and addresses CAP_NET_ADMIN, packet sockets
// CAP_NET_RAW.
func capsFor(n NetworkType) []string {
	switch n {
	case NetworkSandbox, NetworkPlugin:
		return []string{"CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_NET_RAW"}
	case NetworkNone:
		return []string{"CAP_SYS_ADMIN", "CAP_NET_ADMIN"}
	}
	return nil
}

// GatherFacts reads the facts Plan needs for c from src.
func GatherFacts(src FactSource, c Config) (HostFacts, error) {
	var f HostFacts
	missing, err := src.MissingCaps(capsFor(c.Network))
	if err != nil {
		return f, fmt.Errorf("sandbox: read capabilities: %w", err)
	}
	f.MissingCaps = missing
	if !c.Network.hasStack() || len(missing) > 0 {
		return f, nil
	}
	f.Routes, err = src.Routes(c.UplinkNetNS)
	if err != nil {
		if c.UplinkNetNS != "" {
			return f, fmt.Errorf("sandbox: --uplink-netns %s: read its routes: %w", c.UplinkNetNS, err)
		}
		return f, fmt.Errorf("sandbox: read the host's routes: %w", err)
	}
	if c.Dispatch == dataplane.PacketMMap {
		f.PacketRing = src.PacketRing()
	}
	if err := gatherXDPFacts(src, c, &f); err != nil {
		return f, err
	}
	return f, nil
}

// Plan turns a validated Config and the host's facts into the sandbox's
// Args. Settings that cannot work on this host fail here, before anything
// is created, with a message naming the flag.
func Plan(c Config, f HostFacts) (Args, error) {
	if err := c.Validate(); err != nil {
		return Args{}, err
	}
	if len(f.MissingCaps) > 0 {
		return Args{}, fmt.Errorf("--network %v needs %s, which sluice lacks: run it as root, or use --network host, which needs none",
			c.Network, strings.Join(f.MissingCaps, ", "))
	}
	if err := c.checkXDP(f); err != nil {
		return Args{}, err
	}
	a := Args{Network: c.Network, PCAPLog: c.PCAPLog, LogPackets: c.LogPackets}
	switch c.Network {
	case NetworkHost:
		return a, nil
	case NetworkNone:
		a.Sandbox = SandboxLink{}
		return a, nil
	}

	var errs []error
	v4, v6 := AddressingOf(c.Subnet), AddressingOf(c.Subnet6)
	for _, s := range []struct {
		flag string
		p    netip.Prefix
	}{{"--subnet", c.Subnet}, {"--subnet6", c.Subnet6}} {
		if !s.p.IsValid() {
			continue
		}
		for _, r := range f.Routes {
			// A default route overlaps everything and hides nothing:
			// the sandbox reaches what it leads to through the gateway.
			if r.Dst.Bits() == 0 || !r.Dst.Overlaps(s.p) {
				continue
			}
			where := "the host"
			if c.UplinkNetNS != "" {
				where = "the uplink namespace " + c.UplinkNetNS
			}
			errs = append(errs, fmt.Errorf("%s %v overlaps the route to %v (dev %s) in %s: the sandbox could not reach those addresses; pick a free subnet with %s",
				s.flag, s.p, r.Dst, r.Dev, where, s.flag))
		}
	}
	if c.Dispatch == dataplane.PacketMMap && !f.PacketRing && c.XDP.Mode != XDPNS {
		errs = append(errs, errors.New("--dispatch mmap: this kernel's packet sockets refuse PACKET_RX_RING; use --dispatch recvmmsg"))
	}
	if err := errors.Join(errs...); err != nil {
		return Args{}, err
	}

	mtu := c.EffectiveMTU()
	link := FDBasedLink{
		Name:                 StackLinkName,
		MTU:                  mtu,
		LinkAddress:          GatewayMAC,
		NumChannels:          c.NumNetworkChannels,
		ProcessorsPerChannel: c.NetworkProcessorsPerChannel,
		Dispatch:             c.Dispatch,
		GRO:                  c.GVisorGRO,
		TXChecksumOffload:    c.TXChecksumOffload,
		RXChecksumOffload:    c.RXChecksumOffload,
		QDisc:                c.QDisc,
		Promiscuous:          true,
		Spoofing:             true,
	}
	// Host GSO wins when both are on, as in the reference: the kernel
	// segments for free on a veth (it passes super-frames through whole).
	switch {
	case c.GSO:
		link.GSOMaxSize = GSOMaxSize
	case c.SoftwareGSO:
		link.GSOMaxSize = GSOMaxSize
		link.SoftwareGSOEnabled = true
	}
	sb := SandboxLink{Name: SandboxLinkName, MTU: mtu}
	lo := LoopbackLink{Name: LoopbackName}
	for _, ad := range []Addressing{v4, v6} {
		if !ad.Subnet.IsValid() {
			continue
		}
		link.Addresses = append(link.Addresses, netip.PrefixFrom(ad.Gateway, ad.Subnet.Bits()))
		link.Routes = append(link.Routes, Route{Destination: ad.Subnet})
		sb.Addresses = append(sb.Addresses, netip.PrefixFrom(ad.Sandbox, ad.Subnet.Bits()))
		a.Uplink.Gateways = append(a.Uplink.Gateways, ad.Gateway)
		a.Uplink.Subnets = append(a.Uplink.Subnets, ad.Subnet)
		loop := netip.MustParsePrefix("127.0.0.1/8")
		if ad.Gateway.Is4() {
			sb.Gateway4 = ad.Gateway
		} else {
			sb.Gateway6 = ad.Gateway
			loop = netip.MustParsePrefix("::1/128")
		}
		lo.Addresses = append(lo.Addresses, loop)
		lo.Routes = append(lo.Routes, Route{Destination: loop.Masked()})
		if c.AllowHostLoopback {
			a.NAT = append(a.NAT, NATRule{Dst: ad.Gateway, To: loop.Addr()})
		}
	}
	a.LoopbackLinks = []LoopbackLink{lo}
	a.FDBasedLinks = []FDBasedLink{link}
	a.Sandbox = sb
	a.Uplink.NetNS = c.UplinkNetNS
	if err := planXDP(c, f, &a); err != nil {
		return Args{}, err
	}
	return a, nil
}
