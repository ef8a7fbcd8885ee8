package sandbox

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Limits of AF_XDP on the sandbox's veth (--xdp ns).
const (
	// XDPVethMaxMTU is the largest MTU of a veth that carries a native XDP
	// program without multi-buffer support, as sluice's are: the kernel
	// wants a whole frame in one page after XDP's 256 bytes of headroom and
	// the skb_shared_info tail (veth_xdp_set, drivers/net/veth.c:
	// SKB_WITH_OVERHEAD(PAGE_SIZE - VETH_XDP_HEADROOM) - ETH_HLEN), that is
	// 4096 - 256 - 320 - 14 on x86-64 with 4 KiB pages. Attaching to a veth
	// whose peer has a larger MTU fails with ERANGE ("Peer MTU is too large
	// to set XDP"); 3506 attaches and 3507 does not on this project's
	// kernel. The 1500 of gVisor's AF_XDP endpoint is its own choice, not
	// the kernel's limit.
	XDPVethMaxMTU = 3506
	// xdpLargeFrame is the UMEM chunk for MTUs above xdpSmallFrameMTU: a
	// 3520-byte frame fits in 4096 - 256 bytes.
	xdpLargeFrame = 4096
	// xdpSmallFrame holds frames of MTUs up to xdpSmallFrameMTU (2048 - 256
	// - 14), at half the memory.
	xdpSmallFrame    = 2048
	xdpSmallFrameMTU = xdpSmallFrame - 256 - 14
)

// xdpFrameSize is the UMEM chunk size for an MTU.
func xdpFrameSize(mtu int) uint32 {
	if mtu <= xdpSmallFrameMTU {
		return xdpSmallFrame
	}
	return xdpLargeFrame
}

// NICFacts are what the redirect and tunnel modes need to know of the host
// NIC they take traffic from.
type NICFacts struct {
	Name string
	MTU  int
	// Addrs are its global unicast addresses, with their prefixes.
	Addrs []netip.Prefix
	// Gateway4 and Gateway6 are the next hops of the namespace's default
	// routes through it; invalid when there is none.
	Gateway4, Gateway6 netip.Addr
}

// NICFactSource is implemented by a FactSource that can also describe a
// network interface (HostFactSource does); GatherFacts uses it for
// --xdp redirect:IFACE and tunnel:IFACE.
type NICFactSource interface {
	// NIC describes the interface name in namespace netns ("" is the
	// caller's); a missing interface is an error that names it.
	NIC(netns, name string) (NICFacts, error)
}

// parseUplinkAddrs parses the --uplink-addr values: CIDRs of either family,
// at most one per family.
func parseUplinkAddrs(vals []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	seen := map[bool]string{}
	for _, v := range vals {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return nil, fmt.Errorf("--uplink-addr %q: not an address with its prefix length (for example 192.0.2.7/24 or 2001:db8::7/64)", v)
		}
		a := p.Addr()
		if a.Zone() != "" || !a.IsGlobalUnicast() && !a.IsPrivate() {
			return nil, fmt.Errorf("--uplink-addr %q: not a unicast address a NIC can own", v)
		}
		if prev, ok := seen[a.Is4()]; ok {
			return nil, fmt.Errorf("--uplink-addr %q: %s is already the IPv%d address (one per family)", v, prev, familyOf(a))
		}
		seen[a.Is4()] = v
		out = append(out, p)
	}
	return out, nil
}

// parseUplinkGateways parses the --uplink-gateway values: addresses, at
// most one per family.
func parseUplinkGateways(vals []string) ([]netip.Addr, error) {
	var out []netip.Addr
	seen := map[bool]bool{}
	for _, v := range vals {
		a, err := netip.ParseAddr(v)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("--uplink-gateway %q: not an IP address", v)
		}
		if a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() {
			return nil, fmt.Errorf("--uplink-gateway %q: not a unicast address a router can have", v)
		}
		if seen[a.Is4()] {
			return nil, fmt.Errorf("--uplink-gateway %q: one gateway per address family", v)
		}
		seen[a.Is4()] = true
		out = append(out, a)
	}
	return out, nil
}

