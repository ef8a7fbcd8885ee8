package bench

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/netns"
)

var (
	topoSeq     atomic.Uint32
	staleNSName = regexp.MustCompile(`^` + nsPrefix + `([0-9]+)-[0-9]+-[ab]$`)
)

// topology is two namespaces joined by a veth pair: va in nsA (no kernel
// address: the endpoint under test owns it), vb in nsB with kernelAddr.
type topology struct {
	nsA, nsB string
	ifindexA int
	ifindexB int
	hA       *netlink.Handle // netlink in nsA
	hB       *netlink.Handle // netlink in nsB, for vb's counters
}

// topologyOptions vary the topology between scenarios.
type topologyOptions struct {
	// ipv6 gives vb 2001:db8::2/64 (and a permanent neighbour entry for
	// the netstack's 2001:db8::1) and leaves IPv6 on in nsB. nsA's kernel
	// never speaks IPv6 either way: va belongs to the endpoint.
	ipv6 bool
}

// newTopology builds the namespaces and the veth pair. On error it removes
// whatever it had made.
func newTopology(opts topologyOptions) (_ *topology, err error) {
	removeStaleNamespaces()
	seq := topoSeq.Add(1)
	t := &topology{
		nsA: fmt.Sprintf("%s%d-%d-a", nsPrefix, os.Getpid(), seq),
		nsB: fmt.Sprintf("%s%d-%d-b", nsPrefix, os.Getpid(), seq),
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, t.close())
		}
	}()
	for _, ns := range []string{t.nsA, t.nsB} {
		if err := netns.Create(ns); err != nil {
			return nil, fmt.Errorf("bench: create namespace: %w", err)
		}
		if opts.ipv6 && ns == t.nsB {
			continue
		}
		// No IPv6 means no router solicitations, neighbour discovery or
		// MLD reports: every frame on the veth is benchmark traffic.
		if err := netns.Do(ns, disableIPv6); err != nil {
			return nil, fmt.Errorf("bench: disable IPv6 in %s: %w", ns, err)
		}
	}
	if t.hA, err = handleAt(t.nsA); err != nil {
		return nil, err
	}
	hA := t.hA
	if t.hB, err = handleAt(t.nsB); err != nil {
		return nil, err
	}
	nsB, err := vnetns.GetFromPath(netns.Path(t.nsB))
	if err != nil {
		return nil, fmt.Errorf("bench: open namespace %s: %w", t.nsB, err)
	}
	defer nsB.Close()
	// The veth is created inside nsA with its peer created directly in
	// nsB, so it never exists in the caller's namespace.
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: ifA, MTU: vethMTU, HardwareAddr: macA},
		PeerName:         ifB,
		PeerHardwareAddr: macB,
		PeerNamespace:    netlink.NsFd(int(nsB)),
	}
	if err := hA.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("bench: create veth %s/%s: %w", ifA, ifB, err)
	}
	la, err := hA.LinkByName(ifA)
	if err != nil {
		return nil, fmt.Errorf("bench: find %s in %s: %w", ifA, t.nsA, err)
	}
	lb, err := t.hB.LinkByName(ifB)
	if err != nil {
		return nil, fmt.Errorf("bench: find %s in %s: %w", ifB, t.nsB, err)
	}
	t.ifindexA, t.ifindexB = la.Attrs().Index, lb.Attrs().Index
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: kernelAddr.AsSlice(), Mask: net.CIDRMask(prefixLen, 32)}}
	if err := t.hB.AddrAdd(lb, addr); err != nil {
		return nil, fmt.Errorf("bench: add %s to %s: %w", addr, ifB, err)
	}
	// A permanent neighbour entry for the netstack's address: during
	// rx_pps and tx_pps no stack answers ARP on va, so the kernel's
	// resolution would fail and leave an entry in FAILED state that
	// delays the next TCP connect by a second or more.
	neigh := &netlink.Neigh{
		LinkIndex:    t.ifindexB,
		Family:       netlink.FAMILY_V4,
		State:        netlink.NUD_PERMANENT,
		IP:           stackAddr.AsSlice(),
		HardwareAddr: macA,
	}
	if err := t.hB.NeighAdd(neigh); err != nil {
		return nil, fmt.Errorf("bench: add neighbour %s on %s: %w", stackAddr, ifB, err)
	}
	if opts.ipv6 {
		// NODAD: the address is usable at once instead of after a
		// second of duplicate address detection.
		addr6 := &netlink.Addr{IPNet: &net.IPNet{IP: kernelAddr6.AsSlice(), Mask: net.CIDRMask(prefixLen6, 128)}, Flags: unix.IFA_F_NODAD}
		if err := t.hB.AddrAdd(lb, addr6); err != nil {
			return nil, fmt.Errorf("bench: add %s to %s: %w", addr6, ifB, err)
		}
		neigh6 := &netlink.Neigh{
			LinkIndex:    t.ifindexB,
			Family:       netlink.FAMILY_V6,
			State:        netlink.NUD_PERMANENT,
			IP:           stackAddr6.AsSlice(),
			HardwareAddr: macA,
		}
		if err := t.hB.NeighAdd(neigh6); err != nil {
			return nil, fmt.Errorf("bench: add neighbour %s on %s: %w", stackAddr6, ifB, err)
		}
	}
	if err := hA.LinkSetUp(la); err != nil {
		return nil, fmt.Errorf("bench: set %s up: %w", ifA, err)
	}
	if err := t.hB.LinkSetUp(lb); err != nil {
		return nil, fmt.Errorf("bench: set %s up: %w", ifB, err)
	}
	// Wait until both ends are operationally up: until the kernel's link
	// watcher has attached the real qdisc (up to a second later on a loaded
	// machine), a veth's noop qdisc drops what is sent while the send
	// reports success, and a measurement's first window sees nothing.
	for _, end := range []struct {
		h    *netlink.Handle
		idx  int
		name string
	}{{hA, la.Attrs().Index, ifA}, {t.hB, t.ifindexB, ifB}} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			l, err := end.h.LinkByIndex(end.idx)
			if err != nil {
				return nil, fmt.Errorf("bench: read %s state: %w", end.name, err)
			}
			if l.Attrs().OperState == netlink.OperUp {
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("bench: %s not operationally up after 10s (state %v)", end.name, l.Attrs().OperState)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return t, nil
}

