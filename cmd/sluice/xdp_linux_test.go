package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/bpf"
	"github.com/sluicenet/sluice/internal/netns"
	"github.com/sluicenet/sluice/internal/testenv"
)

// These tests run `sluice xdp` against veth pairs in namespaces they
// create, with pins under a bpffs directory of their own. Traffic is a few
// pings and TCP connections inside those namespaces, bounded by count and
// timeouts.

var pinSeq atomic.Uint32

// testPinRoot is a fresh pin root on bpffs, removed in Cleanup.
func testPinRoot(t *testing.T) string {
	t.Helper()
	testenv.RequireRoot(t)
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/bpf", &st); err != nil || st.Type != unix.BPF_FS_MAGIC {
		testenv.Skip(t, "requires bpffs at /sys/fs/bpf: mount -t bpf bpf /sys/fs/bpf (test.sh does)")
	}
	root := fmt.Sprintf("/sys/fs/bpf/sluice-test-%d-%d", os.Getpid(), pinSeq.Add(1))
	t.Cleanup(func() { os.RemoveAll(root) })
	return root
}

// xdpRun runs `sluice xdp ARGS --pin-root ROOT` through execute.
func xdpRun(t *testing.T, root string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	full := append([]string{"xdp", "--pin-root", root}, args...)
	code = execute(context.Background(), full, &out, &errb)
	t.Logf("sluice %s -> %d\n%s%s", strings.Join(full, " "), code, out.String(), errb.String())
	return code, out.String(), errb.String()
}

func mustXDP(t *testing.T, root string, args ...string) string {
	t.Helper()
	code, out, errs := xdpRun(t, root, args...)
	if code != 0 {
		t.Fatalf("sluice xdp %s: exit %d: %s", strings.Join(args, " "), code, errs)
	}
	return out
}

// status returns `sluice xdp status --json` for one interface.
func status(t *testing.T, root, ns, iface string) bpf.Status {
	t.Helper()
	out := mustXDP(t, root, "status", "--netns", ns, "--iface", iface, "--json")
	var st []bpf.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st) != 1 {
		t.Fatalf("status --json: %v (%d entries)\n%s", err, len(st), out)
	}
	return st[0]
}

