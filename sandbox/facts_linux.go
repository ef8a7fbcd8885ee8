package sandbox

import (
	"fmt"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/netns"
)

// HostFactSource reads host facts from the running kernel. It only reads:
// netlink dumps, capget, and a throwaway packet socket for the ring probe.
type HostFactSource struct{}

var _ FactSource = HostFactSource{}

// Routes implements FactSource.
func (HostFactSource) Routes(ns string) ([]HostRoute, error) {
	h, err := handleFor(ns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	routes, err := h.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	names := map[int]string{}
	var out []HostRoute
	for _, r := range routes {
		if r.Dst == nil {
			continue // a default route
		}
		ip, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			continue
		}
		bits, _ := r.Dst.Mask.Size()
		p := netip.PrefixFrom(ip.Unmap(), bits).Masked()
		dev, ok := names[r.LinkIndex]
		if !ok {
			dev = fmt.Sprintf("ifindex %d", r.LinkIndex)
			if l, err := h.LinkByIndex(r.LinkIndex); err == nil {
				dev = l.Attrs().Name
			}
			names[r.LinkIndex] = dev
		}
		out = append(out, HostRoute{Dst: p, Dev: dev})
	}
	return out, nil
}

// handleFor opens a netlink handle in namespace ns ("" is the caller's).
func handleFor(ns string) (*netlink.Handle, error) {
	if ns == "" {
		return netlink.NewHandle()
	}
	nsh, err := vnetns.GetFromPath(netns.Path(ns))
	if err != nil {
		return nil, fmt.Errorf("open namespace %s: %w", ns, err)
	}
	defer nsh.Close()
	return netlink.NewHandleAt(nsh)
}

// capBits maps the capability names capsFor uses to their numbers.
var capBits = map[string]uint{
	"CAP_NET_ADMIN": unix.CAP_NET_ADMIN,
	"CAP_NET_RAW":   unix.CAP_NET_RAW,
	"CAP_SYS_ADMIN": unix.CAP_SYS_ADMIN,
}

// MissingCaps implements FactSource.
func (HostFactSource) MissingCaps(caps []string) ([]string, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil, os.NewSyscallError("capget", err)
	}
	var missing []string
	for _, c := range caps {
		bit, ok := capBits[c]
		if !ok {
			return nil, fmt.Errorf("unknown capability %s", c)
		}
		if data[bit/32].Effective&(1<<(bit%32)) == 0 {
			missing = append(missing, c)
		}
	}
	return missing, nil
}

// PacketRing implements FactSource: PACKET_VERSION is what a ring needs
// first, and a kernel without ring support rejects it.
func (HostFactSource) PacketRing() bool {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V3) == nil
}
