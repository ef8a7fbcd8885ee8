package bridge

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/sluicenet/sluice/internal/syncbuf"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/netns"
)

// Names of the kernel side. Every sluice bridge's uplink device and table
// share a prefix, so that one sandbox can tell the others' apart from
// anything else in the uplink namespace.
const (
	// UplinkDevPrefix starts the uplink namespace's end of the veth; a
	// random suffix makes it unique there ("slb" and 8 hex digits fit
	// IFNAMSIZ).
	UplinkDevPrefix = "slb"
	// TablePrefix starts the name of each bridge's nftables table.
	TablePrefix = "sluice_bridge_"
	// StackDevName is the stack namespace's end of the uplink veth.
	StackDevName = "sluice1"
)

// routerTimeout bounds the waits of the kernel side: the nftables keeper
// applying the table, and exiting at Close.
const routerTimeout = 10 * time.Second

// RouterOptions describe the kernel side of a bridge: the veth from the
// stack namespace into the uplink namespace, whose kernel routes the
// sandbox's frames.
type RouterOptions struct {
	// UplinkNS and StackNS are descriptors of the two namespaces,
	// borrowed.
	UplinkNS, StackNS int
	// UplinkName names the uplink namespace in messages ("" for
	// sluice's own).
	UplinkName string
	// MTU of both ends; the sandbox's.
	MTU int
	// Gateways are the addresses the uplink end takes, with the sandbox
	// subnet's prefix length (10.0.2.2/24, fd00:51ce::2/64): the kernel
	// there answers the sandbox's ARP and NDP for its gateway.
	Gateways []netip.Prefix
	// Logger receives what was set up and torn down. nil discards.
	Logger *slog.Logger
}

// Router is the kernel side, set up. Close removes it.
type Router struct {
	// Dev is the uplink namespace's end of the veth, StackDev the stack
	// namespace's, Table the nftables table (family inet).
	Dev, StackDev, Table string

	opts   RouterOptions
	log    *slog.Logger
	keeper *exec.Cmd
	stdin  io.WriteCloser
	stderr *syncbuf.Buffer // the keeper's stderr: nft's complaints
	waited chan struct{}
}

// forwardingSysctls are the switches that make the uplink namespace's
// kernel a router, in /proc/sys/net of that namespace.
var forwardingSysctls = []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"}

