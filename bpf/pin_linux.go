package bpf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/netns"
)

// DefaultPinRoot is where sluice pins, one directory per interface below it.
const DefaultPinRoot = "/sys/fs/bpf/sluice"

// File names inside an interface's pin directory.
const (
	pinLink  = "link"
	pinOwner = "sluice_owner"
)

// PinDir is the one directory where everything sluice pins for interface
// ifname in the network namespace with inode netnsID lives. Namespace
// inodes are unique while the namespace exists, and ifnames are unique
// inside one, so two attachments never share a directory.
func PinDir(root string, netnsID uint64, ifname string) string {
	if root == "" {
		root = DefaultPinRoot
	}
	return filepath.Join(root, strconv.FormatUint(netnsID, 10), ifname)
}

// NetnsID is the inode of a network namespace given by name or path, ""
// meaning the caller's; it names the namespace in PinDir.
func NetnsID(nameOrPath string) (uint64, error) {
	p := netns.Path(nameOrPath)
	if p == "" {
		p = "/proc/thread-self/ns/net"
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return 0, fmt.Errorf("bpf: network namespace %q: %w", nameOrPath, os.NewSyscallError("stat", err))
	}
	return st.Ino, nil
}

// Owner says who an attachment's pins belong to. The zero Owner is
// persistent: the pins stay until Detach removes them (what `sluice xdp
// attach` makes). A process owner's pins are removed by Clean once that
// process has exited.
type Owner struct {
	PID int `json:"pid,omitempty"`
	// StartTime is the process's start time in clock ticks since boot
	// (/proc/PID/stat field 22), so a reused pid is not mistaken for the
	// owner.
	StartTime uint64 `json:"start_time,omitempty"`
	Comm      string `json:"comm,omitempty"`
}

// MarshalJSON adds "persistent" so that the zero owner does not read as
// an empty object.
func (o Owner) MarshalJSON() ([]byte, error) {
	type plain Owner
	return json.Marshal(struct {
		Persistent bool `json:"persistent"`
		plain
	}{o.Persistent(), plain(o)})
}

// Persistent reports whether o is the zero, persistent owner.
func (o Owner) Persistent() bool { return o.PID == 0 }

func (o Owner) String() string {
	if o.Persistent() {
		return "persistent"
	}
	return fmt.Sprintf("pid %d (%s)", o.PID, o.Comm)
}

// ProcessOwner describes process pid as an owner.
func ProcessOwner(pid int) (Owner, error) {
	st, comm, err := procStart(pid)
	if err != nil {
		return Owner{}, fmt.Errorf("bpf: owner pid %d: %w", pid, err)
	}
	return Owner{PID: pid, StartTime: st, Comm: comm}, nil
}

// Alive reports whether the owner still runs (always true when persistent).
func (o Owner) Alive() bool {
	if o.Persistent() {
		return true
	}
	st, _, err := procStart(o.PID)
	return err == nil && st == o.StartTime
}

// procStart reads the start time and command name of pid from /proc.
func procStart(pid int) (uint64, string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, "", err
	}
	// comm is in parentheses and may contain spaces or ')': fields start
	// after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	j := bytes.IndexByte(b, '(')
	if i < 0 || j < 0 || j > i {
		return 0, "", fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	comm := string(b[j+1 : i])
	fields := strings.Fields(string(b[i+1:]))
	// fields[0] is field 3 (state), so field 22 (starttime) is fields[19].
	if len(fields) < 20 {
		return 0, "", fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	st, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, "", fmt.Errorf("malformed /proc/%d/stat: %w", pid, err)
	}
	return st, comm, nil
}

// Role is what a pin directory holds within one attachment.
type Role string

const (
	// RoleMain is the program the operator asked for.
	RoleMain Role = "main"
	// RoleTunnelVeth is the veth half of a tunnel.
	RoleTunnelVeth Role = "tunnel-veth"
	// RolePeerHelper is the pass program on a redirect target's peer.
	RolePeerHelper Role = "peer-helper"
)

