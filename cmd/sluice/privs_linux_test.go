package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicenet/sluice/internal/privs"
	"github.com/sluicenet/sluice/internal/testenv"
)

// privsServer makes a namespace holding 10.99.0.1 on its lo with an HTTP
// server (in this process, listening there) that serves n random bytes at
// /data, and returns the namespace and the bytes' SHA-256.
func privsServer(t *testing.T, n int) (string, [32]byte) {
	t.Helper()
	ns := testenv.NewNS(t)
	testenv.IP(t, ns, "addr", "add", "10.99.0.1/32", "dev", "lo")
	data := make([]byte, n)
	r := rand.NewChaCha8([32]byte{1})
	_, _ = r.Read(data)
	var l net.Listener
	testenv.Do(t, ns, func() error {
		var err error
		l, err = net.Listen("tcp", "10.99.0.1:8080")
		return err
	})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(data) })}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return ns, sha256.Sum256(data)
}

// sluiceStatus is what the test read about a running sluice process.
type sluiceStatus struct {
	threads []privs.Status
	// netns are the network namespaces (inodes) of sluice's threads and
	// of its children while the sandbox ran, other than sluice's own and
	// the uplink namespace: the ones sluice made.
	netns map[string]bool
	pids  []int // the children of sluice
}

// readSluice reads the privilege fields of every thread of pid, and the
// namespaces and children it has.
func readSluice(t *testing.T, pid int, skipNS ...string) sluiceStatus {
	t.Helper()
	st := sluiceStatus{netns: map[string]bool{}}
	skip := map[string]bool{}
	// sluice starts in the test's namespace, which outlives it. Its main
	// thread's namespace says the same unless that thread is in another
	// namespace at the moment of reading (with --no-drop-privileges
	// setns stays allowed), so the test's own is named as well.
	for _, p := range append(skipNS, "/proc/self/ns/net", fmt.Sprintf("/proc/%d/ns/net", pid)) {
		// A named namespace is a bind mount, not a link: name it by
		// its inode as the links do.
		if fi, err := os.Stat(p); err == nil {
			skip[fmt.Sprintf("net:[%d]", fi.Sys().(*syscall.Stat_t).Ino)] = true
		}
	}
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("no threads of sluice (pid %d): %v", pid, err)
	}
	for _, task := range tasks {
		f, err := os.Open(filepath.Join(task, "status"))
		if err != nil {
			continue // the thread ended meanwhile
		}
		s, err := privs.ParseStatus(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		st.threads = append(st.threads, s)
		if l, err := os.Readlink(filepath.Join(task, "ns/net")); err == nil && !skip[l] {
			st.netns[l] = true
		}
	}
	// Namespaces sluice holds by descriptor.
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	for _, fd := range fds {
		if l, err := os.Readlink(fd); err == nil && strings.HasPrefix(l, "net:") && !skip[l] {
			st.netns[l] = true
		}
	}
	// Children, whichever thread forked them.
	var children []byte
	for _, task := range tasks {
		c, _ := os.ReadFile(filepath.Join(task, "children"))
		children = append(append(children, ' '), c...)
	}
	for _, f := range strings.Fields(string(children)) {
		c, _ := strconv.Atoi(f)
		st.pids = append(st.pids, c)
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", c)); err == nil && !skip[l] {
			st.netns[l] = true
		}
	}
	return st
}

