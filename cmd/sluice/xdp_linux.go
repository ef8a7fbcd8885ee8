package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sluicenet/sluice/bpf"
)

// newXDPCmd is `sluice xdp`: attach, detach, status, dump and clean, in the
// lifecycle of xdp-loader.
func newXDPCmd(stdout, stderr io.Writer) *cobra.Command {
	var pinRoot string
	cmd := &cobra.Command{
		Use:   "xdp",
		Short: "Attach, inspect, capture with and detach sluice's XDP programs",
		Long: `Attach, inspect, capture with and detach sluice's XDP programs.

Attachments made by "attach" are bpf links pinned under --pin-root (one
directory per interface), so they outlive sluice; "detach" removes the link
and everything pinned for the interface. "status" shows every interface's XDP
program, whoever attached it. Every subcommand needs root.`,
	}
	cmd.PersistentFlags().StringVar(&pinRoot, "pin-root", bpf.DefaultPinRoot, "bpffs directory sluice pins under")
	cmd.AddCommand(newXDPAttachCmd(stdout, &pinRoot))
	cmd.AddCommand(newXDPDetachCmd(stdout, &pinRoot))
	cmd.AddCommand(newXDPStatusCmd(stdout, &pinRoot))
	cmd.AddCommand(newXDPDumpCmd(stdout, stderr))
	cmd.AddCommand(newXDPCleanCmd(stdout, &pinRoot))
	return cmd
}

// xdpAttachOptions are `sluice xdp attach`'s flags.
type xdpAttachOptions struct {
	Iface     string
	Netns     string
	Program   string
	Mode      string
	Peer      string
	PassPorts []string
	Dst       []string
	// OwnerPID ties the pins to a process: `clean` removes them once it
	// has exited. 0 means persistent (removed only by detach).
	OwnerPID int
	PinRoot  string
}

