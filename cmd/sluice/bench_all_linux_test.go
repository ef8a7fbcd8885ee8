package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/sluicenet/sluice/bench"
	"github.com/sluicenet/sluice/bpf"
	"github.com/sluicenet/sluice/internal/testenv"
)

// TestBenchAllQuick runs `sluice bench all --quick --duration 1s`: every
// scenario, each on its reduced plan (about a minute on a 2-vCPU VM), and
// checks what it writes, not how fast anything was. It runs the binary,
// not execute in this process: scenarios may re-execute sluice itself
// (the sandbox runs `sluice run`), which a test binary cannot stand in for.
func TestBenchAllQuick(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildBenchSluice(t)
	dir := filepath.Join(t.TempDir(), "out")
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "bench", "all", "--duration", "1s", "--quick", "--quiet", "--out", dir)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Logf("stderr:\n%s", stderr.String())
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}

	f, err := os.Open(filepath.Join(dir, resultsFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := bench.ReadResults(f)
	if err != nil {
		t.Fatalf("results.jsonl does not parse: %v", err)
	}
	if res.Machine.Kernel == "" || res.Machine.Cores < 1 || res.Machine.GoVersion == "" || res.Machine.SluiceVersion == "" || res.Machine.SluiceCommit == "" {
		t.Errorf("machine facts incomplete: %+v", res.Machine)
	}
	if res.Run.Repeats != 1 || res.Run.DurationSec != 1 || !res.Run.Quick || res.Run.ElapsedSec <= 0 || res.Run.Interrupted {
		t.Errorf("run facts %+v, want 1 repeat of 1s windows, quick, finished", res.Run)
	}
	// Every scenario produced rows or said why not.
	rows, skips := map[string]int{}, map[string]string{}
	for _, r := range res.Records {
		switch r.Kind {
		case bench.KindRow:
			rows[r.Scenario]++
			if r.Repeat != 1 || r.Impl == "" || r.Metric == "" || r.Unit == "" {
				t.Errorf("incomplete row %+v", r)
			}
		case bench.KindSkip:
			if r.Reason == "" {
				t.Errorf("skip without a reason: %+v", r)
			}
			if r.Impl == "" && r.Config == "" {
				skips[r.Scenario] = r.Reason
			}
		case bench.KindError:
			t.Errorf("a step failed: %+v", r)
		}
	}
	for _, sc := range bench.Scenarios() {
		n := sc.Name()
		if rows[n] == 0 && skips[n] == "" {
			t.Errorf("scenario %s: no rows and no skip reason", n)
		}
		t.Logf("scenario %s: %d rows, skip %q", n, rows[n], skips[n])
	}
	if rows["dispatch"] == 0 {
		t.Errorf("dispatch produced no rows as root")
	}

	summary, err := os.ReadFile(filepath.Join(dir, summaryFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(summary, stdout.Bytes()) {
		t.Errorf("stdout is not summary.md")
	}
	wants := []string{"# sluice bench all", "## dispatch", "| metric | unit | mode | channels | sluice | gvisor | sluice/gvisor |"}
	for _, sc := range bench.Scenarios() {
		if rows[sc.Name()] > 0 {
			wants = append(wants, "## "+sc.Name()+"\n")
		}
	}
	if len(skips) > 0 {
		wants = append(wants, "## Skipped")
	}
	for _, want := range wants {
		if !bytes.Contains(summary, []byte(want)) {
			t.Errorf("summary.md lacks %q:\n%s", want, summary)
		}
	}
	report, err := os.ReadFile(filepath.Join(dir, reportFile))
	if err != nil {
		t.Fatal(err)
	}
	svgs := regexp.MustCompile(`(?s)<svg .*?</svg>`).FindAll(report, -1)
	if len(svgs) < 3 {
		t.Errorf("report.html has %d SVGs, want a bar chart per dispatch metric at least", len(svgs))
	}
	for i, s := range svgs {
		d := xml.NewDecoder(bytes.NewReader(s))
		d.Strict = true
		for {
			_, err := d.Token()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("SVG %d of report.html is not well-formed: %v", i, err)
			}
		}
	}
}

// TestBenchAllInterrupted sends SIGINT to `sluice bench all` in the middle
// of a step and checks that it exits, says so, keeps what it had, and
// leaves no namespace, veth, XDP program, bpffs pin or process behind. Each
// case's filter leaves two steps; the interrupt comes during the second,
// chosen for what it holds: an XDP program, AF_XDP sockets, UMEM and extra
// queues (dispatch, mode xdp); pasta and the iperf3 client it forks
// (sandbox), which pasta leaves running when it exits; a tcpdump process
// pinned to a CPU (capture).
func TestBenchAllInterrupted(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildBenchSluice(t)
	for _, tc := range []struct {
		name string
		args []string
		tool string // needed on PATH for the second step
		// wait, if set, is the command name of a process that must be
		// running below a peer sluice started (not sluice's own child)
		// at the interrupt.
		wait string
	}{
		{name: "dispatch xdp", args: []string{"--duration", "2s", "--only", "dispatch:metric=tcp_gbps:channels=1:mode=mmap/xdp"}},
		{name: "sandbox pasta", args: []string{"--duration", "1s", "--quick", "--only", "sandbox:impl=sluice/pasta"}, tool: "pasta", wait: "iperf3"},
		{name: "capture tcpdump", args: []string{"--duration", "2s", "--only", "capture:cpu=shared:via=mmap:impl=sluice/tcpdump"}, tool: "tcpdump"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.tool != "" {
				testenv.RequireTool(t, tc.tool)
			}
			scenario, _, _ := strings.Cut(tc.args[len(tc.args)-1], ":")
			interruptBenchAll(t, bin, scenario, tc.args, tc.wait)
		})
	}
}

func interruptBenchAll(t *testing.T, bin, scenario string, args []string, wait string) {
	dir := filepath.Join(t.TempDir(), "out")
	linksBefore := rootLinks(t)

	cmd := exec.Command(bin, append(append([]string{"bench", "all"}, args...), "--quiet", "--out", dir)...)
	// A process group of its own, so that anything it started and left
	// would still be found after it exits.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	killed := false
	t.Cleanup(func() {
		if !killed {
			syscall.Kill(-pid, syscall.SIGKILL)
			cmd.Wait()
		}
	})

	var (
		log       bytes.Buffer
		logMu     sync.Mutex
		firstDone = make(chan struct{})
		once      sync.Once
	)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logMu.Lock()
			log.WriteString(sc.Text() + "\n")
			logMu.Unlock()
			if strings.HasPrefix(sc.Text(), "bench: [1/1 "+scenario+" 1/") {
				once.Do(func() { close(firstDone) })
			}
		}
	}()
	select {
	case <-firstDone:
	case <-time.After(2 * time.Minute):
		t.Fatalf("no step finished within 2 minutes")
	}
	// The second step is under way: its topology, programs and processes
	// are up and traffic flowing.
	time.Sleep(1500 * time.Millisecond)
	if wait != "" {
		// Under load the step may still be setting up: the case is
		// about what a peer started, so wait for it (bounded).
		deadline := time.Now().Add(time.Minute)
		for !grandchildRunning(pid, wait) {
			if time.Now().After(deadline) {
				t.Fatalf("no %s below a peer of sluice within a minute of the second step's start", wait)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	ns := benchNamespaces(t, pid)
	if len(ns) == 0 {
		t.Logf("no namespace of pid %d up at the interrupt (between measurements)", pid)
	}
	var nsIDs []uint64 // inodes, which name the namespaces in bpffs pin paths
	for _, n := range ns {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join("/var/run/netns", n), &st); err == nil {
			nsIDs = append(nsIDs, st.Ino)
		}
	}
	desc := descendants(pid)
	var names []string
	// The peers lead process groups of their own; a process one of them
	// forks after this look is still in its group.
	groups := map[int]bool{}
	for _, p := range desc {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p))
		names = append(names, fmt.Sprintf("%d:%s", p, strings.TrimSpace(string(comm))))
		if _, pg, ok := procState(p); ok && pg != pid {
			groups[pg] = true
		}
	}
	t.Logf("at the interrupt: namespaces %v, processes under sluice %v, their groups %v", ns, names, slices.Sorted(maps.Keys(groups)))
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
		killed = true
	case <-time.After(time.Minute):
		t.Fatalf("sluice bench all did not exit within a minute of SIGINT")
	}
	logMu.Lock()
	out := log.String()
	logMu.Unlock()
	t.Logf("stderr:\n%s", out)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Errorf("exit %v, want a non-zero status", err)
	}
	for _, want := range []string{"interrupted: cleaning up (Ctrl-C again to quit at once)", "interrupted: the partial results are in"} {
		if !strings.Contains(out, want) {
			t.Errorf("stderr lacks %q", want)
		}
	}

	// Nothing left behind.
	if left := benchNamespaces(t, pid); len(left) > 0 {
		t.Errorf("namespaces left: %v (were %v at the interrupt)", left, ns)
	}
	// Other packages' tests may add links and pins of their own while
	// this runs: only the bench's names and namespaces are looked for.
	for _, l := range rootLinks(t) {
		if (strings.HasPrefix(l, "va/") || strings.HasPrefix(l, "vb/")) && !slices.Contains(linksBefore, l) {
			t.Errorf("a bench veth end is in the root namespace: %s", l)
		}
	}
	for _, id := range nsIDs {
		dir := filepath.Join(bpf.DefaultPinRoot, strconv.FormatUint(id, 10))
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("pins of the bench's namespace left in %s", dir)
		}
	}
	for _, p := range desc {
		if _, _, ok := procState(p); ok {
			t.Errorf("process %d, started by sluice, outlived it", p)
		}
	}
	if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("processes left in sluice's process group (kill -0: %v)", err)
	}
	for _, p := range liveInGroups(groups) {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p))
		t.Errorf("process %d (%s) is left in the process group of a peer sluice started", p, strings.TrimSpace(string(comm)))
	}

	// What was measured before the interrupt was kept.
	res, err := os.ReadFile(filepath.Join(dir, resultsFile))
	if err != nil {
		t.Fatal(err)
	}
	r, err := bench.ReadResults(bytes.NewReader(res))
	if err != nil {
		t.Fatalf("results.jsonl does not parse: %v", err)
	}
	if !r.Run.Interrupted {
		t.Errorf("results.jsonl does not record the interruption")
	}
	var rows int
	for _, rec := range r.Records {
		if rec.Kind == bench.KindRow {
			rows++
		}
	}
	if rows < 2 {
		t.Errorf("%d rows kept, want the first step's", rows)
	}
	for _, f := range []string{summaryFile, reportFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s not written after the interrupt: %v", f, err)
		}
	}
}