// waitFile waits, bounded, for path to exist.
func waitFile(t *testing.T, path string, d time.Duration, running func() bool, output *bytes.Buffer) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if !running() {
			t.Fatalf("sluice ended before %s appeared:\n%s", path, output.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s did not appear within %v", path, d)
}

// TestRunDropsPrivileges runs the sluice binary with a command that
// fetches 20 MB through the sandbox and pings the server, then waits; while
// it waits, the test reads /proc/PID/status of every sluice thread and
// checks the capabilities against the documented set, no_new_privs and the
// seccomp filter. After the command ends, nothing sluice made remains.
func TestRunDropsPrivileges(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "curl", "ping", "sh", "ip")
	bin := buildSluice(t)
	const size = 20 << 20
	for _, tc := range []struct {
		name string
		// pingGroups is the uplink namespace's ping_group_range, "" for
		// the kernel's default "1 0" (no group may open ping sockets).
		pingGroups string
		flags      []string
		wantEff    privs.Set
		wantNNP    bool
		wantFilter bool
	}{
		{"raw ICMP needed", "", nil, privs.SetOf(privs.CapNetRaw), true, true},
		{"ping sockets allowed", "0 2147483647", nil, 0, true, true},
		{"without seccomp", "", []string{"--seccomp=false"}, privs.SetOf(privs.CapNetRaw), true, false},
		{"no drop", "", []string{"--no-drop-privileges"}, 0, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns, sum := privsServer(t, size)
			if tc.pingGroups != "" {
				testenv.Exec(t, ns, "sh", "-c", "echo '"+tc.pingGroups+"' > /proc/sys/net/ipv4/ping_group_range")
			}
			dir := t.TempDir()
			script := `set -ex
curl -sS --max-time 60 -o "$D/data" http://10.99.0.1:8080/data
ping -c 1 -W 5 10.99.0.1 > "$D/ping.txt" 2>&1
touch "$D/ready"
i=0
while [ ! -e "$D/go" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done`
			args := append([]string{"run", "--uplink-netns", ns}, tc.flags...)
			args = append(args, "--", "sh", "-c", script)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.Env = append(os.Environ(), "D="+dir)
			var stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stderr, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			running := func() bool {
				select {
				case err := <-exited:
					exited <- err
					return false
				default:
					return true
				}
			}
			waitFile(t, filepath.Join(dir, "ready"), 90*time.Second, running, &stderr)
			st := readSluice(t, cmd.Process.Pid, "/run/netns/"+ns)
			if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			var err error
			select {
			case err = <-exited:
			case <-ctx.Done():
				t.Fatal("sluice did not end")
			}
			if err != nil {
				t.Fatalf("sluice run: %v\n%s", err, stderr.String())
			}

			full := privs.SetOf(privs.CapSysAdmin, privs.CapNetAdmin, privs.CapNetRaw)
			t.Logf("%d threads; CapEff %#x, CapBnd %#x, NoNewPrivs %v, Seccomp %d", len(st.threads), uint64(st.threads[0].CapEff), uint64(st.threads[0].CapBnd), st.threads[0].NoNewPrivs, st.threads[0].Seccomp)
			for i, th := range st.threads {
				if tc.name == "no drop" {
					if th.CapEff&full != full {
						t.Errorf("thread %d: CapEff %v lacks root's %v with --no-drop-privileges", i, th.CapEff, full)
					}
				} else if th.CapEff != tc.wantEff || th.CapPrm != tc.wantEff || th.CapBnd != tc.wantEff || th.CapAmb != 0 || th.CapInh != 0 {
					t.Errorf("thread %d: CapEff %v, CapPrm %v, CapBnd %v, CapInh %v, CapAmb %v; want %v", i, th.CapEff, th.CapPrm, th.CapBnd, th.CapInh, th.CapAmb, tc.wantEff)
				}
				if th.NoNewPrivs != tc.wantNNP {
					t.Errorf("thread %d: NoNewPrivs %v, want %v", i, th.NoNewPrivs, tc.wantNNP)
				}
				if (th.Seccomp == 2) != tc.wantFilter {
					t.Errorf("thread %d: Seccomp mode %d, want a filter: %v", i, th.Seccomp, tc.wantFilter)
				}
			}
			got, err := os.ReadFile(filepath.Join(dir, "data"))
			if err != nil || sha256.Sum256(got) != sum {
				t.Errorf("the download through the sandbox is not the server's data (%d bytes, %v)", len(got), err)
			}
			if p, _ := os.ReadFile(filepath.Join(dir, "ping.txt")); !strings.Contains(string(p), " 0% packet loss") {
				t.Errorf("ping through the sandbox:\n%s", p)
			}

			// Teardown after the drop: sluice's children, and every
			// namespace it made, are gone.
			if len(st.netns) < 2 {
				t.Errorf("saw %d namespaces of sluice's while it ran (%v), want the command's and the stack's", len(st.netns), st.netns)
			}
			// The kernel ends what sluice's death signals (the guard,
			// the command's init) asynchronously: allow it a moment.
			var leftovers []string
			for range 100 {
				leftovers = namespaceHolders(st.netns)
				for _, pid := range st.pids {
					if state, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !strings.Contains(string(state), ") Z") {
						leftovers = append(leftovers, fmt.Sprintf("process %d, a child of sluice", pid))
					}
				}
				if len(leftovers) == 0 {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if len(leftovers) > 0 {
				t.Errorf("left behind after sluice ended: %v", leftovers)
			}
		})
	}
}

// namespaceHolders lists the processes, threads and descriptors that still
// hold one of the namespaces.
func namespaceHolders(netns map[string]bool) []string {
	var out []string
	links, _ := filepath.Glob("/proc/[0-9]*/task/*/ns/net")
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, p := range append(links, fds...) {
		if l, err := os.Readlink(p); err == nil && netns[l] {
			out = append(out, p+" -> "+l)
		}
	}
	return out
}

// TestRunWithoutPrivilege runs the sluice binary as nobody with no
// capabilities: sluice run fails before the command starts, naming what it
// lacks, without a stack trace; --network host, which needs nothing,
// works.
func TestRunWithoutPrivilege(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "setpriv")
	bin := buildSluice(t)
	// A directory nobody may reach and write (t.TempDir's parent is
	// private to root).
	dir, err := os.MkdirTemp("", "sluice-privs-nobody")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(dir, "ran")
	nobody := []string{"--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--"}
	run := func(args ...string) (int, string) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "setpriv", append(append(nobody[:len(nobody):len(nobody)], bin), args...)...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("setpriv: %v\n%s", err, out)
		}
		return code, string(out)
	}
	for _, network := range []string{"sandbox", "none"} {
		code, out := run("run", "--network", network, "--", "touch", marker)
		if code == 0 {
			t.Errorf("--network %s as nobody succeeded:\n%s", network, out)
		}
		for _, want := range []string{"CAP_SYS_ADMIN", "run it as root"} {
			if !strings.Contains(out, want) {
				t.Errorf("--network %s as nobody: the message does not say %q:\n%s", network, want, out)
			}
		}
		for _, bad := range []string{"goroutine ", "panic", "[signal"} {
			if strings.Contains(out, bad) {
				t.Errorf("--network %s as nobody: a stack trace:\n%s", network, out)
			}
		}
		if _, err := os.Stat(marker); err == nil {
			t.Fatalf("--network %s as nobody ran the command", network)
		}
	}
	if code, out := run("run", "--network", "host", "--", "touch", marker); code != 0 {
		t.Errorf("--network host as nobody: exit %d:\n%s", code, out)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("--network host as nobody did not run the command: %v", err)
	}
}