func familyOf(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

// validateXDPFlags checks the XDP-related flags on their own (Validate
// calls it); the checks against the other settings and the host are
// planXDP's.
func (c Config) validateXDPFlags() []error {
	var errs []error
	if _, err := parseUplinkAddrs(c.UplinkAddr); err != nil {
		errs = append(errs, err)
	}
	if _, err := parseUplinkGateways(c.UplinkGateway); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// checkXDP checks the XDP settings against the others, before anything is
// created.
func (c Config) checkXDP(f HostFacts) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.XDP.Mode != XDPRedirect && c.XDP.Mode != XDPTunnel {
		if len(c.UplinkAddr) > 0 {
			bad("--uplink-addr needs --xdp redirect:IFACE or tunnel:IFACE (it is the netstack's address on that NIC)")
		}
		if len(c.UplinkGateway) > 0 {
			bad("--uplink-gateway needs --xdp redirect:IFACE or tunnel:IFACE")
		}
	}
	if c.XDP.Mode == XDPOff {
		return errors.Join(errs...)
	}
	if c.Network != NetworkSandbox {
		bad("--xdp %v needs --network sandbox (with --network %v there is no netstack)", c.XDP, c.Network)
		return errors.Join(errs...)
	}
	if c.XDP.Mode == XDPNS {
		if c.MTU > XDPVethMaxMTU {
			bad("--mtu %d: with --xdp ns the veth carries an XDP program, which the kernel allows up to MTU %d (a frame must fit in one page); leave --mtu out to get %d, or lower it",
				c.MTU, XDPVethMaxMTU, XDPVethMaxMTU)
		}
		if !c.RXChecksumOffload {
			bad("--rx-checksum-offload=false with --xdp ns: the sandbox's kernel leaves TCP and UDP checksums for an offload a veth never does, and AF_XDP does not say so, so every such frame would fail verification; keep --rx-checksum-offload")
		}
		if c.QDisc == QDiscFIFO {
			bad("--qdisc fifo with --xdp ns: the AF_XDP endpoint pushes back on the stack itself when its send ring is full and has no FIFO; use --qdisc none")
		}
	}
	if c.XDP.Mode == XDPRedirect || c.XDP.Mode == XDPTunnel {
		if c.AllowHostLoopback {
			bad("--allow-host-loopback with --xdp %v: flows leave from the netstack over %s, where the uplink namespace's loopback is out of reach; drop it", c.XDP, c.XDP.Interface)
		}
		for _, v := range c.Publish {
			if p, err := ParsePublish(v); err == nil && p.Proto != "tcp" {
				bad("--publish %v with --xdp %v: UDP through the netstack's NIC is %w; publish TCP, or use --xdp ns", v, c.XDP, ErrNotImplemented)
			}
		}
		if f.XDPNIC == nil {
			bad("--xdp %v: no facts about %s were gathered", c.XDP, c.XDP.Interface)
		} else if f.XDPNIC.MTU > XDPMaxFrameMTU {
			bad("--xdp %v: %s has MTU %d; AF_XDP takes frames up to MTU %d (one 4 KiB chunk after 256 bytes of headroom); lower the NIC's MTU",
				c.XDP, c.XDP.Interface, f.XDPNIC.MTU, XDPMaxFrameMTU)
		}
	}
	return errors.Join(errs...)
}

// XDPMaxFrameMTU is the largest MTU whose frames fit in a 4 KiB UMEM chunk
// after the kernel's 256 bytes of headroom.
const XDPMaxFrameMTU = xdpLargeFrame - 256 - 14

// planXDPNS turns the planned stack-side link into the XDP link that reads
// the same veth with AF_XDP.
func planXDPNS(c Config, l FDBasedLink) XDPLink {
	return XDPLink{
		Name:              l.Name,
		Mode:              XDPNS,
		Interface:         l.Name,
		MTU:               l.MTU,
		Addresses:         l.Addresses,
		Routes:            l.Routes,
		Neighbors:         l.Neighbors,
		LinkAddress:       l.LinkAddress,
		NumQueues:         c.NumNetworkChannels,
		FrameSize:         xdpFrameSize(l.MTU),
		NeedWakeup:        c.XDPNeedWakeup,
		GSOMaxSize:        l.GSOMaxSize,
		GRO:               l.GRO,
		TXChecksumOffload: l.TXChecksumOffload,
		RXChecksumOffload: l.RXChecksumOffload,
		Promiscuous:       true,
		Spoofing:          true,
	}
}

// UplinkLinkName is the netstack's NIC on the host NIC in the redirect and
// tunnel modes.
const UplinkLinkName = "uplink0"

// planXDPUplink plans the second NIC of the redirect and tunnel modes: its
// addresses (--uplink-addr, or taken over from the NIC), on-link routes, and
// the default routes through the NIC's gateways (--uplink-gateway, or the
// uplink namespace's default routes through the NIC).
func planXDPUplink(c Config, nic NICFacts) (XDPLink, []DefaultRoute, error) {
	l := XDPLink{
		Name:       UplinkLinkName,
		Mode:       c.XDP.Mode,
		Interface:  c.XDP.Interface,
		NetNS:      c.UplinkNetNS,
		MTU:        nic.MTU,
		NeedWakeup: c.XDPNeedWakeup,
		FrameSize:  xdpFrameSize(nic.MTU),
		// Frames from a wire carry full checksums: verify them, with GRO
		// doing it once for TCP (the peer of a host NIC may send MTU-sized
		// segments).
		GRO:        true,
		GSOMaxSize: GSOMaxSize,
	}
	addrs, _ := parseUplinkAddrs(c.UplinkAddr)
	if len(addrs) > 0 {
		l.Addresses = addrs
		l.AddressSource = "--uplink-addr"
	} else {
		if len(nic.Addrs) == 0 {
			return l, nil, fmt.Errorf("--xdp %v: %s has no global address to take over; give the netstack one with --uplink-addr CIDR", c.XDP, nic.Name)
		}
		// At most one per family, the first the kernel lists (the
		// primary).
		var have4, have6 bool
		for _, p := range nic.Addrs {
			if p.Addr().Is4() && !have4 || p.Addr().Is6() && !have6 {
				l.Addresses = append(l.Addresses, p)
				have4 = have4 || p.Addr().Is4()
				have6 = have6 || p.Addr().Is6()
			}
		}
		l.AddressSource = "taken over from " + nic.Name
	}
	gws, _ := parseUplinkGateways(c.UplinkGateway)
	gw := map[bool]netip.Addr{true: nic.Gateway4, false: nic.Gateway6}
	for _, g := range gws {
		gw[g.Is4()] = g
	}
	var defaults []DefaultRoute
	for _, p := range l.Addresses {
		l.Routes = append(l.Routes, Route{Destination: p.Masked()})
		g := gw[p.Addr().Is4()]
		if !g.IsValid() {
			continue
		}
		if !p.Contains(g) {
			return l, nil, fmt.Errorf("--xdp %v: the gateway %v is not on the netstack's subnet %v; give a gateway on it with --uplink-gateway", c.XDP, g, p.Masked())
		}
		dst := netip.MustParsePrefix("0.0.0.0/0")
		if g.Is6() {
			dst = netip.MustParsePrefix("::/0")
		}
		defaults = append(defaults, DefaultRoute{Route: Route{Destination: dst, Gateway: g}, Name: l.Name})
	}
	for _, g := range gws {
		found := false
		for _, p := range l.Addresses {
			found = found || p.Addr().Is4() == g.Is4()
		}
		if !found {
			return l, nil, fmt.Errorf("--uplink-gateway %v: the netstack has no IPv%d address on %s", g, familyOf(g), nic.Name)
		}
	}
	return l, defaults, nil
}

func joinPrefixes(ps []netip.Prefix) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	if len(s) == 0 {
		return "no address"
	}
	return strings.Join(s, ", ")
}

