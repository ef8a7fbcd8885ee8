package sandbox

import (
	"fmt"
	"net/netip"
	"strings"
)

// NetworkType is what network the command gets (`--network`).
type NetworkType int

const (
	// NetworkSandbox gives the command its own namespace with lo and eth0,
	// whose only way out is the netstack (the default).
	NetworkSandbox NetworkType = iota
	// NetworkHost runs the command in sluice's own network namespace: no
	// isolation and no netstack.
	NetworkHost
	// NetworkNone gives the command a namespace with loopback only.
	NetworkNone
	// NetworkPlugin is NetworkSandbox with another registered stack than
	// the netstack behind eth0 (--plugin NAME; see Stack).
	NetworkPlugin
)

var networkNames = []string{"sandbox", "host", "none", "plugin"}

// hasStack reports whether the command's namespace has an eth0 with a stack
// behind it.
func (n NetworkType) hasStack() bool { return n == NetworkSandbox || n == NetworkPlugin }

// String returns the flag spelling.
func (n NetworkType) String() string {
	if int(n) >= 0 && int(n) < len(networkNames) {
		return networkNames[n]
	}
	return fmt.Sprintf("NetworkType(%d)", int(n))
}

// Set implements pflag.Value.
func (n *NetworkType) Set(s string) error {
	for i, name := range networkNames {
		if s == name {
			*n = NetworkType(i)
			return nil
		}
	}
	return fmt.Errorf("unknown network %q (want sandbox, host, none or plugin)", s)
}

// Type implements pflag.Value.
func (*NetworkType) Type() string { return "sandbox|host|none|plugin" }

// QDisc is the queueing discipline in front of the stack-side link's writes
// (`--qdisc`).
type QDisc int

const (
	// QDiscNone writes straight from the stack's goroutines.
	QDiscNone QDisc = iota
	// QDiscFIFO puts a bounded FIFO queue per channel in front of the link,
	// drained in batches, as the reference does by default.
	QDiscFIFO
)

var qdiscNames = []string{"none", "fifo"}

// String returns the flag spelling.
func (q QDisc) String() string {
	if int(q) >= 0 && int(q) < len(qdiscNames) {
		return qdiscNames[q]
	}
	return fmt.Sprintf("QDisc(%d)", int(q))
}

// Set implements pflag.Value.
func (q *QDisc) Set(s string) error {
	for i, name := range qdiscNames {
		if s == name {
			*q = QDisc(i)
			return nil
		}
	}
	return fmt.Errorf("unknown qdisc %q (want none or fifo)", s)
}

// Type implements pflag.Value.
func (*QDisc) Type() string { return "none|fifo" }

// XDPMode is the XDP mode of `--xdp`, as in the reference.
type XDPMode int

const (
	// XDPOff uses AF_PACKET on the veth (the default).
	XDPOff XDPMode = iota
	// XDPNS reads the sandbox's veth with AF_XDP instead of AF_PACKET.
	XDPNS
	// XDPRedirect puts AF_XDP on a host NIC whose traffic the netstack owns.
	XDPRedirect
	// XDPTunnel redirects a host NIC's traffic to a veth read by AF_XDP.
	XDPTunnel
)

var xdpModeNames = []string{"off", "ns", "redirect", "tunnel"}

// String returns the mode's spelling.
func (m XDPMode) String() string {
	if int(m) >= 0 && int(m) < len(xdpModeNames) {
		return xdpModeNames[m]
	}
	return fmt.Sprintf("XDPMode(%d)", int(m))
}

// XDPConfig is the value of `--xdp MODE[:IFACE]`: off, ns, redirect:IFACE or
// tunnel:IFACE.
type XDPConfig struct {
	Mode XDPMode
	// Interface is the host NIC of the redirect and tunnel modes; empty for
	// off and ns.
	Interface string
}

// String returns the flag spelling.
func (x XDPConfig) String() string {
	if x.Interface != "" {
		return x.Mode.String() + ":" + x.Interface
	}
	return x.Mode.String()
}

// Set implements pflag.Value.
func (x *XDPConfig) Set(s string) error {
	mode, iface, hasIface := strings.Cut(s, ":")
	var v XDPConfig
	found := false
	for i, name := range xdpModeNames {
		if mode == name {
			v.Mode, found = XDPMode(i), true
		}
	}
	if !found {
		return fmt.Errorf("unknown XDP mode %q (want off, ns, redirect:IFACE or tunnel:IFACE)", s)
	}
	switch v.Mode {
	case XDPOff, XDPNS:
		if hasIface {
			return fmt.Errorf("XDP mode %q takes no interface (want %s)", s, mode)
		}
	case XDPRedirect, XDPTunnel:
		if iface == "" {
			return fmt.Errorf("XDP mode %q needs an interface (want %s:IFACE)", s, mode)
		}
		if len(iface) > 15 || strings.ContainsAny(iface, "/: \t") {
			return fmt.Errorf("XDP mode %q: %q is not a valid interface name", s, iface)
		}
		v.Interface = iface
	}
	*x = v
	return nil
}

// Type implements pflag.Value.
func (*XDPConfig) Type() string { return "off|ns|redirect:IFACE|tunnel:IFACE" }

// Profile names a bundle of settings (`--profile`); settings given
// explicitly on the command line override the bundle's.
type Profile int

const (
	// ProfileDefault changes nothing.
	ProfileDefault Profile = iota
	// ProfileThroughput tunes for bulk transfers.
	ProfileThroughput
	// ProfileLatency tunes for request/response round trips.
	ProfileLatency
)

var profileNames = []string{"default", "throughput", "latency"}

// String returns the flag spelling.
func (p Profile) String() string {
	if int(p) >= 0 && int(p) < len(profileNames) {
		return profileNames[p]
	}
	return fmt.Sprintf("Profile(%d)", int(p))
}

// Set implements pflag.Value.
func (p *Profile) Set(s string) error {
	for i, name := range profileNames {
		if s == name {
			*p = Profile(i)
			return nil
		}
	}
	return fmt.Errorf("unknown profile %q (want default, throughput or latency)", s)
}

// Type implements pflag.Value.
func (*Profile) Type() string { return "default|throughput|latency" }

// prefixValue binds an IPv4 or IPv6 subnet flag to a netip.Prefix. "none"
// (the zero Prefix) switches that address family off in the sandbox.
type prefixValue struct {
	p    *netip.Prefix
	want int // 4 or 6
}

func (v prefixValue) String() string {
	if v.p == nil || !v.p.IsValid() {
		return "none"
	}
	return v.p.String()
}

func (v prefixValue) Set(s string) error {
	if s == "none" {
		*v.p = netip.Prefix{}
		return nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return fmt.Errorf("%q is not a subnet in CIDR notation (for example %s) or none", s, defaultSubnet(v.want))
	}
	if (v.want == 4) != p.Addr().Is4() || p.Addr().Zone() != "" {
		return fmt.Errorf("%q is not an IPv%d subnet", s, v.want)
	}
	if p.Masked() != p {
		return fmt.Errorf("%q has host bits set: did you mean %s?", s, p.Masked())
	}
	*v.p = p
	return nil
}

func (v prefixValue) Type() string {
	if v.want == 4 {
		return "CIDR|none"
	}
	return "CIDR6|none"
}

func defaultSubnet(family int) netip.Prefix {
	if family == 4 {
		return DefaultSubnet
	}
	return DefaultSubnet6
}
