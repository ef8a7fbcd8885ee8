package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// LoadOptions configure a program before and after it is loaded. Zero
// values mean the defaults.
type LoadOptions struct {
	// RedirectAddrs, for Redirect: only frames to these destination
	// addresses go to AF_XDP sockets; empty means every frame.
	RedirectAddrs []netip.Addr
	// PassPorts, for TunnelHost: TCP and UDP destination ports whose
	// traffic stays with the host stack. Empty means DefaultPassPorts.
	PassPorts []uint16
	// Snaplen, for Capture: bytes kept of each frame, at most and by
	// default CaptureMax.
	Snaplen uint32
}

// DefaultPassPorts keeps SSH on the host so the machine stays reachable
// while a user-space stack owns its NIC.
var DefaultPassPorts = []uint16{22}

// CaptureMax is CAPTURE_MAX in capture.bpf.c: the largest snap length.
const CaptureMax = 4096

// Objects is one loaded program and its maps. Fields a program does not
// have are nil. Close releases them; an attachment made with them lives on
// through its link.
type Objects struct {
	Kind    Program
	Program *ebpf.Program
	// Stats is the per-CPU counter array every program has.
	Stats *ebpf.Map
	// XSKs (Redirect) maps an rx queue to an AF_XDP socket.
	XSKs *ebpf.Map
	// DstAddrs (Redirect) holds the destination addresses to redirect.
	DstAddrs *ebpf.Map
	// TxPort (TunnelHost, TunnelVeth) is the DEVMAP whose entry 0 is the
	// device frames go out of.
	TxPort *ebpf.Map
	// PassPorts (TunnelHost) holds the control ports.
	PassPorts *ebpf.Map
	// Events (Capture) is the ring buffer of captured frames.
	Events *ebpf.Map

	close func() error
}

// Close releases the program and maps.
func (o *Objects) Close() error {
	if o == nil || o.close == nil {
		return nil
	}
	c := o.close
	o.close = nil
	return c()
}

// pinnable lists the maps worth pinning next to the link, by file name.
func (o *Objects) pinnable() map[string]*ebpf.Map {
	m := map[string]*ebpf.Map{"stats": o.Stats}
	for name, mp := range map[string]*ebpf.Map{"xsks": o.XSKs, "dst_addrs": o.DstAddrs, "tx_port": o.TxPort, "pass_ports": o.PassPorts} {
		if mp != nil {
			m[name] = mp
		}
	}
	return m
}

// Load loads program p, with the constants and maps opts sets. TunnelHost
// and TunnelVeth come with an empty TxPort: SetTxPort fills it, inside the
// device's namespace.
func Load(p Program, opts LoadOptions) (*Objects, error) {
	o, err := load(p, opts)
	if err != nil {
		return nil, fmt.Errorf("bpf: load %s: %w", p, classify(err))
	}
	return o, nil
}