// rxPacketsB returns vb's rx_packets counter: frames the veth handed to
// nsB's receive path (a veth counts its peer's successful transmits).
func (t *topology) rxPacketsB() (uint64, error) {
	l, err := t.hB.LinkByName(ifB)
	if err != nil {
		return 0, fmt.Errorf("bench: read %s counters: %w", ifB, err)
	}
	if l.Attrs().Statistics == nil {
		return 0, fmt.Errorf("bench: read %s counters: no statistics in the netlink reply", ifB)
	}
	return l.Attrs().Statistics.RxPackets, nil
}

// close removes the namespaces; the veth goes with them once the last
// socket in them is closed. Safe to call on a partly built topology.
func (t *topology) close() error {
	if t.hA != nil {
		// Deleting the veth explicitly frees it now rather than when
		// the namespace's last reference goes.
		if l, err := t.hA.LinkByName(ifA); err == nil {
			_ = t.hA.LinkDel(l)
		}
		t.hA.Close()
		t.hA = nil
	}
	if t.hB != nil {
		t.hB.Close()
		t.hB = nil
	}
	var errs []error
	for _, ns := range []string{t.nsA, t.nsB} {
		if ns == "" {
			continue
		}
		if err := netns.Delete(ns); err != nil {
			errs = append(errs, fmt.Errorf("bench: remove namespace: %w", err))
		}
	}
	return errors.Join(errs...)
}

// handleAt opens a netlink handle whose socket lives in the named namespace.
func handleAt(ns string) (*netlink.Handle, error) {
	h, err := vnetns.GetFromPath(netns.Path(ns))
	if err != nil {
		return nil, fmt.Errorf("bench: open namespace %s: %w", ns, err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return nil, fmt.Errorf("bench: netlink in %s: %w", ns, err)
	}
	return nh, nil
}

// disableIPv6 turns IPv6 off for devices created later in the calling
// thread's namespace. /proc/sys/net resolves to the namespace of the thread
// that opens the file.
func disableIPv6() error {
	for _, p := range []string{"/proc/sys/net/ipv6/conf/all/disable_ipv6", "/proc/sys/net/ipv6/conf/default/disable_ipv6"} {
		if err := os.WriteFile(p, []byte("1"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// removeStaleNamespaces deletes namespaces named like ours whose process is
// gone: a run that was killed (SIGKILL) could not clean up after itself.
// Namespaces of live processes, this one included, are left alone.
func removeStaleNamespaces() {
	ents, err := os.ReadDir(netns.RunDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		m := staleNSName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := unix.Kill(pid, 0); err == nil || errors.Is(err, unix.EPERM) {
			continue
		}
		if _, err := os.Stat(filepath.Join("/proc", m[1])); err == nil {
			continue
		}
		_ = netns.Delete(e.Name())
	}
}
