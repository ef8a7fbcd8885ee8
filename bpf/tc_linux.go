package bpf

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/netns"
)

// TCDirection is the TC hook: ingress or egress.
type TCDirection int

const (
	Ingress TCDirection = iota
	Egress
)

func (d TCDirection) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

// TCOptions say where to attach a SchedCLS program.
type TCOptions struct {
	// Netns is the interface's namespace ("" the caller's).
	Netns string
	// Iface is the interface (required).
	Iface string
	// Program is a SchedCLS program (required).
	Program   *ebpf.Program
	Direction TCDirection
}

// TCAttachment is a program on a TC hook: a TCX link (kernel >= 6.6) or,
// where TCX is missing, a direct-action cls_bpf filter on a clsact qdisc.
type TCAttachment struct {
	// Link is the TCX link, nil on the clsact path.
	Link link.Link
	// Legacy is true on the clsact path.
	Legacy bool

	netns  string
	filter *netlink.BpfFilter
	qdisc  *netlink.GenericQdisc // created by us, removed on Close
}

// AttachTC attaches a TC program, preferring TCX and falling back to a
// clsact qdisc with a cls_bpf filter, as tc(8) would set up.
func AttachTC(opts TCOptions) (*TCAttachment, error) {
	if opts.Iface == "" || opts.Program == nil {
		return nil, errors.New("bpf: TCOptions.Iface and TCOptions.Program: required")
	}
	t := &TCAttachment{netns: opts.Netns}
	err := netns.Do(opts.Netns, func() error {
		l, err := lookupLink(opts.Iface, opts.Netns)
		if err != nil {
			return err
		}
		at := ebpf.AttachTCXIngress
		if opts.Direction == Egress {
			at = ebpf.AttachTCXEgress
		}
		lk, err := link.AttachTCX(link.TCXOptions{Interface: l.Attrs().Index, Program: opts.Program, Attach: at})
		if err == nil {
			t.Link = lk
			return nil
		}
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("bpf: attach TCX %s on %s: %w", opts.Direction, opts.Iface, classify(err))
		}
		return t.attachClsact(l, opts)
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

func (t *TCAttachment) attachClsact(l netlink.Link, opts TCOptions) error {
	t.Legacy = true
	q := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}
	if err := netlink.QdiscAdd(q); err == nil {
		t.qdisc = q
	} else if !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("bpf: add clsact qdisc on %s: %w", opts.Iface, classify(err))
	}
	parent := uint32(netlink.HANDLE_MIN_INGRESS)
	if opts.Direction == Egress {
		parent = netlink.HANDLE_MIN_EGRESS
	}
	f := &netlink.BpfFilter{
		FilterAttrs:  netlink.FilterAttrs{LinkIndex: l.Attrs().Index, Parent: parent, Handle: 1, Protocol: unix.ETH_P_ALL, Priority: 1},
		Fd:           opts.Program.FD(),
		Name:         "sluice",
		DirectAction: true,
	}
	if err := netlink.FilterAdd(f); err != nil {
		if t.qdisc != nil {
			_ = netlink.QdiscDel(t.qdisc)
		}
		return fmt.Errorf("bpf: add cls_bpf filter on %s %s: %w", opts.Iface, opts.Direction, classify(err))
	}
	t.filter = f
	return nil
}

// Close detaches the program (and removes a clsact qdisc it created).
func (t *TCAttachment) Close() error {
	if t == nil {
		return nil
	}
	if t.Link != nil {
		err := t.Link.Close()
		t.Link = nil
		return err
	}
	if t.filter == nil {
		return nil
	}
	return netns.Do(t.netns, func() error {
		err := netlink.FilterDel(t.filter)
		t.filter = nil
		if t.qdisc != nil {
			err = errors.Join(err, netlink.QdiscDel(t.qdisc))
			t.qdisc = nil
		}
		return err
	})
}

// AttachSocketFilter attaches a SocketFilter program to a socket
// (SO_ATTACH_BPF). The filter lives as long as the socket.
func AttachSocketFilter(conn syscall.Conn, p *ebpf.Program) error {
	if err := link.AttachSocketFilter(conn, p); err != nil {
		return fmt.Errorf("bpf: attach socket filter: %w", classify(err))
	}
	return nil
}

// DetachSocketFilter removes a socket's filter (SO_DETACH_BPF).
func DetachSocketFilter(conn syscall.Conn) error {
	if err := link.DetachSocketFilter(conn); err != nil {
		return fmt.Errorf("bpf: detach socket filter: %w", err)
	}
	return nil
}
