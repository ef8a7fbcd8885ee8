package sandbox

import (
	"fmt"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/xdp"
)

// xdpOpener opens XDP links with package xdp's modes: ns on the stack-side
// veth in the stack namespace, redirect and tunnel on the host NIC
// of the uplink namespace. Each link's programs, sockets and (tunnel) veth
// are held by descriptors of this process, so they go with it even when it
// is killed.
func (n *netstack) xdpOpener() XDPOpener {
	env := n.env
	return func(l XDPLink) (OpenedLink, error) {
		lo := xdp.LinkOptions{
			Sockets: xdp.Options{
				FrameSize:  l.FrameSize,
				NeedWakeup: l.NeedWakeup,
				Logger:     env.Logger,
			},
			Endpoint: xdp.EndpointOptions{
				MTU:               uint32(l.MTU),
				Address:           tcpipLinkAddress(l.LinkAddress),
				GSOMaxSize:        l.GSOMaxSize,
				GRO:               l.GRO,
				TXChecksumOffload: l.TXChecksumOffload,
				RXChecksumOffload: l.RXChecksumOffload,
				Logger:            env.Logger,
				Faults:            dataplane.FaultOptions{CorpusDir: env.FaultCorpus},
			},
		}
		var link *xdp.Link
		var err error
		switch l.Mode {
		case XDPNS:
			// The stack namespace by a path of this process's: the
			// xdp package enters namespaces by path.
			ns := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), env.StackNS)
			link, err = xdp.OpenNS(xdp.NSOptions{Netns: ns, Iface: l.Interface, LinkOptions: lo})
		case XDPRedirect:
			var addrs []netip.Addr
			for _, p := range l.Addresses {
				addrs = append(addrs, p.Addr())
			}
			link, err = xdp.OpenRedirect(xdp.RedirectOptions{Netns: l.NetNS, Iface: l.Interface, Addrs: addrs, LinkOptions: lo})
		case XDPTunnel:
			link, err = xdp.OpenTunnel(xdp.TunnelOptions{Netns: l.NetNS, Iface: l.Interface, LinkOptions: lo})
		default:
			return OpenedLink{}, fmt.Errorf("XDP mode %v: nothing to open", l.Mode)
		}
		if err != nil {
			return OpenedLink{}, err
		}
		ep := link.Endpoint
		var lep stack.LinkEndpoint = ep
		if l.Mode == XDPNS && env.tap != nil {
			// The tap records the sandbox's eth0, which is this link in
			// ns mode.
			lep = env.tap.wrap(ep)
		}
		if l.Mode != XDPNS {
			msg := fmt.Sprintf("sandbox: --xdp %v: the netstack owns %s on %s (%s), MAC %v, %d AF_XDP queues in %s mode",
				XDPConfig{Mode: l.Mode, Interface: l.Interface}, joinPrefixes(l.Addresses), l.Interface, l.AddressSource,
				link.Sockets.HardwareAddr(), link.Sockets.Len(), ep.Mode())
			// A warning, so that it shows at sluice's default level: the
			// netstack now takes traffic off a host NIC, and with the
			// NIC's own addresses the host loses what it had on them.
			env.Logger.Warn(msg)
		}
		return OpenedLink{
			Endpoint: lep,
			Stats:    ep.Stats,
			ModeNames: func() []string {
				names := make([]string, ep.NumQueues())
				for i := range names {
					names[i] = "xdp-" + ep.Mode().String()
				}
				return names
			},
			Offloads: ep.Offloads,
			XDP: func() *xdp.XDPStats {
				x, err := ep.XDPStats()
				if err != nil {
					return nil
				}
				return &x
			},
			Stop: func() {
				ep.Close()
				ep.Wait()
			},
			Release: func() {
				if err := link.Close(); err != nil {
					env.Logger.Warn("sandbox: XDP teardown", "link", l.Name, "err", err)
				}
			},
		}, nil
	}
}

// NIC implements NICFactSource: the interface's MTU, global addresses and
// the default routes through it.
func (HostFactSource) NIC(ns, name string) (NICFacts, error) {
	h, err := handleFor(ns)
	if err != nil {
		return NICFacts{}, err
	}
	defer h.Close()
	lk, err := h.LinkByName(name)
	if err != nil {
		return NICFacts{}, fmt.Errorf("no interface %q: %w", name, err)
	}
	f := NICFacts{Name: name, MTU: lk.Attrs().MTU}
	addrs, err := h.AddrList(lk, netlink.FAMILY_ALL)
	if err != nil {
		return f, fmt.Errorf("addresses of %s: %w", name, err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if !ip.IsGlobalUnicast() || ip.IsLinkLocalUnicast() {
			continue
		}
		bits, _ := a.Mask.Size()
		f.Addrs = append(f.Addrs, netip.PrefixFrom(ip, bits))
	}
	routes, err := h.RouteList(lk, netlink.FAMILY_ALL)
	if err != nil {
		return f, fmt.Errorf("routes of %s: %w", name, err)
	}
	for _, r := range routes {
		if r.Dst != nil && !isDefault(r.Dst.IP, r.Dst.Mask) || r.Gw == nil {
			continue
		}
		gw, ok := netip.AddrFromSlice(r.Gw)
		if !ok {
			continue
		}
		gw = gw.Unmap()
		if gw.Is4() && !f.Gateway4.IsValid() {
			f.Gateway4 = gw
		} else if gw.Is6() && !f.Gateway6.IsValid() {
			f.Gateway6 = gw
		}
	}
	return f, nil
}

func isDefault(_, mask []byte) bool {
	for _, b := range mask {
		if b != 0 {
			return false
		}
	}
	return true
}
