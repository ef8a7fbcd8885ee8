package xdp

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/sluicenet/sluice/bpf"
)

// ModeKind is one of the XDP modes of the reference (runsc's --xdp).
type ModeKind int

const (
	// ModeNS reads a veth (the sandbox's) with AF_XDP instead of
	// AF_PACKET: the redirect program on it hands every frame to the
	// socket of its rx queue.
	ModeNS ModeKind = iota + 1
	// ModeRedirect reads a host NIC's queues with AF_XDP: the stack owns
	// addresses on the NIC, frames for them (and ARP/NDP about them) go
	// to the stack, everything else to the host.
	ModeRedirect
	// ModeTunnel hands a host NIC's traffic, control ports excepted, to a
	// veth whose far end the stack reads with AF_XDP (tunnel-host on the
	// NIC, tunnel-veth on the veth's near end).
	ModeTunnel
)

var modeKindNames = map[ModeKind]string{ModeNS: "ns", ModeRedirect: "redirect", ModeTunnel: "tunnel"}

func (k ModeKind) String() string {
	if n, ok := modeKindNames[k]; ok {
		return n
	}
	return fmt.Sprintf("ModeKind(%d)", int(k))
}

// Mode is an XDP mode and, for redirect and tunnel, the NIC it uses.
type Mode struct {
	Kind  ModeKind
	Iface string
}

// String returns the flag spelling: ns, redirect:IFACE or tunnel:IFACE.
func (m Mode) String() string {
	if m.Iface == "" {
		return m.Kind.String()
	}
	return m.Kind.String() + ":" + m.Iface
}

// ParseMode parses ns, redirect:IFACE or tunnel:IFACE.
func ParseMode(s string) (Mode, error) {
	kind, iface, hasIface := strings.Cut(s, ":")
	var m Mode
	switch strings.ToLower(kind) {
	case "ns":
		m.Kind = ModeNS
		if hasIface {
			return m, fmt.Errorf("xdp: mode %q: ns takes no interface (it reads the sandbox's veth)", s)
		}
		return m, nil
	case "redirect":
		m.Kind = ModeRedirect
	case "tunnel":
		m.Kind = ModeTunnel
	default:
		return m, fmt.Errorf("xdp: unknown mode %q: want ns, redirect:IFACE or tunnel:IFACE", s)
	}
	if iface == "" {
		return m, fmt.Errorf("xdp: mode %q: %s needs an interface (%s:IFACE)", s, m.Kind, m.Kind)
	}
	if len(iface) > 15 || strings.ContainsAny(iface, "/ \t\n:") {
		return m, fmt.Errorf("xdp: mode %q: %q is not a valid interface name", s, iface)
	}
	m.Iface = iface
	return m, nil
}

// Set implements pflag.Value.
func (m *Mode) Set(s string) error {
	v, err := ParseMode(s)
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// Type implements pflag.Value.
func (*Mode) Type() string { return "ns|redirect:IFACE|tunnel:IFACE" }

// LinkOptions are what every mode takes besides the interfaces it uses.
type LinkOptions struct {
	// Sockets configure the AF_XDP sockets and their UMEM.
	Sockets Options
	// Endpoint configures the endpoint; its Sockets field is filled in.
	// Address and MTU default to those of the NIC the stack is on: the
	// veth in ns mode, the host NIC in redirect and tunnel modes.
	Endpoint EndpointOptions
	// AttachMode is the XDP attach mode of sluice's programs. ModeAuto
	// lets the kernel choose: driver (native) mode on veth and on most
	// NICs, generic otherwise.
	AttachMode bpf.Mode
	// Queues limits the AF_XDP sockets to these rx queues of the device
	// read; empty means all of them.
	Queues []int
}

// NSOptions set up ns mode.
type NSOptions struct {
	// Netns is the namespace of the veth end the stack reads ("" the
	// caller's); Iface that veth end (required).
	Netns, Iface string
	LinkOptions
}

// RedirectOptions set up redirect mode.
type RedirectOptions struct {
	// Netns is the NIC's namespace ("" the caller's); Iface the NIC
	// (required).
	Netns, Iface string
	// Addrs are the addresses the stack owns on the NIC, IPv4 and IPv6
	// (at least one). The host must not have them.
	Addrs []netip.Addr
	LinkOptions
}

// TunnelOptions set up tunnel mode.
type TunnelOptions struct {
	// Netns is the NIC's namespace ("" the caller's); Iface the NIC
	// (required).
	Netns, Iface string
	// PassPorts are the TCP and UDP destination ports whose traffic stays
	// with the host stack (control traffic); empty means
	// bpf.DefaultPassPorts (SSH, 22).
	PassPorts []uint16
	// Veth names the near end of the tunnel veth, created in Netns; empty
	// means "sx<pid>.<n>".
	Veth string
	LinkOptions
}