func load(p Program, opts LoadOptions) (*Objects, error) {
	switch p {
	case Pass:
		var objs passObjects
		if err := loadPassObjects(&objs, nil); err != nil {
			return nil, err
		}
		return &Objects{Kind: p, Program: objs.XdpPass, Stats: objs.Stats, close: objs.Close}, nil
	case Drop:
		var objs dropObjects
		if err := loadDropObjects(&objs, nil); err != nil {
			return nil, err
		}
		return &Objects{Kind: p, Program: objs.XdpDrop, Stats: objs.Stats, close: objs.Close}, nil
	case Redirect:
		spec, err := loadRedirect()
		if err != nil {
			return nil, err
		}
		if len(opts.RedirectAddrs) > 0 {
			if err := spec.Variables[redirectVarFilterDst].Set(uint8(1)); err != nil {
				return nil, fmt.Errorf("set filter_dst: %w", err)
			}
		}
		var objs redirectObjects
		if err := spec.LoadAndAssign(&objs, nil); err != nil {
			return nil, err
		}
		o := &Objects{Kind: p, Program: objs.XdpRedirect, Stats: objs.Stats, XSKs: objs.Xsks, DstAddrs: objs.DstAddrs, close: objs.Close}
		for _, a := range opts.RedirectAddrs {
			if err := objs.DstAddrs.Put(addrKey(a), uint8(1)); err != nil {
				o.Close()
				return nil, fmt.Errorf("add destination %s: %w", a, err)
			}
		}
		return o, nil
	case TunnelHost:
		var objs tunnelHostObjects
		if err := loadTunnelHostObjects(&objs, nil); err != nil {
			return nil, err
		}
		o := &Objects{Kind: p, Program: objs.XdpTunnelHost, Stats: objs.Stats, TxPort: objs.TxPort, PassPorts: objs.PassPorts, close: objs.Close}
		ports := opts.PassPorts
		if len(ports) == 0 {
			ports = DefaultPassPorts
		}
		for _, port := range ports {
			if err := objs.PassPorts.Put(port, uint8(1)); err != nil {
				o.Close()
				return nil, fmt.Errorf("add pass port %d: %w", port, err)
			}
		}
		return o, nil
	case TunnelVeth:
		var objs tunnelVethObjects
		if err := loadTunnelVethObjects(&objs, nil); err != nil {
			return nil, err
		}
		return &Objects{Kind: p, Program: objs.XdpTunnelVeth, Stats: objs.Stats, TxPort: objs.TxPort, close: objs.Close}, nil
	case Capture:
		spec, err := loadCapture()
		if err != nil {
			return nil, err
		}
		snap := opts.Snaplen
		if snap == 0 || snap > CaptureMax {
			snap = CaptureMax
		}
		if err := spec.Variables[captureVarSnaplen].Set(snap); err != nil {
			return nil, fmt.Errorf("set snaplen: %w", err)
		}
		var objs captureObjects
		if err := spec.LoadAndAssign(&objs, nil); err != nil {
			return nil, err
		}
		return &Objects{Kind: p, Program: objs.XdpCapture, Stats: objs.Stats, Events: objs.Events, close: objs.Close}, nil
	}
	return nil, fmt.Errorf("unknown program %q", p)
}

// addrKey is the 16-byte dst_addrs key: IPv6 as is, IPv4 v4-mapped, as
// parse_frame in common.h builds it.
func addrKey(a netip.Addr) [16]byte {
	return netip.AddrFrom16(a.As16()).As16()
}

// SetTxPort points a tunnel program's DEVMAP at ifindex. The index is
// resolved in the calling thread's network namespace, so call it inside
// netns.Do for the device's namespace.
func (o *Objects) SetTxPort(ifindex int) error {
	if o.TxPort == nil {
		return fmt.Errorf("bpf: %s has no tx_port map", o.Kind)
	}
	if err := o.TxPort.Put(uint32(0), uint32(ifindex)); err != nil {
		return fmt.Errorf("bpf: %s: set tx_port to ifindex %d: %w", o.Kind, ifindex, classify(err))
	}
	return nil
}

// ReadCounters sums a stats map (a per-CPU array of struct datarec) over
// the CPUs.
func ReadCounters(stats *ebpf.Map) (Counters, error) {
	var c Counters
	if stats == nil {
		return c, errors.New("bpf: read counters: no stats map")
	}
	if stats.Type() != ebpf.PerCPUArray || stats.ValueSize() != 16 || stats.MaxEntries() != numStats {
		return c, fmt.Errorf("bpf: read counters: map %q is not a sluice stats map", stats.String())
	}
	for i := 0; i < numStats; i++ {
		var per [][16]byte
		if err := stats.Lookup(uint32(i), &per); err != nil {
			return c, fmt.Errorf("bpf: read counters slot %d: %w", i, err)
		}
		s := c.slot(i)
		for _, v := range per {
			s.Packets += binary.NativeEndian.Uint64(v[0:8])
			s.Bytes += binary.NativeEndian.Uint64(v[8:16])
		}
	}
	return c, nil
}