func newXDPAttachCmd(stdout io.Writer, pinRoot *string) *cobra.Command {
	var o xdpAttachOptions
	cmd := &cobra.Command{
		Use:   "attach --iface IF --program pass|drop|redirect|tunnel",
		Short: "Attach an XDP program to an interface and pin it",
		Long: `Attach an XDP program to an interface and pin it so that it stays after
sluice exits.

Programs:
  pass      pass every frame (counted)
  drop      drop every frame (counted)
  redirect  frames to the AF_XDP socket of their rx queue (xsks map pinned
            next to the link); with --dst only frames to those addresses
  tunnel    IF's frames go to the veth --peer, except TCP/UDP to --pass-port
            (control traffic, default 22), and the veth's frames go out of IF

When a program redirects into a veth in driver mode, the veth's peer gets the
pass program if it has none (without it the kernel drops the frames silently).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.PinRoot = *pinRoot
			return runXDPAttach(cmd.Context(), stdout, o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.Iface, "iface", "i", "", "interface to attach to (required)")
	f.StringVar(&o.Netns, "netns", "", "network namespace of the interface: a name (ip netns) or a path; default the current one")
	f.StringVarP(&o.Program, "program", "p", "", "pass, drop, redirect or tunnel (required)")
	f.StringVarP(&o.Mode, "mode", "m", "auto", "XDP mode: auto, generic or driver")
	f.StringVar(&o.Peer, "peer", "", "tunnel: the veth to redirect the interface's traffic to")
	f.StringSliceVar(&o.PassPorts, "pass-port", nil, "tunnel: TCP/UDP destination ports kept by the host stack (default 22)")
	f.StringSliceVar(&o.Dst, "dst", nil, "redirect: only frames to these IPv4/IPv6 addresses (default all)")
	f.IntVar(&o.OwnerPID, "owner-pid", 0, "tie the pins to this process: `sluice xdp clean` removes them after it exits (default: persistent)")
	_ = cmd.MarkFlagRequired("iface")
	_ = cmd.MarkFlagRequired("program")
	return cmd
}

func runXDPAttach(_ context.Context, stdout io.Writer, o xdpAttachOptions) error {
	prog, err := bpf.ParseProgram(o.Program)
	if err != nil {
		return err
	}
	mode, err := bpf.ParseMode(o.Mode)
	if err != nil {
		return err
	}
	opts := bpf.AttachOptions{Netns: o.Netns, Iface: o.Iface, Program: prog, Mode: mode, Peer: o.Peer, Pin: true, PinRoot: o.PinRoot}
	if prog == bpf.Tunnel && o.Peer == "" {
		return errors.New("--program tunnel needs --peer VETH, the veth the user-space stack reads")
	}
	if prog != bpf.Tunnel && o.Peer != "" {
		return fmt.Errorf("--peer is only for --program tunnel, not %s", prog)
	}
	for _, s := range o.PassPorts {
		p, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
		if err != nil || p == 0 {
			return fmt.Errorf("--pass-port %q: want a port number 1-65535", s)
		}
		opts.Load.PassPorts = append(opts.Load.PassPorts, uint16(p))
	}
	for _, s := range o.Dst {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("--dst %q: want an IPv4 or IPv6 address", s)
		}
		opts.Load.RedirectAddrs = append(opts.Load.RedirectAddrs, a)
	}
	if o.OwnerPID != 0 {
		if opts.Owner, err = bpf.ProcessOwner(o.OwnerPID); err != nil {
			return fmt.Errorf("--owner-pid %d: no such process", o.OwnerPID)
		}
	}
	a, err := bpf.Attach(opts)
	if err != nil {
		return hint(err)
	}
	// The pins hold the attachment now; our descriptors can go.
	defer a.Close()
	for _, x := range append([]*bpf.Attachment{a}, a.Helpers...) {
		what := string(x.Program)
		if x.Role == bpf.RolePeerHelper {
			what += " (peer helper: XDP_REDIRECT into a veth needs a program on its peer)"
		}
		fmt.Fprintf(stdout, "attached %s to %s (ifindex %d%s): %s mode, program %s id %d, link id %d\n",
			what, x.Iface, x.Ifindex, nsSuffix(x.Netns), x.Mode, x.Program.KernelName(), x.ProgramID, x.LinkID)
	}
	fmt.Fprintf(stdout, "pinned at %s (owner: %s)\n", a.PinDir, opts.Owner)
	for _, n := range a.Notes {
		fmt.Fprintf(stdout, "note: %s\n", n)
	}
	return nil
}

func nsSuffix(ns string) string {
	if ns == "" {
		return ""
	}
	return ", netns " + ns
}

// hint adds the fix to errors that lost it on the way (a failed setns is
// a permission problem the bpf package never saw).
func hint(err error) error {
	if errors.Is(err, os.ErrPermission) && !errors.Is(err, bpf.ErrPermission) {
		return fmt.Errorf("%w: run as root (needs CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)", err)
	}
	return err
}

// xdpDetachOptions are `sluice xdp detach`'s flags.
type xdpDetachOptions struct {
	Iface   string
	Netns   string
	PinRoot string
}

func newXDPDetachCmd(stdout io.Writer, pinRoot *string) *cobra.Command {
	var o xdpDetachOptions
	cmd := &cobra.Command{
		Use:   "detach --iface IF",
		Short: "Detach sluice's XDP program from an interface and remove its pins",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.PinRoot = *pinRoot
			return runXDPDetach(cmd.Context(), stdout, o)
		},
	}
	cmd.Flags().StringVarP(&o.Iface, "iface", "i", "", "interface to detach from (required)")
	cmd.Flags().StringVar(&o.Netns, "netns", "", "network namespace of the interface (name or path)")
	_ = cmd.MarkFlagRequired("iface")
	return cmd
}

func runXDPDetach(_ context.Context, stdout io.Writer, o xdpDetachOptions) error {
	dirs, err := bpf.Detach(bpf.DetachOptions{Netns: o.Netns, Iface: o.Iface, PinRoot: o.PinRoot})
	if err != nil {
		return hint(err)
	}
	fmt.Fprintf(stdout, "detached from %s%s\n", o.Iface, nsSuffix(o.Netns))
	for _, d := range dirs {
		fmt.Fprintf(stdout, "removed %s\n", d)
	}
	return nil
}

// xdpStatusOptions are `sluice xdp status`'s flags.
type xdpStatusOptions struct {
	Iface   string
	Netns   string
	JSON    bool
	PinRoot string
}

func newXDPStatusCmd(stdout io.Writer, pinRoot *string) *cobra.Command {
	var o xdpStatusOptions
	cmd := &cobra.Command{
		Use:   "status [--iface IF] [--json]",
		Short: "Show every interface's XDP program, whoever attached it, with counters for sluice's",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.PinRoot = *pinRoot
			return runXDPStatus(cmd.Context(), stdout, o)
		},
	}
	cmd.Flags().StringVarP(&o.Iface, "iface", "i", "", "only this interface (shown even with nothing attached)")
	cmd.Flags().StringVar(&o.Netns, "netns", "", "network namespace to look in (name or path)")
	cmd.Flags().BoolVar(&o.JSON, "json", false, "print JSON")
	return cmd
}

func runXDPStatus(_ context.Context, stdout io.Writer, o xdpStatusOptions) error {
	st, err := bpf.List(bpf.ListOptions{Netns: o.Netns, Iface: o.Iface, PinRoot: o.PinRoot})
	if err != nil {
		return hint(err)
	}
	if o.JSON {
		if st == nil {
			st = []bpf.Status{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	if len(st) == 0 {
		fmt.Fprintln(stdout, "no XDP programs attached")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IFACE\tIFINDEX\tMODE\tPROG ID\tNAME\tTAG\tLINK ID\tOWNER\tCOUNTERS")
	for _, s := range st {
		counters := "-"
		if s.Counters != nil {
			counters = s.Counters.String()
		}
		link := "-"
		if s.LinkID != 0 {
			link = strconv.FormatUint(uint64(s.LinkID), 10)
		}
		id, name, tag := "-", "-", "-"
		if s.ProgramID != 0 {
			id, name, tag = strconv.FormatUint(uint64(s.ProgramID), 10), s.ProgramName, s.Tag
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Iface, s.Ifindex, s.Mode, id, name, tag, link, s.Owner(), counters)
	}
	return tw.Flush()
}

// xdpDumpOptions are `sluice xdp dump`'s flags.
type xdpDumpOptions struct {
	Iface   string
	Netns   string
	Write   string
	Count   int
	Snaplen int
	Mode    string
	// ready, for tests, is called once the capture program is attached.
	ready func()
}

func newXDPDumpCmd(stdout, stderr io.Writer) *cobra.Command {
	var o xdpDumpOptions
	cmd := &cobra.Command{
		Use:   "dump --iface IF -w FILE.pcap [-c N] [-s SNAPLEN]",
		Short: "Capture an interface's frames with the XDP capture program into a pcap file",
		Long: `Capture an interface's received frames with sluice's XDP capture program
(frames are copied to a BPF ring buffer, then passed on) into a pcap file
that tcpdump and tshark read. The interface must have no XDP program; the
capture program is attached without pinning and goes away when dump ends,
also when it is killed. Stops after -c frames, or on Ctrl-C.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runXDPDump(cmd.Context(), stdout, stderr, o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.Iface, "iface", "i", "", "interface to capture on (required)")
	f.StringVar(&o.Netns, "netns", "", "network namespace of the interface (name or path)")
	f.StringVarP(&o.Write, "write", "w", "", "pcap file to write (required)")
	f.IntVarP(&o.Count, "count", "c", 0, "stop after this many frames (default: until interrupted)")
	f.IntVarP(&o.Snaplen, "snaplen", "s", bpf.CaptureMax, "bytes kept per frame, at most 4096")
	f.StringVarP(&o.Mode, "mode", "m", "auto", "XDP mode: auto, generic or driver")
	_ = cmd.MarkFlagRequired("iface")
	_ = cmd.MarkFlagRequired("write")
	return cmd
}

func runXDPDump(ctx context.Context, stdout, stderr io.Writer, o xdpDumpOptions) (err error) {
	if o.Snaplen <= 0 || o.Snaplen > bpf.CaptureMax {
		return fmt.Errorf("--snaplen %d: want 1-%d (XDP sees at most one page of a frame)", o.Snaplen, bpf.CaptureMax)
	}
	if o.Count < 0 {
		return fmt.Errorf("--count %d: want 0 (no limit) or more", o.Count)
	}
	mode, err := bpf.ParseMode(o.Mode)
	if err != nil {
		return err
	}
	f, err := os.Create(o.Write)
	if err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("dump: %w", cerr)
		}
	}()
	bw := bufio.NewWriter(f)
	w, err := newPcapWriter(bw, uint32(o.Snaplen))
	if err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	st, err := bpf.CaptureFrames(ctx, bpf.CaptureOptions{
		Netns: o.Netns, Iface: o.Iface, Mode: mode, Snaplen: uint32(o.Snaplen), Count: o.Count,
		Ready: func(a *bpf.Attachment) {
			fmt.Fprintf(stderr, "capturing on %s (%s mode, program id %d), writing %s\n", o.Iface, a.Mode, a.ProgramID, o.Write)
			if o.ready != nil {
				o.ready()
			}
		},
	}, func(fr bpf.Frame) error {
		return w.writeFrame(fr.Time, fr.Length, fr.Data)
	})
	if ferr := bw.Flush(); err == nil && ferr != nil {
		err = fmt.Errorf("dump: write %s: %w", o.Write, ferr)
	}
	if err != nil {
		return hint(err)
	}
	fmt.Fprintf(stdout, "%d frames captured, %d lost (ring buffer full)\n", st.Captured, st.Lost)
	return nil
}

// xdpCleanOptions are `sluice xdp clean`'s flags.
type xdpCleanOptions struct {
	PinRoot string
}

func newXDPCleanCmd(stdout io.Writer, pinRoot *string) *cobra.Command {
	var o xdpCleanOptions
	return &cobra.Command{
		Use:   "clean",
		Short: "Remove the pins of owners that have exited (and of interfaces that are gone)",
		Long: `Remove what sluice pinned for an owner process that no longer runs, and
persistent attachments whose interface is gone. Live owners' attachments and
persistent ones on existing interfaces are left alone.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.PinRoot = *pinRoot
			return runXDPClean(cmd.Context(), stdout, o)
		},
	}
}

func runXDPClean(_ context.Context, stdout io.Writer, o xdpCleanOptions) error {
	res, err := bpf.Clean(o.PinRoot)
	for _, r := range res {
		fmt.Fprintf(stdout, "removed %s (%s, %s)\n", r.Dir, r.Iface, r.Reason)
	}
	if err != nil {
		return hint(err)
	}
	if len(res) == 0 {
		fmt.Fprintln(stdout, "nothing to clean")
	}
	return nil
}
