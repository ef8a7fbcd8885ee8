//go:build linux

package xdp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/sluicenet/sluice/bpf"
	"github.com/sluicenet/sluice/internal/netns"
)

// Link is a mode set up: sluice's XDP programs, the AF_XDP sockets and the
// endpoint over them. Close tears it all down, in order. Nothing of it is
// pinned and every part is held by a descriptor of this process (bpf links,
// sockets, and in tunnel mode the namespace of the veth's far end), so a
// process that dies, even by SIGKILL, leaves nothing behind: the kernel
// detaches the programs, releases the sockets and deletes the veth.
type Link struct {
	// Mode is what was set up.
	Mode Mode
	// Endpoint is the stack.LinkEndpoint to give the stack. Removing its
	// NIC (Attach(nil)) stops it; Close stops it too.
	Endpoint *Endpoint
	// Sockets are the AF_XDP sockets the endpoint reads and writes.
	Sockets *Sockets
	// Attachments are sluice's XDP programs, each with its helpers: the
	// redirect program on the device the sockets read, and in tunnel mode
	// tunnel-host on the NIC (with tunnel-veth on the veth and any peer
	// helper).
	Attachments []*bpf.Attachment
	// Veth is, in tunnel mode, the near end of the tunnel veth, in the
	// NIC's namespace; its far end is in a namespace private to the Link.
	Veth string

	undo undoList
	once sync.Once
	err  error
}

// Close stops the endpoint and waits for its readers, detaches the
// programs (so that the host gets its traffic back at once), closes the
// sockets and removes what the mode created. Calling it again returns the
// first result.
func (l *Link) Close() error {
	l.once.Do(func() {
		if l.Endpoint != nil {
			l.Endpoint.Close()
			l.Endpoint.Wait()
		}
		var errs []error
		for i := len(l.Attachments) - 1; i >= 0; i-- {
			errs = append(errs, l.Attachments[i].Detach())
		}
		if l.Sockets != nil {
			errs = append(errs, l.Sockets.Close())
		}
		errs = append(errs, l.undo.run())
		l.err = errors.Join(errs...)
	})
	return l.err
}

// undoList runs cleanup steps in reverse order of registration.
type undoList []func() error

func (u *undoList) add(f func() error) { *u = append(*u, f) }

func (u *undoList) run() error {
	var errs []error
	for i := len(*u) - 1; i >= 0; i-- {
		errs = append(errs, (*u)[i]())
	}
	*u = nil
	return errors.Join(errs...)
}

// OpenNS sets up ns mode: the redirect program on the veth Iface hands
// every frame to the AF_XDP socket of its rx queue, one per queue, read by
// the returned Link's endpoint. In driver mode the program turns TSO off on
// the veth's peer (KERNEL-NOTES item 4), so the peer sends MTU-sized
// frames: EndpointOptions.GRO puts them back together for the stack. The
// peer's kernel leaves TCP and UDP checksums partial for an offload that a
// veth never does (tx-checksumming is on by default), and AF_XDP hands the
// frames over with no word of it, so the stack must not verify them: set
// EndpointOptions.RXChecksumOffload, as runsc does, or turn tx-checksumming
// off on the peer (`ethtool -K PEER tx off`); otherwise every TCP segment
// from the peer is dropped as corrupt. On error nothing is left behind.
func OpenNS(o NSOptions) (_ *Link, err error) {
	if o.Iface == "" {
		return nil, errors.New("xdp: NSOptions.Iface: required")
	}
	l := &Link{Mode: Mode{Kind: ModeNS}}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	a, err := bpf.Attach(bpf.AttachOptions{Netns: o.Netns, Iface: o.Iface, Program: bpf.Redirect, Mode: o.AttachMode})
	if err != nil {
		return nil, fmt.Errorf("xdp: ns mode on %s: %w", o.Iface, err)
	}
	l.Attachments = append(l.Attachments, a)
	if err := l.openEndpoint(Device{Netns: o.Netns, Iface: o.Iface, Queues: o.Queues}, a, o.LinkOptions, "", 0); err != nil {
		return nil, fmt.Errorf("xdp: ns mode on %s: %w", o.Iface, err)
	}
	return l, nil
}

// openEndpoint opens the sockets on dev, registers them in a's XSKMAP and
// makes the endpoint. addr and mtu, when set, replace the device's as
// defaults.
func (l *Link) openEndpoint(dev Device, a *bpf.Attachment, o LinkOptions, addr tcpip.LinkAddress, mtu int) error {
	s, err := Open(dev, o.Sockets)
	if err != nil {
		return err
	}
	l.Sockets = s
	if err := s.Register(a.Objects.XSKs); err != nil {
		return err
	}
	eo := o.Endpoint
	eo.Sockets = s
	if eo.Address == "" {
		eo.Address = addr
	}
	if eo.MTU == 0 && mtu > 0 {
		eo.MTU = uint32(min(mtu, maxFrameLen(s.opts.FrameSize)-14))
	}
	if eo.InterfaceIndex == 0 {
		eo.InterfaceIndex = s.Ifindex()
	}
	if eo.Logger == nil {
		eo.Logger = s.opts.Logger
	}
	ep, err := NewEndpoint(eo)
	if err != nil {
		return err
	}
	l.Endpoint = ep
	return nil
}

