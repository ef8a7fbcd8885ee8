package bpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/netns"
)

// AttachOptions say what to attach where. Zero values mean the defaults.
type AttachOptions struct {
	// Netns is the interface's network namespace, a name under
	// /var/run/netns or a path; "" is the caller's.
	Netns string
	// Iface is the interface to attach to (required).
	Iface string
	// Program is Pass, Drop, Redirect or Tunnel (required).
	Program Program
	// Mode is the XDP attach mode; ModeAuto lets the kernel choose.
	Mode Mode
	// Peer, for Tunnel, is the veth (in Netns) whose far end the
	// user-space stack reads: Iface's traffic goes there and back.
	Peer string
	// Load configures the program (redirect addresses, pass ports).
	Load LoadOptions
	// Pin keeps the attachment after the process exits, pinned under
	// PinDir(PinRoot, ...). Unpinned attachments end with their links.
	Pin bool
	// PinRoot is the bpffs directory to pin under; "" is DefaultPinRoot.
	PinRoot string
	// Owner is recorded with the pins; the zero Owner is persistent.
	Owner Owner
	// NoPeerHelper skips putting the pass program on the peer of a veth
	// the program redirects into (the frames are then dropped in driver
	// mode unless the peer has GRO on or a program of its own).
	NoPeerHelper bool
}

func (o AttachOptions) withDefaults() AttachOptions {
	if o.PinRoot == "" {
		o.PinRoot = DefaultPinRoot
	}
	return o
}

func (o AttachOptions) validate() error {
	if o.Iface == "" {
		return errors.New("bpf: AttachOptions.Iface: required")
	}
	switch o.Program {
	case Pass, Drop, Redirect:
	case Tunnel:
		if o.Peer == "" {
			return errors.New("bpf: AttachOptions.Peer: the tunnel program needs the veth to redirect to")
		}
		if o.Peer == o.Iface {
			return fmt.Errorf("bpf: AttachOptions.Peer %q: must differ from Iface", o.Peer)
		}
	default:
		return fmt.Errorf("bpf: AttachOptions.Program %q: want pass, drop, redirect or tunnel", o.Program)
	}
	switch o.Mode {
	case ModeAuto, ModeGeneric, ModeDriver:
	default:
		return fmt.Errorf("bpf: AttachOptions.Mode %s: want auto, generic or driver", o.Mode)
	}
	return nil
}

// Attachment is one program attached to one interface, with the helpers it
// needed (the tunnel's veth half, programs on redirect targets' peers).
type Attachment struct {
	Program Program
	Role    Role
	Iface   string
	Ifindex int
	Netns   string
	NetnsID uint64
	// Mode is the mode the kernel chose (never ModeAuto).
	Mode      Mode
	ProgramID uint32
	LinkID    uint32
	// PinDir is where the attachment is pinned, "" if it is not.
	PinDir  string
	Objects *Objects
	Link    link.Link
	Helpers []*Attachment
	// Notes are things the operator should know (a helper that could not
	// be placed, and why).
	Notes []string
}

// Close releases the descriptors. A pinned attachment stays; an unpinned
// one is detached, as its link goes with its last descriptor.
func (a *Attachment) Close() error {
	if a == nil {
		return nil
	}
	var errs []error
	for _, h := range a.Helpers {
		errs = append(errs, h.Close())
	}
	if a.Link != nil {
		errs = append(errs, a.Link.Close())
		a.Link = nil
	}
	errs = append(errs, a.Objects.Close())
	return errors.Join(errs...)
}

// Detach detaches a and its helpers now and removes their pins.
func (a *Attachment) Detach() error {
	if a == nil {
		return nil
	}
	var errs []error
	for _, h := range a.Helpers {
		errs = append(errs, h.Detach())
	}
	if a.Link != nil {
		if err := a.Link.Detach(); err != nil && !errors.Is(err, unix.ENOLINK) {
			errs = append(errs, fmt.Errorf("bpf: detach %s from %s: %w", a.Program, a.Iface, err))
		}
	}
	if a.PinDir != "" {
		errs = append(errs, removeDir(a.PinDir))
	}
	errs = append(errs, a.Close())
	return errors.Join(errs...)
}

