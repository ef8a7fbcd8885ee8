package sandbox

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/netns"
)

// nsInode identifies a namespace (st_dev, st_ino of its nsfs file).
type nsInode struct{ dev, ino uint64 }

func inodeOfFD(fd int) (nsInode, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nsInode{}, os.NewSyscallError("fstat", err)
	}
	return nsInode{st.Dev, st.Ino}, nil
}

// killNamespaceProcesses sends SIGKILL to every process whose network
// namespace is ns: what the command left behind (daemons it started) when
// it exited. It returns how many it signalled.
func killNamespaceProcesses(ns nsInode) int {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	n := 0
	self := os.Getpid()
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil || pid == self {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(d+"/ns/net", &st) != nil || st.Dev != ns.dev || st.Ino != ns.ino {
			continue
		}
		if unix.Kill(pid, unix.SIGKILL) == nil {
			n++
		}
	}
	return n
}

// nlHandle opens a netlink handle whose socket lives in the namespace of
// descriptor fd; the descriptor stays the caller's.
func nlHandle(fd int) (*netlink.Handle, error) {
	h, err := netlink.NewHandleAt(vnetns.NsHandle(fd))
	if err != nil {
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	return h, nil
}

// createVeth creates the veth pair: link.Name in the stack namespace
// (stackNS) and sb.Name directly in the child's (childNS), so the child's
// name never exists anywhere else. Neither end is up yet.
func createVeth(stackNS, childNS int, link StackLink, sb SandboxLink) error {
	h, err := nlHandle(stackNS)
	if err != nil {
		return err
	}
	defer h.Close()
	la := netlink.NewLinkAttrs()
	la.Name = link.Name
	la.MTU = link.MTU
	veth := &netlink.Veth{
		LinkAttrs:     la,
		PeerName:      sb.Name,
		PeerNamespace: netlink.NsFd(childNS),
		PeerMTU:       uint32(sb.MTU),
		PeerTxQLen:    -1,
	}
	if link.Queues > 1 {
		// One AF_XDP socket per queue (--xdp ns): the sandbox's
		// kernel spreads its flows over eth0's tx queues, each of
		// which feeds the same rx queue of the stack's end.
		veth.NumTxQueues, veth.NumRxQueues = link.Queues, link.Queues
		veth.PeerNumTxQueues, veth.PeerNumRxQueues = uint32(link.Queues), uint32(link.Queues)
	}
	if err := h.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s/%s: %w", link.Name, sb.Name, err)
	}
	return nil
}

// configureStackSide brings the stack's end of the veth up with IPv6 off on
// it: the stack namespace's own kernel must stay silent there (no
// link-local address, DAD, router solicitations or MLD reports), since the
// device only carries the netstack's frames.
func configureStackSide(stackNS int, link StackLink) error {
	err := netns.DoFD(stackNS, func() error {
		// /proc/sys/net follows the network namespace of the thread
		// that opens it.
		p := "/proc/sys/net/ipv6/conf/" + link.Name + "/disable_ipv6"
		if err := os.WriteFile(p, []byte("1"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("switch IPv6 off on %s: %w", link.Name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	h, err := nlHandle(stackNS)
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(link.Name)
	if err != nil {
		return fmt.Errorf("find %s: %w", link.Name, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", link.Name, err)
	}
	return nil
}

// configureSandboxSide sets up the child's namespace: lo up, and eth0 (when
// sb has one) with its addresses, up, and default routes through the
// gateways. It returns eth0's MAC address.
func configureSandboxSide(childNS int, sb SandboxLink) (net.HardwareAddr, error) {
	h, err := nlHandle(childNS)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("find lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return nil, fmt.Errorf("set lo up: %w", err)
	}
	if sb.Name == "" {
		return nil, nil
	}
	l, err := h.LinkByName(sb.Name)
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", sb.Name, err)
	}
	for _, a := range sb.Addresses {
		addr := &netlink.Addr{IPNet: ipNet(a)}
		if a.Addr().Is6() {
			// No duplicate address detection: the segment holds only
			// the sandbox and the gateway, and DAD would keep the
			// address tentative (unusable) for a second.
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(l, addr); err != nil {
			return nil, fmt.Errorf("add address %v to %s: %w", a, sb.Name, err)
		}
	}
	if err := h.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("set %s up: %w", sb.Name, err)
	}
	for _, gw := range []netip.Addr{sb.Gateway4, sb.Gateway6} {
		if !gw.IsValid() {
			continue
		}
		r := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.IP(gw.AsSlice())}
		if gw.Is6() {
			r.Dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
		} else {
			r.Dst = &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
		}
		if err := h.RouteAdd(r); err != nil {
			return nil, fmt.Errorf("add default route via %v on %s: %w", gw, sb.Name, err)
		}
	}
	l, err = h.LinkByName(sb.Name)
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", sb.Name, err)
	}
	return l.Attrs().HardwareAddr, nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