// quietVeth is a veth pair with addresses 192.0.2.1 (va) and 192.0.2.2
// (vb), IPv6 off and static neighbours, so the only frames on the wire are
// the ones a test sends.
func quietVeth(t *testing.T) *testenv.Veth {
	t.Helper()
	v := testenv.NewVeth(t)
	for _, x := range []struct{ ns, dev, addr string }{{v.NSA, v.A, "192.0.2.1/24"}, {v.NSB, v.B, "192.0.2.2/24"}} {
		testenv.Exec(t, x.ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf."+x.dev+".disable_ipv6=1")
		testenv.IP(t, x.ns, "addr", "add", x.addr, "dev", x.dev)
	}
	testenv.IP(t, v.NSA, "neigh", "replace", "192.0.2.2", "lladdr", mac(t, v.NSB, v.B), "dev", v.A)
	testenv.IP(t, v.NSB, "neigh", "replace", "192.0.2.1", "lladdr", mac(t, v.NSA, v.A), "dev", v.B)
	return v
}

func mac(t *testing.T, ns, dev string) string {
	t.Helper()
	var hw string
	testenv.Do(t, ns, func() error {
		i, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		hw = i.HardwareAddr.String()
		return nil
	})
	return hw
}

// txPackets is the interface's transmit counter.
func txPackets(t *testing.T, ns, dev string) uint64 {
	t.Helper()
	out := testenv.IP(t, ns, "-j", "-s", "link", "show", "dev", dev)
	var links []struct {
		Stats64 struct {
			TX struct{ Packets uint64 } `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -j -s link: %v\n%s", err, out)
	}
	return links[0].Stats64.TX.Packets
}

// ping sends count echo requests (0.2 s apart, 1 s reply timeout) and
// reports whether all were answered.
func ping(t *testing.T, ns, addr string, count int) bool {
	t.Helper()
	testenv.RequireTool(t, "ping", "nsenter")
	_, err := testenv.Output("nsenter", "--net="+netns.Path(ns), "--", "ping", "-n", "-q", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "1", addr)
	return err == nil
}

// noPins fails t if anything is left under root.
func noPins(t *testing.T, root string) {
	t.Helper()
	var left []string
	filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			left = append(left, p)
		}
		return nil
	})
	if len(left) > 0 {
		t.Errorf("pinned files left: %v", left)
	}
}

// bpftoolXDP is what `bpftool net show` lists under xdp in ns.
func bpftoolXDP(t *testing.T, ns string) string {
	t.Helper()
	testenv.RequireTool(t, "bpftool")
	out := testenv.Exec(t, ns, "bpftool", "net", "show")
	xdp, _, _ := strings.Cut(out, "tc:")
	return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(xdp), "xdp:"))
}

func TestXDPDropCountsEveryFrameAndBlocksPing(t *testing.T) {
	root := testPinRoot(t)
	v := quietVeth(t)
	if !ping(t, v.NSA, "192.0.2.2", 1) {
		t.Fatal("ping fails before anything is attached")
	}
	out := mustXDP(t, root, "attach", "--netns", v.NSB, "--iface", v.B, "--program", "drop", "--mode", "driver")
	if !strings.Contains(out, "attached drop to vb") || !strings.Contains(out, "driver mode") {
		t.Errorf("attach output does not say what it did:\n%s", out)
	}
	before := txPackets(t, v.NSA, v.A)
	if ping(t, v.NSA, "192.0.2.2", 5) {
		t.Fatal("ping got through the drop program")
	}
	sent := txPackets(t, v.NSA, v.A) - before
	st := status(t, root, v.NSB, v.B)
	if st.Mode != bpf.ModeDriver || st.ProgramName != "xdp_drop" || st.Pinned == nil || st.LinkID == 0 {
		t.Errorf("status = %+v, want xdp_drop in driver mode, pinned by sluice, held by a link", st)
	}
	if st.Counters == nil || st.Counters.Dropped.Packets != sent || sent < 5 {
		t.Errorf("dropped counter %+v, want the %d frames va sent (at least 5)", st.Counters, sent)
	}
	mustXDP(t, root, "detach", "--netns", v.NSB, "--iface", v.B)
	if !ping(t, v.NSA, "192.0.2.2", 1) {
		t.Error("ping still fails after detach")
	}
}

func TestXDPPassStatusDetach(t *testing.T) {
	root := testPinRoot(t)
	v := quietVeth(t)
	mustXDP(t, root, "attach", "--netns", v.NSB, "--iface", v.B, "--program", "pass", "--mode", "generic")
	if !ping(t, v.NSA, "192.0.2.2", 3) {
		t.Fatal("ping fails through the pass program")
	}
	st := status(t, root, v.NSB, v.B)
	if st.Mode != bpf.ModeGeneric || st.ProgramName != "xdp_pass" || st.Pinned == nil {
		t.Errorf("status = %+v, want xdp_pass in generic mode pinned by sluice", st)
	}
	if st.Counters == nil || st.Counters.Passed.Packets < 3 {
		t.Errorf("passed counter %+v, want at least the 3 echo requests", st.Counters)
	}
	table := mustXDP(t, root, "status", "--netns", v.NSB)
	if !strings.Contains(table, "xdp_pass") || !strings.Contains(table, "generic") || !strings.Contains(table, "sluice (persistent)") {
		t.Errorf("status table lacks the attachment:\n%s", table)
	}
	if x := bpftoolXDP(t, v.NSB); !strings.Contains(x, "generic") {
		t.Errorf("bpftool net show does not list the program: %q", x)
	}

	out := mustXDP(t, root, "detach", "--netns", v.NSB, "--iface", v.B)
	if !strings.Contains(out, "removed") {
		t.Errorf("detach output: %s", out)
	}
	if st := status(t, root, v.NSB, v.B); st.Mode != bpf.ModeNone {
		t.Errorf("after detach: status %+v, want nothing attached", st)
	}
	if x := bpftoolXDP(t, v.NSB); x != "" {
		t.Errorf("after detach bpftool net show lists %q", x)
	}
	noPins(t, root)
	if code, _, errs := xdpRun(t, root, "detach", "--netns", v.NSB, "--iface", v.B); code == 0 || !strings.Contains(errs, "nothing attached by sluice") {
		t.Errorf("second detach: exit %d, %q; want a 'nothing attached' error", code, errs)
	}
}

func TestXDPAttachErrors(t *testing.T) {
	root := testPinRoot(t)
	v := quietVeth(t)

	// A program attached by another tool, through netlink: the pass
	// program, generic mode, on va.
	objs, err := bpf.Load(bpf.Pass, bpf.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	setXDPNetlink(t, v.NSA, v.A, objs.Program.FD())

	mustXDP(t, root, "attach", "--netns", v.NSB, "--iface", v.B, "--program", "pass")
	tmp := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"already attached by sluice", []string{"attach", "--netns", v.NSB, "-i", v.B, "-p", "drop"},
			[]string{`already has XDP program "xdp_pass"`, "attached by sluice", "sluice xdp detach --iface vb --netns " + v.NSB}},
		{"already attached by another tool", []string{"attach", "--netns", v.NSA, "-i", v.A, "-p", "drop"},
			[]string{`already has XDP program "xdp_pass"`, "generic mode", "another tool", "ip link set dev va xdp off"}},
		{"unknown interface", []string{"attach", "--netns", v.NSB, "-i", "nosuch0", "-p", "pass"},
			[]string{"unknown interface", "nosuch0", "ip link"}},
		{"driver mode unsupported", []string{"attach", "--netns", v.NSB, "-i", "lo", "-p", "pass", "--mode", "driver"},
			[]string{"not supported", "--mode generic"}},
		{"bpffs not mounted", []string{"--pin-root", tmp, "attach", "--netns", v.NSB, "-i", "lo", "-p", "pass"},
			[]string{"not on a bpf filesystem", "mount -t bpf bpf /sys/fs/bpf"}},
		{"tunnel needs a peer", []string{"attach", "--netns", v.NSB, "-i", v.B, "-p", "tunnel"},
			[]string{"--peer"}},
		{"bad mode", []string{"attach", "--netns", v.NSB, "-i", v.B, "-p", "pass", "--mode", "fast"},
			[]string{`unknown XDP mode "fast"`}},
		{"detach of a foreign program", []string{"detach", "--netns", v.NSA, "-i", v.A},
			[]string{"another tool", "xdp off"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := xdpRun(t, root, tc.args...)
			if code == 0 {
				t.Fatalf("exit 0, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(errs, w) {
					t.Errorf("error %q does not contain %q", errs, w)
				}
			}
		})
	}
	// The failures left the attachments as they were.
	if st := status(t, root, v.NSB, v.B); st.ProgramName != "xdp_pass" {
		t.Errorf("vb: %+v, want sluice's pass program still there", st)
	}
	if st := status(t, root, v.NSB, "lo"); st.Mode != bpf.ModeNone {
		t.Errorf("dummy0: %+v, want nothing attached after the failed attaches", st)
	}
	setXDPNetlink(t, v.NSA, v.A, -1)
	mustXDP(t, root, "detach", "--netns", v.NSB, "--iface", v.B)
	noPins(t, root)
}

// setXDPNetlink attaches (fd >= 0) or removes (fd -1) a generic-mode XDP
// program the old way, through netlink, as `ip link set dev X xdpgeneric`
// does: another tool's attachment, from sluice's point of view.
func setXDPNetlink(t *testing.T, ns, dev string, fd int) {
	t.Helper()
	const xdpFlagsSKBMode = 1 << 1 // XDP_FLAGS_SKB_MODE, <linux/if_link.h>
	testenv.Do(t, ns, func() error {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		return netlink.LinkSetXdpFdWithFlags(l, fd, xdpFlagsSKBMode)
	})
}

func TestXDPPermissionError(t *testing.T) {
	testPinRoot(t)
	bin := buildSluice(t)
	v := quietVeth(t)
	cmd := exec.Command(bin, "xdp", "attach", "--netns", v.NSB, "-i", v.B, "-p", "pass")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("attach as nobody succeeded:\n%s", out)
	}
	if !strings.Contains(string(out), "run as root") {
		t.Errorf("error as nobody does not say to run as root:\n%s", out)
	}
}

var (
	builtSluice string
	buildErr    error
	buildOnce   = make(chan struct{})
	buildStart  atomic.Bool
)

// buildSluice builds the sluice binary once per test run.
func buildSluice(t *testing.T) string {
	t.Helper()
	if buildStart.CompareAndSwap(false, true) {
		dir, err := os.MkdirTemp("", "sluice-bin")
		if err == nil {
			builtSluice = filepath.Join(dir, "sluice")
			// World-executable so the permission test can run it as nobody.
			os.Chmod(dir, 0o755)
			build := exec.Command("go", "build", "-o", builtSluice, ".")
			// Without cgo, as test.sh builds it: sluice run can then
			// drop its capabilities on every thread.
			build.Env = append(os.Environ(), "CGO_ENABLED=0")
			out, err2 := build.CombinedOutput()
			if err2 != nil {
				err = fmt.Errorf("go build: %v\n%s", err2, out)
			}
		}
		buildErr = err
		close(buildOnce)
	}
	<-buildOnce
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtSluice
}

func TestXDPDumpWritesPcap(t *testing.T) {
	testenv.RequireTool(t, "tcpdump")
	testPinRoot(t)
	v := quietVeth(t)
	file := filepath.Join(t.TempDir(), "vb.pcap")
	ready := make(chan struct{})
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	go func() {
		done <- runXDPDump(ctx, &out, &errb, xdpDumpOptions{Netns: v.NSB, Iface: v.B, Write: file, Count: 4, Snaplen: 96, Mode: "auto", ready: func() { close(ready) }})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("dump ended before attaching: %v\n%s", err, errb.String())
	}
	if !ping(t, v.NSA, "192.0.2.2", 4) {
		t.Error("ping fails while capturing (the capture program must pass frames)")
	}
	if err := <-done; err != nil {
		t.Fatalf("dump: %v", err)
	}
	t.Logf("%s%s", errb.String(), out.String())
	if !strings.Contains(out.String(), "4 frames captured") {
		t.Errorf("dump output %q, want 4 frames captured", out.String())
	}
	r := testenv.Run(t, "tcpdump", "-n", "-r", file)
	lines := strings.Split(strings.TrimSpace(r), "\n")
	var echo int
	for _, l := range lines {
		if strings.Contains(l, "192.0.2.1 > 192.0.2.2: ICMP echo request") {
			echo++
		}
	}
	if echo != 4 {
		t.Errorf("tcpdump -r read %d echo requests, want 4:\n%s", echo, r)
	}
	if st := status(t, "", v.NSB, v.B); st.Mode != bpf.ModeNone {
		t.Errorf("capture program still attached after dump: %+v", st)
	}
}

func TestXDPKilledProcessLeavesNothing(t *testing.T) {
	root := testPinRoot(t)
	v := quietVeth(t)
	bin := buildSluice(t)
	// dump holds an unpinned attachment for as long as it runs.
	cmd := exec.Command(bin, "xdp", "--pin-root", root, "dump", "--netns", v.NSB, "-i", v.B, "-w", filepath.Join(t.TempDir(), "x.pcap"))
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitFor(t, 10*time.Second, "the capture program on vb", func() bool {
		return status(t, root, v.NSB, v.B).ProgramName == "xdp_capture"
	})
	if st := status(t, root, v.NSB, v.B); st.Owner() != "sluice (unpinned)" {
		t.Errorf("owner %q, want sluice (unpinned)", st.Owner())
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	waitFor(t, 10*time.Second, "vb's XDP hook to be empty", func() bool {
		return status(t, root, v.NSB, v.B).Mode == bpf.ModeNone
	})
	if x := bpftoolXDP(t, v.NSB); x != "" {
		t.Errorf("bpftool net show lists %q after the kill", x)
	}
	noPins(t, root)
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestXDPCleanRemovesOnlyDeadOwners(t *testing.T) {
	root := testPinRoot(t)
	v := quietVeth(t)
	dead := exec.Command("sleep", "60")
	live := exec.Command("sleep", "60")
	for _, c := range []*exec.Cmd{dead, live} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	}
	mustXDP(t, root, "attach", "--netns", v.NSB, "-i", v.B, "-p", "pass", "--owner-pid", strconv.Itoa(dead.Process.Pid))
	mustXDP(t, root, "attach", "--netns", v.NSA, "-i", v.A, "-p", "pass", "--owner-pid", strconv.Itoa(live.Process.Pid))
	dead.Process.Kill()
	dead.Wait()

	out := mustXDP(t, root, "clean")
	if !strings.Contains(out, "vb") || strings.Contains(out, "va") || !strings.Contains(out, "exited") {
		t.Errorf("clean output %q, want vb removed because its owner exited, va untouched", out)
	}
	if st := status(t, root, v.NSB, v.B); st.Mode != bpf.ModeNone {
		t.Errorf("vb after clean: %+v, want nothing attached", st)
	}
	st := status(t, root, v.NSA, v.A)
	if st.ProgramName != "xdp_pass" || st.Pinned == nil || st.Pinned.Owner.PID != live.Process.Pid {
		t.Errorf("va after clean: %+v, want the live owner's attachment intact", st)
	}
	if out := mustXDP(t, root, "clean"); !strings.Contains(out, "nothing to clean") {
		t.Errorf("second clean: %q", out)
	}
	mustXDP(t, root, "detach", "--netns", v.NSA, "-i", v.A)
	noPins(t, root)
}