// Attach loads and attaches a program as opts says. On error nothing is
// left attached or pinned.
func Attach(opts AttachOptions) (_ *Attachment, err error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if opts.Pin {
		if err := checkBPFFS(opts.PinRoot); err != nil {
			return nil, err
		}
	}
	nsID, err := NetnsID(opts.Netns)
	if err != nil {
		return nil, err
	}
	// Look before loading: an unknown interface or a busy hook is the
	// common mistake, and its error should not hide behind a load error.
	ifaces := []string{opts.Iface}
	if opts.Program == Tunnel {
		ifaces = append(ifaces, opts.Peer)
	}
	idx := map[string]int{}
	err = netns.Do(opts.Netns, func() error {
		for _, name := range ifaces {
			l, err := lookupLink(name, opts.Netns)
			if err != nil {
				return err
			}
			if err := checkFree(l, opts.PinRoot, nsID); err != nil {
				err.(*AlreadyAttachedError).Netns = opts.Netns
				return err
			}
			idx[name] = l.Attrs().Index
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	var main *Attachment
	defer func() {
		if err != nil {
			main.Detach()
		}
	}()
	switch opts.Program {
	case Tunnel:
		host, err := Load(TunnelHost, opts.Load)
		if err != nil {
			return nil, err
		}
		main = &Attachment{Program: TunnelHost, Role: RoleMain, Objects: host}
		veth, err := Load(TunnelVeth, opts.Load)
		if err != nil {
			return nil, err
		}
		vethAtt := &Attachment{Program: TunnelVeth, Role: RoleTunnelVeth, Objects: veth}
		main.Helpers = append(main.Helpers, vethAtt)
		err = netns.Do(opts.Netns, func() error {
			if err := host.SetTxPort(idx[opts.Peer]); err != nil {
				return err
			}
			return veth.SetTxPort(idx[opts.Iface])
		})
		if err != nil {
			return nil, err
		}
		if err := attachXDP(main, opts.Netns, nsID, opts.Iface, opts.Mode); err != nil {
			return nil, err
		}
		if err := attachXDP(vethAtt, opts.Netns, nsID, opts.Peer, opts.Mode); err != nil {
			return nil, err
		}
		if !opts.NoPeerHelper {
			// Each half redirects into the other's device.
			for _, a := range []*Attachment{main, vethAtt} {
				target := opts.Peer
				if a == vethAtt {
					target = opts.Iface
				}
				if a.Mode != ModeDriver {
					continue
				}
				h, note, err := ensurePeerHelper(opts.Netns, target)
				if err != nil {
					return nil, err
				}
				if note != "" {
					main.Notes = append(main.Notes, note)
				}
				if h != nil {
					main.Helpers = append(main.Helpers, h)
				}
			}
		}
	default:
		objs, err := Load(opts.Program, opts.Load)
		if err != nil {
			return nil, err
		}
		main = &Attachment{Program: opts.Program, Role: RoleMain, Objects: objs}
		if err := attachXDP(main, opts.Netns, nsID, opts.Iface, opts.Mode); err != nil {
			return nil, err
		}
	}
	if opts.Pin {
		if err := pinAttachment(main, opts); err != nil {
			return nil, err
		}
	}
	return main, nil
}

// lookupLink finds an interface in the calling thread's namespace.
func lookupLink(name, ns string) (netlink.Link, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			where := "this network namespace"
			if ns != "" {
				where = "network namespace " + ns
			}
			return nil, fmt.Errorf("bpf: %q (%w) in %s: check the name with `ip link` (or pass --netns)", name, ErrUnknownInterface, where)
		}
		return nil, fmt.Errorf("bpf: look up interface %q: %w", name, classify(err))
	}
	return l, nil
}

// xdpState reports what XDP program an interface has, from its netlink
// attributes (IFLA_XDP), whoever attached it.
func xdpState(l netlink.Link) (Mode, uint32) {
	x := l.Attrs().Xdp
	if x == nil || !x.Attached {
		return ModeNone, 0
	}
	// IFLA_XDP_ATTACHED values: XDP_ATTACHED_DRV=1, SKB=2, HW=3, MULTI=4
	// (<linux/if_link.h>).
	switch x.AttachMode {
	case 1:
		return ModeDriver, x.ProgId
	case 2:
		return ModeGeneric, x.ProgId
	case 3:
		return ModeOffload, x.ProgId
	}
	return ModeMulti, x.ProgId
}

// checkFree returns an *AlreadyAttachedError if l has an XDP program.
func checkFree(l netlink.Link, root string, nsID uint64) error {
	mode, id := xdpState(l)
	if mode == ModeNone {
		return nil
	}
	e := &AlreadyAttachedError{Iface: l.Attrs().Name, ProgramID: id, Mode: mode, ProgramName: "?"}
	if p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id)); err == nil {
		if info, err := p.Info(); err == nil {
			e.ProgramName = info.Name
		}
		p.Close()
	}
	if d := PinDir(root, nsID, l.Attrs().Name); dirExists(d) {
		e.PinDir = d
	}
	return e
}