// PinMeta is the owner tag stored in each pin directory.
type PinMeta struct {
	Program Program `json:"program"`
	Role    Role    `json:"role"`
	Iface   string  `json:"iface"`
	Ifindex int     `json:"ifindex"`
	// Netns is the namespace as the operator named it ("" for the one
	// sluice ran in); NetnsID is its inode.
	Netns   string    `json:"netns,omitempty"`
	NetnsID uint64    `json:"netns_id"`
	Mode    Mode      `json:"mode"`
	Owner   Owner     `json:"owner"`
	Created time.Time `json:"created"`
	// Parent is the main directory of the attachment (for helpers);
	// Related lists the helper directories (for the main one).
	Parent  string   `json:"parent,omitempty"`
	Related []string `json:"related,omitempty"`
}

// ownerValueSize bounds the JSON of a PinMeta. bpffs holds only BPF
// objects and directories (no regular files), so the tag is an array map of
// one element.
const ownerValueSize = 2048

func writeMeta(dir string, m PinMeta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if len(b) > ownerValueSize {
		return fmt.Errorf("bpf: owner tag for %s is %d bytes, more than %d", dir, len(b), ownerValueSize)
	}
	val := make([]byte, ownerValueSize)
	copy(val, b)
	path := filepath.Join(dir, pinOwner)
	mp, err := ebpf.LoadPinnedMap(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		mp, err = ebpf.NewMap(&ebpf.MapSpec{Name: "sluice_owner", Type: ebpf.Array, KeySize: 4, ValueSize: ownerValueSize, MaxEntries: 1})
		if err != nil {
			return fmt.Errorf("bpf: create owner tag: %w", classify(err))
		}
		if err := mp.Pin(path); err != nil {
			mp.Close()
			return fmt.Errorf("bpf: pin owner tag: %w", classify(err))
		}
	} else if err != nil {
		return fmt.Errorf("bpf: open owner tag %s: %w", path, err)
	}
	defer mp.Close()
	if err := mp.Put(uint32(0), val); err != nil {
		return fmt.Errorf("bpf: write owner tag %s: %w", path, err)
	}
	return nil
}

// ReadMeta reads the owner tag of a pin directory.
func ReadMeta(dir string) (PinMeta, error) {
	var m PinMeta
	mp, err := ebpf.LoadPinnedMap(filepath.Join(dir, pinOwner), nil)
	if err != nil {
		return m, fmt.Errorf("bpf: read owner tag of %s: %w", dir, err)
	}
	defer mp.Close()
	val := make([]byte, mp.ValueSize())
	if err := mp.Lookup(uint32(0), &val); err != nil {
		return m, fmt.Errorf("bpf: read owner tag of %s: %w", dir, err)
	}
	if err := json.Unmarshal(bytes.TrimRight(val, "\x00"), &m); err != nil {
		return m, fmt.Errorf("bpf: owner tag of %s: %w", dir, err)
	}
	return m, nil
}

// checkBPFFS makes sure root is (or will be) on a bpf filesystem.
func checkBPFFS(root string) error {
	p := root
	for {
		var st unix.Statfs_t
		err := unix.Statfs(p, &st)
		if err == nil {
			if st.Type != unix.BPF_FS_MAGIC {
				return fmt.Errorf("bpf: %s is not on a bpf filesystem (%w): mount it with `mount -t bpf bpf /sys/fs/bpf`; under `ip netns exec` /sys is remounted without it, so use --netns instead", root, ErrBPFFSNotMounted)
			}
			return nil
		}
		if !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("bpf: statfs %s: %w", p, classify(os.NewSyscallError("statfs", err)))
		}
		parent := filepath.Dir(p)
		if parent == p {
			return fmt.Errorf("bpf: %s: %w", root, ErrBPFFSNotMounted)
		}
		p = parent
	}
}

// pinner pins one directory's objects and undoes it on failure.
type pinner struct {
	dir string
}

func newPinner(dir string, meta PinMeta) (*pinner, error) {
	if _, err := os.Stat(dir); err == nil {
		return nil, fmt.Errorf("bpf: %s already exists (left by an earlier attachment): run `sluice xdp detach --iface %s` or `sluice xdp clean`", dir, meta.Iface)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("bpf: create pin directory: %w", classify(err))
	}
	p := &pinner{dir: dir}
	// The tag goes first, naming this process, so that a crash before the
	// final owner is written leaves something Clean can remove.
	if err := writeMeta(dir, meta); err != nil {
		p.remove()
		return nil, err
	}
	return p, nil
}