// benchNamespaces lists the named namespaces of bench runs of pid: the
// topologies' "slb<pid>-<n>-a|b" (bench/topology.go) and the sandbox
// scenario's "sluice-sbx-<role>-<pid>" (bench/sandbox_linux.go).
func benchNamespaces(t *testing.T, pid int) []string {
	t.Helper()
	ents, err := os.ReadDir("/var/run/netns")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	p := strconv.Itoa(pid)
	var out []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, "slb"+p+"-") || strings.HasPrefix(n, "sluice-") && strings.HasSuffix(n, "-"+p) {
			out = append(out, n)
		}
	}
	return out
}

// rootLinks lists the links of the test's namespace with their XDP
// state: a leaked veth or XDP program would show here.
func rootLinks(t *testing.T) []string {
	t.Helper()
	ls, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range ls {
		a := l.Attrs()
		s := a.Name + "/" + l.Type()
		if a.Xdp != nil && a.Xdp.Attached {
			s += fmt.Sprintf("/xdp=%d", a.Xdp.ProgId)
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// procState reads the parent and process group of pid from
// /proc/pid/stat; ok is false for a process gone or a zombie (which holds
// nothing but its pid, and which init reaps).
func procState(pid int) (ppid, pgid int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	// "pid (comm) state ppid pgrp ...": comm may hold spaces and ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
		return 0, 0, false
	}
	ppid, err1 := strconv.Atoi(f[1])
	pgid, err2 := strconv.Atoi(f[2])
	return ppid, pgid, err1 == nil && err2 == nil
}

// procs lists the pids in /proc.
func procs() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		if p, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// liveInGroups lists the live processes whose process group is in groups.
func liveInGroups(groups map[int]bool) []int {
	var out []int
	for _, p := range procs() {
		if _, pg, ok := procState(p); ok && groups[pg] {
			out = append(out, p)
		}
	}
	return out
}

// grandchildRunning says whether a process named comm runs below pid but
// is not pid's own child: one a peer started.
func grandchildRunning(pid int, comm string) bool {
	for _, p := range descendants(pid) {
		c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p))
		if pp, _, ok := procState(p); ok && pp != pid && strings.TrimSpace(string(c)) == comm {
			return true
		}
	}
	return false
}

// descendants returns the processes below pid, from /proc.
func descendants(pid int) []int {
	parent := map[int]int{}
	for _, p := range procs() {
		if pp, _, ok := procState(p); ok {
			parent[p] = pp
		}
	}
	var out []int
	for p := range parent {
		for q := parent[p]; q > 1; q = parent[q] {
			if q == pid {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// buildBenchSluice builds the sluice binary into t's temporary directory,
// removed with it.
func buildBenchSluice(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "sluice")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}