func dirExists(d string) bool {
	st, err := os.Stat(d)
	return err == nil && st.IsDir()
}

func xdpFlags(m Mode) link.XDPAttachFlags {
	switch m {
	case ModeGeneric:
		return link.XDPGenericMode
	case ModeDriver:
		return link.XDPDriverMode
	}
	return 0
}

// attachXDP attaches a.Objects.Program to ifname inside ns and fills in
// what the kernel reports.
func attachXDP(a *Attachment, ns string, nsID uint64, ifname string, mode Mode) error {
	a.Iface, a.Netns, a.NetnsID = ifname, ns, nsID
	return netns.Do(ns, func() error {
		l, err := lookupLink(ifname, ns)
		if err != nil {
			return err
		}
		a.Ifindex = l.Attrs().Index
		lk, err := link.AttachXDP(link.XDPOptions{Program: a.Objects.Program, Interface: a.Ifindex, Flags: xdpFlags(mode)})
		if err != nil {
			return attachError(err, a, l, mode, nsID)
		}
		a.Link = lk
		if info, err := lk.Info(); err == nil {
			a.LinkID = uint32(info.ID)
			a.ProgramID = uint32(info.Program)
		}
		l, err = netlink.LinkByIndex(a.Ifindex)
		if err != nil {
			return fmt.Errorf("bpf: read back XDP state of %s: %w", ifname, err)
		}
		a.Mode, _ = xdpState(l)
		return nil
	})
}

func attachError(err error, a *Attachment, l netlink.Link, mode Mode, nsID uint64) error {
	ifname := l.Attrs().Name
	switch {
	case errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST):
		if l2, lerr := netlink.LinkByIndex(l.Attrs().Index); lerr == nil {
			if e := checkFree(l2, "", nsID); e != nil {
				return fmt.Errorf("bpf: attach %s to %s: %w", a.Program, ifname, e)
			}
		}
		return fmt.Errorf("bpf: attach %s to %s: %w (%w)", a.Program, ifname, ErrAlreadyAttached, err)
	case errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.Errno(524)): // 524 is the kernel-internal ENOTSUPP
		return fmt.Errorf("bpf: attach %s to %s in %s mode: %w (%v): use --mode generic (or auto)", a.Program, ifname, mode, ErrModeNotSupported, err)
	}
	return fmt.Errorf("bpf: attach %s to %s in %s mode: %w", a.Program, ifname, mode, classify(err))
}