// OpenRedirect sets up redirect mode: AF_XDP sockets on every rx queue of
// the NIC, and the neighbour-aware redirect program, which hands them the
// frames to Addrs and the ARP and neighbour discovery frames about Addrs;
// everything else stays with the host, SSH to the host's own addresses
// included. The endpoint's MAC is the NIC's: the stack and the host share
// the NIC. For IPv6 addresses the NIC joins their solicited-node multicast
// groups, so that a NIC that filters multicast passes the solicitations
// (the membership goes with the Link). On error nothing is left behind.
func OpenRedirect(o RedirectOptions) (_ *Link, err error) {
	if o.Iface == "" {
		return nil, errors.New("xdp: RedirectOptions.Iface: required")
	}
	if len(o.Addrs) == 0 {
		return nil, errors.New("xdp: RedirectOptions.Addrs: the stack needs at least one address on the NIC")
	}
	for _, a := range o.Addrs {
		if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() {
			return nil, fmt.Errorf("xdp: RedirectOptions.Addrs: %v is not a unicast address", a)
		}
	}
	l := &Link{Mode: Mode{Kind: ModeRedirect, Iface: o.Iface}}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	a, err := bpf.AttachRedirectNeigh(bpf.AttachOptions{Netns: o.Netns, Iface: o.Iface, Mode: o.AttachMode,
		Load: bpf.LoadOptions{RedirectAddrs: o.Addrs}})
	if err != nil {
		return nil, fmt.Errorf("xdp: redirect mode on %s: %w", o.Iface, err)
	}
	l.Attachments = append(l.Attachments, a)
	if err := l.joinSolicitedNodes(o.Netns, o.Iface, o.Addrs); err != nil {
		return nil, fmt.Errorf("xdp: redirect mode on %s: %w", o.Iface, err)
	}
	if err := l.openEndpoint(Device{Netns: o.Netns, Iface: o.Iface, Queues: o.Queues}, a, o.LinkOptions, "", 0); err != nil {
		return nil, fmt.Errorf("xdp: redirect mode on %s: %w", o.Iface, err)
	}
	return l, nil
}

// joinSolicitedNodes adds the solicited-node multicast MAC of each IPv6
// address (33:33:ff plus its last 24 bits, RFC 4291 and RFC 2464) to the
// NIC's filter, through a packet socket's membership, which the kernel
// drops when the socket closes.
func (l *Link) joinSolicitedNodes(ns, iface string, addrs []netip.Addr) error {
	var macs [][6]byte
	for _, a := range addrs {
		if a.Is6() && !a.Is4In6() {
			b := a.As16()
			macs = append(macs, [6]byte{0x33, 0x33, 0xff, b[13], b[14], b[15]})
		}
	}
	if len(macs) == 0 {
		return nil
	}
	return netns.Do(ns, func() error {
		ifc, err := net.InterfaceByName(iface)
		if err != nil {
			return fmt.Errorf("interface %q: %w", iface, err)
		}
		// Protocol 0: the socket receives nothing, it only holds the
		// memberships.
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return os.NewSyscallError("socket AF_PACKET", err)
		}
		l.undo.add(func() error { return unix.Close(fd) })
		for _, m := range macs {
			mr := &unix.PacketMreq{Ifindex: int32(ifc.Index), Type: unix.PACKET_MR_MULTICAST, Alen: 6}
			copy(mr.Address[:], m[:])
			if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, mr); err != nil {
				return fmt.Errorf("join multicast %x on %s: %w", m, iface, os.NewSyscallError("setsockopt PACKET_ADD_MEMBERSHIP", err))
			}
		}
		return nil
	})
}

var tunnelSeq atomic.Uint32

// farEnd is the name of the tunnel veth's far end, alone in its
// namespace.
const farEnd = "xdp0"