func (p *pinner) pin(l link.Link, o *Objects) error {
	if err := l.Pin(filepath.Join(p.dir, pinLink)); err != nil {
		return fmt.Errorf("bpf: pin link in %s: %w", p.dir, classify(err))
	}
	for name, m := range o.pinnable() {
		if err := m.Pin(filepath.Join(p.dir, name)); err != nil {
			return fmt.Errorf("bpf: pin map %s in %s: %w", name, p.dir, classify(err))
		}
	}
	return nil
}

func (p *pinner) remove() error { return removeDir(p.dir) }

// removeDir detaches the pinned link in dir, removes every pin and the
// directory, and the namespace directory above it if that is now empty.
func removeDir(dir string) error {
	var errs []error
	if l, err := link.LoadPinnedLink(filepath.Join(dir, pinLink), nil); err == nil {
		// Detach explicitly: another process may still hold a descriptor
		// to the link, and unpinning alone would leave it attached.
		if err := l.Detach(); err != nil && !errors.Is(err, unix.ENOLINK) && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("bpf: detach %s: %w", dir, err))
		}
		l.Close()
	}
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, e := range entries {
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	_ = os.Remove(filepath.Dir(dir)) // only succeeds when empty
	return errors.Join(errs...)
}

// removeGroup removes an attachment's main directory and its helpers'.
func removeGroup(mainDir string, meta PinMeta) error {
	var errs []error
	for _, d := range meta.Related {
		if err := removeDir(d); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeDir(mainDir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// pinDirs lists every interface directory under root.
func pinDirs(root string) ([]string, error) {
	nsDirs, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bpf: list %s: %w", root, err)
	}
	var dirs []string
	for _, ns := range nsDirs {
		if !ns.IsDir() {
			continue
		}
		ifs, err := os.ReadDir(filepath.Join(root, ns.Name()))
		if err != nil {
			continue
		}
		for _, i := range ifs {
			if i.IsDir() {
				dirs = append(dirs, filepath.Join(root, ns.Name(), i.Name()))
			}
		}
	}
	return dirs, nil
}

// linkAlive reports whether the pinned link in dir is still attached to a
// device (a link whose device went away, with its namespace, reports
// ifindex 0).
func linkAlive(dir string) bool {
	l, err := link.LoadPinnedLink(filepath.Join(dir, pinLink), nil)
	if err != nil {
		return false
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return false
	}
	x := info.XDP()
	return x != nil && x.Ifindex != 0
}

// CleanResult is one directory Clean removed, and why.
type CleanResult struct {
	Dir    string `json:"dir"`
	Reason string `json:"reason"`
	Owner  Owner  `json:"owner"`
	Iface  string `json:"iface"`
}

// Clean removes, under root, the pins of owners that no longer run, and of
// attachments whose interface is gone. Live owners' pins, persistent pins
// on existing interfaces and directories without a readable owner tag are
// left alone: Clean removes nothing it cannot prove abandoned.
func Clean(root string) ([]CleanResult, error) {
	if root == "" {
		root = DefaultPinRoot
	}
	if err := checkBPFFS(root); err != nil {
		return nil, err
	}
	dirs, err := pinDirs(root)
	if err != nil {
		return nil, err
	}
	var res []CleanResult
	var errs []error
	for _, d := range dirs {
		meta, err := ReadMeta(d)
		if err != nil || meta.Parent != "" {
			// Helpers go with their main directory.
			continue
		}
		reason := ""
		switch {
		case !meta.Owner.Persistent() && !meta.Owner.Alive():
			reason = fmt.Sprintf("owner %s exited", meta.Owner)
		case meta.Owner.Persistent() && !linkAlive(d):
			// Only a finished attachment is persistent, so its link
			// was pinned: missing or defunct means the device is gone.
			reason = "interface gone"
		default:
			continue
		}
		if err := removeGroup(d, meta); err != nil {
			errs = append(errs, err)
			continue
		}
		res = append(res, CleanResult{Dir: d, Reason: reason, Owner: meta.Owner, Iface: meta.Iface})
	}
	_ = os.Remove(root) // only when empty
	return res, errors.Join(errs...)
}