// classify wraps permission failures with the fix.
func classify(err error) error {
	// The verifier's rejections come back as EACCES too, but they are
	// not about privilege.
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return err
	}
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("%w: run as root (needs CAP_BPF, CAP_NET_ADMIN and, for pinning, CAP_SYS_ADMIN): %w", ErrPermission, err)
	}
	return err
}

// ensurePeerHelper puts the pass program, in driver mode, on the peer of
// veth target (in namespace ns) when the peer has no XDP program. It
// returns nil and no error when target is not a veth or its peer already
// has a program, and a note when the peer cannot be reached.
func ensurePeerHelper(ns, target string) (*Attachment, string, error) {
	var peerIdx int
	var peerNS string
	var isVeth bool
	err := netns.Do(ns, func() error {
		l, err := lookupLink(target, ns)
		if err != nil {
			return err
		}
		v, ok := l.(*netlink.Veth)
		if !ok {
			return nil
		}
		isVeth = true
		if peerIdx, err = netlink.VethPeerIndex(v); err != nil {
			return fmt.Errorf("bpf: find the peer of veth %s: %w", target, err)
		}
		peerNS = ns
		if id := l.Attrs().NetNsID; id >= 0 {
			peerNS = findNetnsByID(id)
		}
		return nil
	})
	if err != nil || !isVeth {
		return nil, "", err
	}
	if peerNS == "" && ns != "" {
		return nil, fmt.Sprintf("the peer of veth %s is in a network namespace sluice cannot open: give it an XDP program or `ethtool -K PEER gro on`, or XDP_REDIRECT into %s drops frames in driver mode", target, target), nil
	}
	peerID, err := NetnsID(peerNS)
	if err != nil {
		return nil, "", err
	}
	var peerName string
	var busy bool
	err = netns.Do(peerNS, func() error {
		l, err := netlink.LinkByIndex(peerIdx)
		if err != nil {
			return fmt.Errorf("bpf: peer of veth %s (ifindex %d): %w", target, peerIdx, err)
		}
		peerName = l.Attrs().Name
		m, _ := xdpState(l)
		busy = m != ModeNone
		return nil
	})
	if err != nil || busy {
		return nil, "", err
	}
	objs, err := Load(Pass, LoadOptions{})
	if err != nil {
		return nil, "", err
	}
	h := &Attachment{Program: Pass, Role: RolePeerHelper, Objects: objs}
	// Driver mode: the peer's XDP rx queues, which veth_xdp_xmit needs,
	// exist only for a native program.
	if err := attachXDP(h, peerNS, peerID, peerName, ModeDriver); err != nil {
		objs.Close()
		return nil, "", fmt.Errorf("bpf: pass program on %s, the peer of %s: %w", peerName, target, err)
	}
	return h, "", nil
}

