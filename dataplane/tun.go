package dataplane

import (
	"fmt"
	"strings"
)

// TUNOffload is a set of TUNSETOFFLOAD flags (TUN_F_* in
// include/uapi/linux/if_tun.h): what the kernel may hand a TUN reader
// without doing it first. Reads then carry GSO super-frames and partial
// checksums, described by the virtio_net_hdr, so every flag needs
// TUNOptions.VnetHdr.
type TUNOffload uint

const (
	// TUNOffloadCsum (TUN_F_CSUM): packets may arrive with a partial
	// checksum (NEEDS_CSUM). The kernel ignores the others without it.
	TUNOffloadCsum TUNOffload = 0x01
	// TUNOffloadTSO4 and TUNOffloadTSO6 (TUN_F_TSO4, TUN_F_TSO6): TCP
	// super-frames up to 64 KiB.
	TUNOffloadTSO4 TUNOffload = 0x02
	TUNOffloadTSO6 TUNOffload = 0x04
	// TUNOffloadUSO4 and TUNOffloadUSO6 (TUN_F_USO4, TUN_F_USO6, Linux
	// 6.2): UDP_L4 super-datagrams. The kernel accepts them only together
	// (tun_set_offload returns EINVAL for one without the other).
	TUNOffloadUSO4 TUNOffload = 0x20
	TUNOffloadUSO6 TUNOffload = 0x40
)

// String lists the flags, "csum|tso4|tso6".
func (o TUNOffload) String() string {
	if o == 0 {
		return "none"
	}
	var parts []string
	for _, f := range []struct {
		bit  TUNOffload
		name string
	}{{TUNOffloadCsum, "csum"}, {TUNOffloadTSO4, "tso4"}, {TUNOffloadTSO6, "tso6"}, {TUNOffloadUSO4, "uso4"}, {TUNOffloadUSO6, "uso6"}} {
		if o&f.bit != 0 {
			parts = append(parts, f.name)
			o &^= f.bit
		}
	}
	if o != 0 {
		parts = append(parts, fmt.Sprintf("%#x", uint(o)))
	}
	return strings.Join(parts, "|")
}

const tunOffloadKnown = TUNOffloadCsum | TUNOffloadTSO4 | TUNOffloadTSO6 | TUNOffloadUSO4 | TUNOffloadUSO6

// TUNOptions describe a TUN device for OpenTUN. The zero value of each field
// means its default.
type TUNOptions struct {
	// NetNS is the network namespace to create the device in, by name
	// (under /var/run/netns) or path; "" is the caller's. /dev/net/tun is
	// opened on a thread inside it, because the kernel creates the device
	// in the opener's namespace.
	NetNS string
	// Name is the device name; "" lets the kernel pick (tun0, tun1...).
	// An existing persistent device of that name is attached to.
	Name string
	// VnetHdr sets IFF_VNET_HDR: every read and write starts with a
	// virtio_net_hdr (TUNSETVNETHDRSZ is set to VnetHdrLen). The Link
	// must then be created with LinkOptions.VnetHdr.
	VnetHdr bool
	// Offloads are set with TUNSETOFFLOAD; they need VnetHdr.
	Offloads TUNOffload
	// MultiQueue sets IFF_MULTI_QUEUE: Queues descriptors on one device,
	// the kernel spreading flows over them (one channel each).
	MultiQueue bool
	// Queues is the number of descriptors to open. Default 1; more than
	// one needs MultiQueue.
	Queues int
}

func (o TUNOptions) withDefaults() TUNOptions {
	if o.Queues == 0 {
		o.Queues = 1
	}
	return o
}

func (o TUNOptions) validate() error {
	if len(o.Name) >= 16 {
		return fmt.Errorf("dataplane: TUNOptions.Name %q: longer than the 15 bytes IFNAMSIZ allows", o.Name)
	}
	if o.Queues < 1 || o.Queues > 256 {
		return fmt.Errorf("dataplane: TUNOptions.Queues %d: must be 1..256", o.Queues)
	}
	if o.Queues > 1 && !o.MultiQueue {
		return fmt.Errorf("dataplane: TUNOptions.Queues %d without MultiQueue: a single-queue TUN has one descriptor", o.Queues)
	}
	if o.Offloads&^tunOffloadKnown != 0 {
		return fmt.Errorf("dataplane: TUNOptions.Offloads %v: unknown flags", o.Offloads)
	}
	if o.Offloads != 0 && !o.VnetHdr {
		return fmt.Errorf("dataplane: TUNOptions.Offloads %v without VnetHdr: offloaded packets need a virtio_net_hdr to describe them", o.Offloads)
	}
	if o.Offloads&^TUNOffloadCsum != 0 && o.Offloads&TUNOffloadCsum == 0 {
		// tun_set_offload only looks at TSO and USO inside the CSUM
		// branch: they would be dropped silently.
		return fmt.Errorf("dataplane: TUNOptions.Offloads %v: segmentation offloads need TUNOffloadCsum", o.Offloads)
	}
	uso := o.Offloads & (TUNOffloadUSO4 | TUNOffloadUSO6)
	if uso != 0 && uso != TUNOffloadUSO4|TUNOffloadUSO6 {
		return fmt.Errorf("dataplane: TUNOptions.Offloads %v: USO4 and USO6 only go together (the kernel returns EINVAL for one alone)", o.Offloads)
	}
	return nil
}

// TUNInfo is what a TUN descriptor says about its device (TUNInfoOf).
type TUNInfo struct {
	Name    string
	VnetHdr bool // IFF_VNET_HDR
	Multi   bool // IFF_MULTI_QUEUE
	TAP     bool // IFF_TAP (Ethernet frames) rather than IFF_TUN
}