// SetupRouter creates the kernel side:
//
//   - a veth with StackDevName in the stack namespace (up, IPv6 off: the
//     stack namespace's kernel stays silent there) and a fresh
//     UplinkDevPrefix name in the uplink namespace, up, holding the
//     gateway addresses;
//   - forwarding on in the uplink namespace (IPv4 and IPv6), restored at
//     Close to what it was before the first bridge of that namespace
//     turned it on;
//   - an nftables table of its own there: masquerade of the sandbox's
//     subnets on the way out, and, when the namespace did not forward
//     before, a drop of every forwarded packet that does not come from or
//     go to a bridge, so that turning forwarding on makes the namespace a
//     router for the sandboxes only.
//
// The table is created with the owner flag by a long-lived `nft -i`
// (NFT_TABLE_F_OWNER, Linux 5.12): the kernel deletes it when that process's
// netlink socket closes, and the process exits when sluice closes its
// standard input, which the kernel does when sluice dies, even by SIGKILL.
// The shell around it then restores the sysctls unless another bridge's
// table remains. The veth dies with the stack namespace. So nothing of the
// kernel side outlives sluice.
func SetupRouter(o RouterOptions) (_ *Router, err error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if len(o.Gateways) == 0 {
		return nil, errors.New("bridge: router: no gateway address")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return nil, fmt.Errorf("bridge: the nft command (Debian package nftables) is needed for the uplink's NAT: %w", err)
	}
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	id := hex.EncodeToString(suffix[:])
	r := &Router{Dev: UplinkDevPrefix + id, StackDev: StackDevName, Table: TablePrefix + id, opts: o, log: o.Logger}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	if err := r.createVeth(); err != nil {
		return nil, err
	}
	saved, err := r.savedForwarding()
	if err != nil {
		return nil, err
	}
	if err := r.startKeeper(saved); err != nil {
		return nil, err
	}
	if err := netns.DoFD(o.UplinkNS, func() error {
		for _, p := range forwardingSysctls {
			if err := os.WriteFile(p, []byte("1"), 0); err != nil {
				return fmt.Errorf("turn forwarding on: %w", err)
			}
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("bridge: uplink namespace %s: %w", r.nsName(), err)
	}
	r.log.Debug("bridge: router up", "dev", r.Dev, "table", r.Table, "netns", r.nsName(), "saved", saved)
	return r, nil
}

func (r *Router) nsName() string {
	if r.opts.UplinkName == "" {
		return "(sluice's own)"
	}
	return r.opts.UplinkName
}

func nlHandle(fd int) (*netlink.Handle, error) {
	h, err := netlink.NewHandleAt(vnetns.NsHandle(fd))
	if err != nil {
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	return h, nil
}

func (r *Router) createVeth() error {
	o := r.opts
	h, err := nlHandle(o.UplinkNS)
	if err != nil {
		return err
	}
	defer h.Close()
	la := netlink.NewLinkAttrs()
	la.Name = r.Dev
	la.MTU = o.MTU
	veth := &netlink.Veth{LinkAttrs: la, PeerName: r.StackDev, PeerNamespace: netlink.NsFd(o.StackNS), PeerMTU: uint32(o.MTU)}
	if err := h.LinkAdd(veth); err != nil {
		return fmt.Errorf("bridge: create veth %s (uplink namespace %s) / %s: %w", r.Dev, r.nsName(), r.StackDev, err)
	}
	l, err := h.LinkByName(r.Dev)
	if err != nil {
		return fmt.Errorf("bridge: find %s: %w", r.Dev, err)
	}
	for _, g := range o.Gateways {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(g.Addr().AsSlice()), Mask: net.CIDRMask(g.Bits(), g.Addr().BitLen())}}
		if g.Addr().Is6() {
			// The segment holds the sandbox and this router only;
			// DAD would keep the address unusable for a second.
			a.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(l, a); err != nil {
			return fmt.Errorf("bridge: add %v to %s: %w", g, r.Dev, err)
		}
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("bridge: set %s up: %w", r.Dev, err)
	}
	err = netns.DoFD(o.StackNS, func() error {
		p := "/proc/sys/net/ipv6/conf/" + r.StackDev + "/disable_ipv6"
		if err := os.WriteFile(p, []byte("1"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("switch IPv6 off on %s: %w", r.StackDev, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	hs, err := nlHandle(o.StackNS)
	if err != nil {
		return err
	}
	defer hs.Close()
	sl, err := hs.LinkByName(r.StackDev)
	if err != nil {
		return fmt.Errorf("bridge: find %s: %w", r.StackDev, err)
	}
	if err := hs.LinkSetUp(sl); err != nil {
		return fmt.Errorf("bridge: set %s up: %w", r.StackDev, err)
	}
	return nil
}

// savedComment is how a table records the forwarding sysctls as they were
// before the first bridge of its namespace changed them.
var savedComment = regexp.MustCompile(`comment "sluice: forwarding was ip_forward=([01]) ipv6=([01])"`)

// savedForwarding returns the forwarding sysctls to restore at the end: as
// another live bridge of this namespace recorded them, or else as they are.
func (r *Router) savedForwarding() ([2]string, error) {
	var saved [2]string
	out, err := r.nft(nil, "list", "tables")
	if err != nil {
		return saved, err
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "table" || f[1] != "inet" || !strings.HasPrefix(f[2], TablePrefix) {
			continue
		}
		t, err := r.nft(nil, "list", "table", "inet", f[2])
		if err != nil {
			continue // gone meanwhile
		}
		if m := savedComment.FindStringSubmatch(t); m != nil {
			return [2]string{m[1], m[2]}, nil
		}
	}
	err = netns.DoFD(r.opts.UplinkNS, func() error {
		for i, p := range forwardingSysctls {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			saved[i] = strings.TrimSpace(string(b))
			if saved[i] != "0" {
				saved[i] = "1"
			}
		}
		return nil
	})
	if err != nil {
		return saved, fmt.Errorf("bridge: uplink namespace %s: read the forwarding sysctls: %w", r.nsName(), err)
	}
	return saved, nil
}

// ruleset returns the nft commands of the table.
func (r *Router) ruleset(saved [2]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "add table inet %s { flags owner; comment \"sluice: forwarding was ip_forward=%s ipv6=%s\"; }\n", r.Table, saved[0], saved[1])
	if saved[0] == "0" || saved[1] == "0" {
		// Forwarding is on for the sandboxes' sake only. A drop is
		// final across tables, so the rule spares every bridge's
		// device, not just this one's.
		fmt.Fprintf(&b, "add chain inet %s sandbox_forward { type filter hook forward priority filter; policy accept; }\n", r.Table)
		var fam []string
		if saved[0] == "0" {
			fam = append(fam, "ipv4")
		}
		if saved[1] == "0" {
			fam = append(fam, "ipv6")
		}
		fmt.Fprintf(&b, "add rule inet %s sandbox_forward meta nfproto { %s } iifname != \"%s*\" oifname != \"%s*\" drop\n",
			r.Table, strings.Join(fam, ", "), UplinkDevPrefix, UplinkDevPrefix)
	}
	fmt.Fprintf(&b, "add chain inet %s sandbox_nat { type nat hook postrouting priority srcnat; policy accept; }\n", r.Table)
	for _, g := range r.opts.Gateways {
		fam := "ip"
		if g.Addr().Is6() {
			fam = "ip6"
		}
		fmt.Fprintf(&b, "add rule inet %s sandbox_nat %s saddr %v oifname != \"%s\" masquerade\n", r.Table, fam, g.Masked(), r.Dev)
	}
	return b.String()
}

// keeperScript runs nft reading commands from sluice until sluice closes
// its input (or dies), then puts the forwarding sysctls ($1, $2) back unless
// another bridge's table is still there.
const keeperScript = `nft -i >/dev/null
if ! nft list tables 2>/dev/null | grep -q ' ` + TablePrefix + `'; then
	echo "$1" > /proc/sys/net/ipv4/ip_forward
	echo "$2" > /proc/sys/net/ipv6/conf/all/forwarding
fi`

func (r *Router) startKeeper(saved [2]string) error {
	rules := r.ruleset(saved)
	// Check first: a bad rule fails here with nft's message, rather
	// than in the interactive keeper, which only prints it.
	if _, err := r.nft(strings.NewReader(rules), "-c", "-f", "-"); err != nil {
		return err
	}
	cmd := exec.Command("/bin/sh", "-c", keeperScript, "sluice-bridge-keeper", saved[0], saved[1])
	// Not in sluice's process group: a ^C for the command must not end
	// it before sluice has torn down.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	r.stderr = new(syncbuf.Buffer)
	cmd.Stderr = r.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return fmt.Errorf("bridge: nft keeper: %w", err)
	}
	// A process starts in the namespace of the thread that forks it.
	if err := netns.DoFD(r.opts.UplinkNS, cmd.Start); err != nil {
		return fmt.Errorf("bridge: start nft: %w", err)
	}
	r.keeper, r.stdin, r.waited = cmd, stdin, make(chan struct{})
	go func() { _ = cmd.Wait(); close(r.waited) }()
	if _, err := io.WriteString(stdin, rules); err != nil {
		return fmt.Errorf("bridge: nft keeper: %w", err)
	}
	deadline := time.Now().Add(routerTimeout)
	for {
		if _, err := r.nft(nil, "list", "table", "inet", r.Table); err == nil {
			return nil
		}
		select {
		case <-r.waited:
			return fmt.Errorf("bridge: nft exited before creating table %s: %s", r.Table, strings.TrimSpace(r.stderr.String()))
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bridge: nft did not create table %s within %v: %s", r.Table, routerTimeout, strings.TrimSpace(r.stderr.String()))
		}
	}
}

// nft runs the nft command in the uplink namespace.
func (r *Router) nft(stdin io.Reader, args ...string) (string, error) {
	cmd := exec.Command("nft", args...)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := netns.DoFD(r.opts.UplinkNS, cmd.Start); err != nil {
		return "", fmt.Errorf("bridge: nft %s: %w", strings.Join(args, " "), err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return out.String(), fmt.Errorf("bridge: nft %s (uplink namespace %s): %w: %s", strings.Join(args, " "), r.nsName(), err, strings.TrimSpace(errb.String()))
		}
	case <-time.After(routerTimeout):
		_ = cmd.Process.Kill()
		<-done
		return "", fmt.Errorf("bridge: nft %s: no answer within %v", strings.Join(args, " "), routerTimeout)
	}
	return out.String(), nil
}

// Close removes the kernel side: the veth at once, the table and the
// sysctls through the keeper, waited for. It is idempotent.
func (r *Router) Close() error {
	var errs []error
	if h, err := nlHandle(r.opts.UplinkNS); err == nil {
		if l, err := h.LinkByName(r.Dev); err == nil {
			if err := h.LinkDel(l); err != nil {
				errs = append(errs, fmt.Errorf("bridge: delete %s: %w", r.Dev, err))
			}
		}
		h.Close()
	}
	if r.keeper != nil {
		r.stdin.Close()
		select {
		case <-r.waited:
		case <-time.After(routerTimeout):
			_ = r.keeper.Process.Kill()
			<-r.waited
			errs = append(errs, fmt.Errorf("bridge: nft keeper did not exit within %v; killed", routerTimeout))
		}
		r.keeper = nil
	}
	return errors.Join(errs...)
}
