// Package testenv builds the private worlds privileged tests run in: network
// namespaces and veth pairs created for one test and removed by its Cleanup.
// Nothing here touches the machine's real interfaces.
//
// A test that lacks what it needs skips with the reason; when CI=true the
// skip becomes a failure, so a runner that lost its privileges cannot pass by
// accident.
package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicenet/sluice/internal/netns"
)

// InCI reports whether the tests run in CI (CI=true), where missing
// privileges fail instead of skipping.
func InCI() bool { return os.Getenv("CI") == "true" }

// Skip skips t with reason, or fails it in CI.
func Skip(t testing.TB, reason string) {
	t.Helper()
	if InCI() {
		t.Fatalf("%s (CI=true: a privileged test must not skip)", reason)
	}
	t.Skip(reason)
}

// RequireRoot skips (or fails in CI) unless the test runs as root, which
// namespaces, AF_PACKET, eBPF and TUN need.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "requires root (CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN): run the tests as root")
	}
}

// RequireTool skips (or fails in CI) unless the named programs are on PATH.
func RequireTool(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			Skip(t, fmt.Sprintf("requires %s on PATH (apt-get install it; .ci/run does)", n))
		}
	}
}

var (
	seq       atomic.Uint32
	sweepOnce sync.Once
)

// sweepStale removes test namespaces left by test processes that died
// without running their cleanups (a timeout, a SIGKILL): their names carry
// the dead process's pid.
func sweepStale() {
	entries, err := os.ReadDir(netns.RunDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		var pid, n int
		if _, err := fmt.Sscanf(e.Name(), "slt%d-%d", &pid, &n); err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // still running
		}
		_ = netns.Delete(e.Name())
	}
}

// NewNS creates a named network namespace for t, removed in t.Cleanup. The
// name is unique within this process and starts with "slt".
func NewNS(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	sweepOnce.Do(sweepStale)
	name := fmt.Sprintf("slt%d-%d", os.Getpid(), seq.Add(1))
	if err := netns.Create(name); err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() {
		if err := netns.Delete(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	return name
}

// Veth is a veth pair whose ends A and B live in namespaces of their own.
type Veth struct {
	NSA, NSB string // namespace names
	A, B     string // interface names, "va" in NSA and "vb" in NSB
}

// NewVeth creates two namespaces joined by a veth pair, both ends up and
// without addresses. It all goes away in t.Cleanup.
//
// It returns once both ends are operationally up, not just
// administratively: until the kernel's link watcher has run for a device
// that gained its carrier (linkwatch_do_dev, which attaches its queueing
// discipline, up to a second later and more on a loaded machine), the
// device's noop qdisc drops whatever is sent while the send reports
// success, and a test's first frames vanish.
func NewVeth(t testing.TB) *Veth {
	t.Helper()
	v := &Veth{NSA: NewNS(t), NSB: NewNS(t), A: "va", B: "vb"}
	IP(t, v.NSA, "link", "add", v.A, "type", "veth", "peer", "name", v.B, "netns", v.NSB)
	IP(t, v.NSA, "link", "set", v.A, "up")
	IP(t, v.NSB, "link", "set", v.B, "up")
	for _, end := range []struct{ ns, dev string }{{v.NSA, v.A}, {v.NSB, v.B}} {
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(IP(t, end.ns, "-o", "link", "show", "dev", end.dev), "state UP") {
			if time.Now().After(deadline) {
				t.Fatalf("veth %s in %s not operationally up after 10s:\n%s", end.dev, end.ns, IP(t, end.ns, "-o", "link", "show", "dev", end.dev))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return v
}

// IP runs `ip -n ns args...` and fails t on error.
func IP(t testing.TB, ns string, args ...string) string {
	t.Helper()
	return Run(t, "ip", append([]string{"-n", ns}, args...)...)
}

// Exec runs a command inside ns (via nsenter) and fails t on error.
func Exec(t testing.TB, ns string, name string, args ...string) string {
	t.Helper()
	return Run(t, "nsenter", append([]string{"--net=" + netns.Path(ns), "--", name}, args...)...)
}

// Run runs a command with a one-minute bound and fails t on error.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := Output(name, args...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return out
}

// Output runs a command with a one-minute bound and returns its combined
// output, with the command line in the error.
func Output(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return buf.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, buf.String())
		}
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		<-done
		return buf.String(), fmt.Errorf("%s %s: timed out after 1m\n%s", name, strings.Join(args, " "), buf.String())
	}
	return buf.String(), nil
}

// Do runs fn inside ns on a locked thread and fails t on error.
func Do(t testing.TB, ns string, fn func() error) {
	t.Helper()
	if err := netns.Do(ns, fn); err != nil {
		t.Fatalf("in netns %s: %v", ns, err)
	}
}