// gatherXDPFacts reads the host NIC of --xdp redirect:IFACE and
// tunnel:IFACE, if src can.
func gatherXDPFacts(src FactSource, c Config, f *HostFacts) error {
	if c.XDP.Mode != XDPRedirect && c.XDP.Mode != XDPTunnel {
		return nil
	}
	ns, ok := src.(NICFactSource)
	if !ok {
		return nil
	}
	nic, err := ns.NIC(c.UplinkNetNS, c.XDP.Interface)
	if err != nil {
		where := "sluice's namespace"
		if c.UplinkNetNS != "" {
			where = "the uplink namespace " + c.UplinkNetNS
		}
		return fmt.Errorf("--xdp %v: %w in %s (the NIC must be in the --uplink-netns namespace, or sluice's own without it; see `ip link`)", c.XDP, err, where)
	}
	f.XDPNIC = &nic
	return nil
}

// planXDP rewrites a's links for c's XDP mode: in ns mode the stack-side
// veth becomes an XDP link; in redirect and tunnel modes the netstack gets
// a second NIC on the host NIC, with its default routes.
func planXDP(c Config, f HostFacts, a *Args) error {
	switch c.XDP.Mode {
	case XDPNS:
		a.XDPLinks = []XDPLink{planXDPNS(c, a.FDBasedLinks[0])}
		a.FDBasedLinks = nil
	case XDPRedirect, XDPTunnel:
		l, defaults, err := planXDPUplink(c, *f.XDPNIC)
		if err != nil {
			return err
		}
		a.XDPLinks = []XDPLink{l}
		for _, d := range defaults {
			if d.Route.Gateway.Is4() {
				a.Defaultv4Gateway = d
			} else {
				a.Defaultv6Gateway = d
			}
		}
	}
	return nil
}