// OpenTunnel sets up tunnel mode: a veth pair whose near end is in the
// NIC's namespace and whose far end is alone in a new namespace held only
// by the Link (so the pair goes away with it, or with the process);
// tunnel-host on the NIC sends every frame but control traffic (PassPorts)
// into the veth, tunnel-veth sends what comes back out of the NIC, and the
// redirect program on the far end hands the frames to AF_XDP sockets, one
// per queue, read by the endpoint. The far end takes the NIC's MAC and MTU,
// and the endpoint its MAC: the stack answers for the NIC. As with any XDP
// redirect, frames arrive with the checksums they had on the wire, so the
// stack verifies them; a frame that another local stack left with a partial
// checksum (a veth sender with tx-checksumming on) does not survive native
// XDP redirection. On error nothing is left behind.
func OpenTunnel(o TunnelOptions) (_ *Link, err error) {
	if o.Iface == "" {
		return nil, errors.New("xdp: TunnelOptions.Iface: required")
	}
	near := o.Veth
	if near == "" {
		near = fmt.Sprintf("sx%d.%d", os.Getpid(), tunnelSeq.Add(1))
	}
	if len(near) > 15 {
		return nil, fmt.Errorf("xdp: TunnelOptions.Veth %q: longer than 15 bytes", near)
	}
	l := &Link{Mode: Mode{Kind: ModeTunnel, Iface: o.Iface}, Veth: near}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	wrap := func(err error) error { return fmt.Errorf("xdp: tunnel mode on %s: %w", o.Iface, err) }

	// The NIC's address, MTU and queue count.
	var nicMAC net.HardwareAddr
	var nicMTU, queues int
	err = netns.Do(o.Netns, func() error {
		nic, err := netlink.LinkByName(o.Iface)
		if err != nil {
			return fmt.Errorf("interface %q: %w", o.Iface, err)
		}
		nicMAC, nicMTU = nic.Attrs().HardwareAddr, nic.Attrs().MTU
		if queues, err = rxChannels(o.Iface); err != nil || queues < 1 {
			queues = max(1, nic.Attrs().NumRxQueues)
		}
		return nil
	})
	if err != nil {
		return nil, wrap(err)
	}
	// One far-end queue per CPU at most: tunnel-host's redirect picks the
	// far end's rx queue by the CPU it runs on (veth_xdp_xmit).
	queues = min(queues, runtime.NumCPU())

	nsFD, err := netns.NewAnonymous()
	if err != nil {
		return nil, wrap(err)
	}
	l.undo.add(func() error { return unix.Close(nsFD) })
	farNS := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), nsFD)

	err = netns.Do(o.Netns, func() error {
		v := &netlink.Veth{
			LinkAttrs: netlink.LinkAttrs{Name: near, MTU: nicMTU, NumTxQueues: queues, NumRxQueues: queues},
			PeerName:  farEnd, PeerHardwareAddr: nicMAC, PeerNamespace: netlink.NsFd(nsFD),
			PeerNumTxQueues: uint32(queues), PeerNumRxQueues: uint32(queues), PeerMTU: uint32(nicMTU),
		}
		if err := netlink.LinkAdd(v); err != nil {
			return fmt.Errorf("create veth %s: %w", near, err)
		}
		l.undo.add(func() error {
			// Deleting one end deletes the pair; gone already is fine
			// (the private namespace took it along).
			return netns.Do(o.Netns, func() error {
				if lk, err := netlink.LinkByName(near); err == nil {
					return netlink.LinkDel(lk)
				}
				return nil
			})
		})
		lk, err := netlink.LinkByName(near)
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lk)
	})
	if err != nil {
		return nil, wrap(err)
	}
	err = netns.Do(farNS, func() error {
		lk, err := netlink.LinkByName(farEnd)
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lk)
	})
	if err != nil {
		return nil, wrap(fmt.Errorf("set the far end up: %w", err))
	}

	// The far end's program first: the tunnel's peer helper then finds the
	// far end busy and leaves it alone.
	a, err := bpf.Attach(bpf.AttachOptions{Netns: farNS, Iface: farEnd, Program: bpf.Redirect, Mode: o.AttachMode})
	if err != nil {
		return nil, wrap(err)
	}
	l.Attachments = append(l.Attachments, a)
	if err := l.openEndpoint(Device{Netns: farNS, Iface: farEnd, Queues: o.Queues}, a, o.LinkOptions, tcpip.LinkAddress(nicMAC), nicMTU); err != nil {
		return nil, wrap(err)
	}

	// An explicit path for the caller's own namespace: bpf's peer helper
	// then never takes the far end's ifindex for one of this namespace.
	hostNS := o.Netns
	if hostNS == "" {
		hostNS = fmt.Sprintf("/proc/%d/ns/net", os.Getpid())
	}
	t, err := bpf.Attach(bpf.AttachOptions{Netns: hostNS, Iface: o.Iface, Program: bpf.Tunnel, Peer: near,
		Mode: o.AttachMode, Load: bpf.LoadOptions{PassPorts: o.PassPorts}})
	if err != nil {
		return nil, wrap(err)
	}
	l.Attachments = append(l.Attachments, t)
	for _, n := range t.Notes {
		l.Sockets.opts.Logger.Debug("xdp: tunnel", "note", n)
	}
	return l, nil
}