// findNetnsByID finds a path to the namespace that the calling thread's
// namespace knows as nsid: the named namespaces first, then those of
// running processes, as `ip link` does to print link-netns. "" if none.
func findNetnsByID(nsid int) string {
	var cands []string
	if ents, err := os.ReadDir(netns.RunDir); err == nil {
		for _, e := range ents {
			cands = append(cands, filepath.Join(netns.RunDir, e.Name()))
		}
	}
	if ents, err := os.ReadDir("/proc"); err == nil {
		for _, e := range ents {
			if _, err := strconv.Atoi(e.Name()); err == nil {
				cands = append(cands, filepath.Join("/proc", e.Name(), "ns/net"))
			}
		}
	}
	seen := map[uint64]bool{}
	for _, c := range cands {
		var st unix.Stat_t
		if unix.Stat(c, &st) != nil || seen[st.Ino] {
			continue
		}
		seen[st.Ino] = true
		fd, err := unix.Open(c, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		id, err := netlink.GetNetNsIdByFd(fd)
		unix.Close(fd)
		if err == nil && id == nsid {
			return c
		}
	}
	return ""
}

// pinAttachment pins main and its helpers, each in its interface's
// directory, tagged with opts.Owner at the end.
func pinAttachment(main *Attachment, opts AttachOptions) error {
	self, err := ProcessOwner(os.Getpid())
	if err != nil {
		return err
	}
	now := time.Now().UTC().Truncate(time.Second)
	all := append([]*Attachment{main}, main.Helpers...)
	metas := make([]PinMeta, len(all))
	mainDir := PinDir(opts.PinRoot, main.NetnsID, main.Iface)
	for i, a := range all {
		dir := PinDir(opts.PinRoot, a.NetnsID, a.Iface)
		metas[i] = PinMeta{Program: a.Program, Role: a.Role, Iface: a.Iface, Ifindex: a.Ifindex,
			Netns: a.Netns, NetnsID: a.NetnsID, Mode: a.Mode, Owner: self, Created: now}
		if i > 0 {
			metas[i].Parent = mainDir
			metas[0].Related = append(metas[0].Related, dir)
		}
	}
	// The main directory first, listing its helpers, so that a crash at
	// any later point leaves a group Clean can find and remove whole.
	for i, a := range all {
		dir := PinDir(opts.PinRoot, a.NetnsID, a.Iface)
		p, err := newPinner(dir, metas[i])
		if err != nil {
			return err
		}
		a.PinDir = dir
		if err := p.pin(a.Link, a.Objects); err != nil {
			return err
		}
	}
	for i := len(all) - 1; i >= 0; i-- {
		metas[i].Owner = opts.Owner
		if err := writeMeta(all[i].PinDir, metas[i]); err != nil {
			return err
		}
	}
	return nil
}

// DetachOptions name the interface whose sluice attachment to remove.
type DetachOptions struct {
	// Netns is the interface's namespace ("" the caller's).
	Netns string
	// Iface is the interface (required).
	Iface string
	// PinRoot is the bpffs directory pins live under; "" is DefaultPinRoot.
	PinRoot string
}

// Detach removes what sluice attached and pinned for an interface: the
// link, its maps and owner tag, and the helpers that came with it (the
// tunnel's other half, peer programs). It returns the directories removed.
// Programs attached by other tools are not touched: the error names them.
func Detach(opts DetachOptions) ([]string, error) {
	if opts.PinRoot == "" {
		opts.PinRoot = DefaultPinRoot
	}
	if opts.Iface == "" {
		return nil, errors.New("bpf: DetachOptions.Iface: required")
	}
	if err := checkBPFFS(opts.PinRoot); err != nil {
		return nil, err
	}
	nsID, err := NetnsID(opts.Netns)
	if err != nil {
		return nil, err
	}
	dir := PinDir(opts.PinRoot, nsID, opts.Iface)
	if !dirExists(dir) {
		var other error
		err := netns.Do(opts.Netns, func() error {
			l, err := lookupLink(opts.Iface, opts.Netns)
			if err != nil {
				return err
			}
			other = checkFree(l, "", nsID)
			return nil
		})
		if err != nil {
			return nil, err
		}
		var ae *AlreadyAttachedError
		if errors.As(other, &ae) {
			return nil, fmt.Errorf("bpf: detach %s: %w; its XDP program %q (id %d) was attached by another tool: remove it with that tool (for a netlink attachment, `ip link set dev %s xdp off`)", opts.Iface, ErrNotAttached, ae.ProgramName, ae.ProgramID, opts.Iface)
		}
		return nil, fmt.Errorf("bpf: detach %s: %w (no %s)", opts.Iface, ErrNotAttached, dir)
	}
	meta, err := ReadMeta(dir)
	if err != nil {
		// No readable tag: still sluice's directory; remove what is there.
		return []string{dir}, removeDir(dir)
	}
	if meta.Parent != "" {
		dir = meta.Parent
		if m, err := ReadMeta(dir); err == nil {
			meta = m
		}
	}
	removed := append([]string{dir}, meta.Related...)
	return removed, removeGroup(dir, meta)
}