// StackLink is the stack-side end of the sandbox's veth as planned: the
// fd-based link, or in ns mode the XDP link over the same veth.
type StackLink struct {
	Name string
	MTU  int
	// Queues is the veth's queue count (0: the kernel's default, one).
	Queues int
	// Neighbors are where the sandbox's addresses are added once eth0's MAC
	// is known.
	Neighbors *[]Neighbor
}

// StackLink returns the stack-side end of the veth, whichever kind of link
// reads it; ok is false when the plan has none.
func (a *Args) StackLink() (l StackLink, ok bool) {
	if len(a.FDBasedLinks) == 1 {
		f := &a.FDBasedLinks[0]
		return StackLink{Name: f.Name, MTU: f.MTU, Neighbors: &f.Neighbors}, true
	}
	for i := range a.XDPLinks {
		if x := &a.XDPLinks[i]; x.Mode == XDPNS {
			return StackLink{Name: x.Name, MTU: x.MTU, Queues: x.NumQueues, Neighbors: &x.Neighbors}, true
		}
	}
	return StackLink{}, false
}

// applyXDPDefaults turns GRO on with --xdp ns unless --gvisor-gro was
// given: the XDP program on the stack's veth turns TSO off on eth0 (its
// peer), so the sandbox's TCP sends MTU-sized frames, and the netstack
// handling them one by one is the bottleneck. Measured with `sluice run
// --xdp ns -- iperf3 -c ... -t 3` on the 2-vCPU VM at load average 30:
// 0.39-0.66 Gbit/s upload without GRO, 1.12-1.42 with it.
func (c *Config) applyXDPDefaults(explicit func(name string) bool) {
	if c.XDP.Mode == XDPNS && (explicit == nil || !explicit("gvisor-gro")) {
		c.GVisorGRO = true
	}
}
