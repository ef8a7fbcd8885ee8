package bpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/sluicenet/sluice/internal/netns"
)

// Status is one interface's XDP hook as the kernel reports it, whoever
// attached the program.
type Status struct {
	Iface   string `json:"iface"`
	Ifindex int    `json:"ifindex"`
	// Mode is ModeNone when nothing is attached.
	Mode        Mode   `json:"mode"`
	ProgramID   uint32 `json:"program_id,omitempty"`
	ProgramName string `json:"program_name,omitempty"`
	// Tag is the program's SHA1 tag, as bpftool prints it.
	Tag string `json:"tag,omitempty"`
	// LinkID is the bpf link holding the program, 0 if it was attached
	// through netlink (ip link set ... xdp).
	LinkID uint32 `json:"link_id,omitempty"`
	// Sluice is set when the program is one of sluice's.
	Sluice bool `json:"sluice"`
	// Pinned is the owner tag when sluice pinned the attachment.
	Pinned *PinMeta `json:"pinned,omitempty"`
	PinDir string   `json:"pin_dir,omitempty"`
	// Counters are read from a sluice program's stats map.
	Counters *Counters `json:"counters,omitempty"`
}

// Owner describes who attached the program.
func (s Status) Owner() string {
	switch {
	case s.Mode == ModeNone:
		return "-"
	case s.Pinned != nil:
		return "sluice (" + s.Pinned.Owner.String() + ")"
	case s.Sluice:
		return "sluice (unpinned)"
	case s.LinkID != 0:
		return "other (bpf link)"
	}
	return "other (netlink)"
}

// ListOptions select what List reports.
type ListOptions struct {
	// Netns is the namespace to look in ("" the caller's).
	Netns string
	// Iface limits the list to one interface, which is then reported even
	// with nothing attached. "" lists every interface with a program.
	Iface string
	// PinRoot is where sluice's pins live; "" is DefaultPinRoot.
	PinRoot string
}

// List reports the XDP programs attached to interfaces in a namespace,
// from netlink (so programs attached by any tool show up), with bpf link
// IDs from the kernel's link list, and counters for sluice's programs.
func List(opts ListOptions) ([]Status, error) {
	if opts.PinRoot == "" {
		opts.PinRoot = DefaultPinRoot
	}
	nsID, err := NetnsID(opts.Netns)
	if err != nil {
		return nil, err
	}
	var out []Status
	err = netns.Do(opts.Netns, func() error {
		var links []netlink.Link
		if opts.Iface != "" {
			l, err := lookupLink(opts.Iface, opts.Netns)
			if err != nil {
				return err
			}
			links = []netlink.Link{l}
		} else {
			var err error
			if links, err = netlink.LinkList(); err != nil {
				return fmt.Errorf("bpf: list interfaces: %w", classify(err))
			}
		}
		for _, l := range links {
			mode, id := xdpState(l)
			if mode == ModeNone && opts.Iface == "" {
				continue
			}
			out = append(out, Status{Iface: l.Attrs().Name, Ifindex: l.Attrs().Index, Mode: mode, ProgramID: id})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	linkIDs := xdpLinkIDs()
	for i := range out {
		s := &out[i]
		if s.ProgramID == 0 {
			continue
		}
		s.LinkID = linkIDs[s.ProgramID]
		if err := describeProgram(s); err != nil {
			return nil, err
		}
		dir := PinDir(opts.PinRoot, nsID, s.Iface)
		if meta, err := ReadMeta(dir); err == nil && pinnedProgram(dir) == s.ProgramID {
			s.Pinned, s.PinDir = &meta, dir
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ifindex < out[j].Ifindex })
	return out, nil
}

// describeProgram fills in name, tag and, for sluice's programs, counters.
// Only a lack of privilege is an error: a program that went away meanwhile
// is reported without details.
func describeProgram(s *Status) error {
	p, err := ebpf.NewProgramFromID(ebpf.ProgramID(s.ProgramID))
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("bpf: inspect XDP program %d on %s: %w", s.ProgramID, s.Iface, classify(err))
		}
		return nil
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		return nil
	}
	s.ProgramName, s.Tag = info.Name, info.Tag
	if _, ok := ProgramByKernelName(info.Name); !ok {
		return nil
	}
	ids, _ := info.MapIDs()
	for _, mid := range ids {
		m, err := ebpf.NewMapFromID(mid)
		if err != nil {
			continue
		}
		mi, err := m.Info()
		if err == nil && mi.Name == "stats" {
			if c, err := ReadCounters(m); err == nil {
				s.Sluice, s.Counters = true, &c
			}
		}
		m.Close()
	}
	return nil
}

// xdpLinkIDs maps program IDs to the XDP bpf links that hold them, over
// every namespace (link ifindexes are per namespace, program IDs are not).
func xdpLinkIDs() map[uint32]uint32 {
	ids := map[uint32]uint32{}
	var it link.Iterator
	defer it.Close()
	for it.Next() {
		info, err := it.Link.Info()
		if err != nil || info.Type != link.XDPType {
			continue
		}
		ids[uint32(info.Program)] = uint32(info.ID)
	}
	return ids
}

// pinnedProgram is the program ID of the link pinned in dir, 0 if none.
func pinnedProgram(dir string) uint32 {
	l, err := link.LoadPinnedLink(filepath.Join(dir, pinLink), nil)
	if err != nil {
		return 0
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return 0
	}
	return uint32(info.Program)
}

// PinnedCounters reads the counters pinned in an interface's directory.
func PinnedCounters(dir string) (Counters, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, "stats"), nil)
	if err != nil {
		return Counters{}, fmt.Errorf("bpf: open pinned counters in %s: %w", dir, err)
	}
	defer m.Close()
	return ReadCounters(m)
}

// ProgramInstructions reports how many instructions the verifier processed
// for a loaded program and how many it holds after translation (what
// `bpftool prog show` calls xlated), for the record of each program's size.
func ProgramInstructions(p *ebpf.Program) (verified uint32, xlated int, err error) {
	info, err := p.Info()
	if err != nil {
		return 0, 0, err
	}
	verified, _ = info.VerifiedInstructions()
	insns, err := info.Instructions()
	if err != nil {
		return verified, 0, fmt.Errorf("bpf: read instructions: %w", err)
	}
	return verified, len(insns), nil
}
