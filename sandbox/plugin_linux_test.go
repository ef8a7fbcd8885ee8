package sandbox_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/testenv"
	"github.com/sluicenet/sluice/sandbox"
)

// errFault is what the test stacks fail with.
var errFault = errors.New("injected fault")

// wrappedStack is the netstack under another name, failing at one step
// (none when failAt is empty). It records what a plugin sees: the
// namespaces, the plugin configuration and how often it was closed.
type wrappedStack struct {
	inner  sandbox.Stack
	failAt string // "pre-init", "init", "create links and routes" or ""

	mu       sync.Mutex
	nsLinks  []string // net:[inode] of the stack's and the command's namespace
	config   string
	closes   int
	preInits uint64
}

func (w *wrappedStack) PreInit(env *sandbox.StackEnv) (string, []int, error) {
	w.mu.Lock()
	w.config = env.PluginConfig
	w.preInits++
	for _, fd := range []int{env.StackNS, env.CommandNS} {
		if l, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd)); err == nil {
			w.nsLinks = append(w.nsLinks, l)
		}
	}
	w.mu.Unlock()
	if w.failAt == "pre-init" {
		// Fail with the veth made, as a stack failing halfway does.
		if _, err := env.SetUpSandboxLink(); err != nil {
			return "", nil, err
		}
		return "", nil, errFault
	}
	return w.inner.PreInit(env)
}

func (w *wrappedStack) Init(initStr string, fds []int) error {
	if err := w.inner.Init(initStr, fds); err != nil {
		return err
	}
	if w.failAt == "init" {
		return errFault
	}
	return nil
}

func (w *wrappedStack) CreateLinksAndRoutes() error {
	if err := w.inner.CreateLinksAndRoutes(); err != nil {
		return err
	}
	if w.failAt == "create links and routes" {
		// The endpoints are up and reading: the teardown must stop
		// them.
		return errFault
	}
	return nil
}

func (w *wrappedStack) Stats() []sandbox.LinkStats { return w.inner.Stats() }

func (w *wrappedStack) ServiceStats() map[string]uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return map[string]uint64{"pre_inits": w.preInits}
}

func (w *wrappedStack) Close() error {
	w.mu.Lock()
	w.closes++
	w.mu.Unlock()
	return w.inner.Close()
}

// testStacks are the stacks the tests registered, by name: the last one
// each factory made.
var testStacks = struct {
	sync.Mutex
	last map[string]*wrappedStack
}{last: map[string]*wrappedStack{}}

func init() {
	netstack, err := sandbox.LookupStack(sandbox.NetstackName)
	if err != nil {
		panic(err)
	}
	for _, failAt := range []string{"", "pre-init", "init", "create links and routes"} {
		name := "test-fail-" + strings.ReplaceAll(failAt, " ", "-")
		if failAt == "" {
			name = "test-netstack"
		}
		err := sandbox.RegisterStack(name, func() (sandbox.Stack, error) {
			inner, err := netstack()
			if err != nil {
				return nil, err
			}
			w := &wrappedStack{inner: inner, failAt: failAt}
			testStacks.Lock()
			testStacks.last[name] = w
			testStacks.Unlock()
			return w, nil
		})
		if err != nil {
			panic(err)
		}
	}
	if err := sandbox.RegisterStack("test-fail-new", func() (sandbox.Stack, error) { return nil, errFault }); err != nil {
		panic(err)
	}
}

func lastStack(name string) *wrappedStack {
	testStacks.Lock()
	defer testStacks.Unlock()
	w := testStacks.last[name]
	delete(testStacks.last, name)
	return w
}

// sluiceChildren returns the processes whose parent is this test and whose
// command line starts with "sluice" (the sandbox's init and guard).
func sluiceChildren() []string {
	var out []string
	pids, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range pids {
		b, err := os.ReadFile(p + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(os.Getpid()) {
			continue
		}
		cmdline, _ := os.ReadFile(p + "/cmdline")
		if strings.HasPrefix(string(cmdline), "sluice\x00") {
			out = append(out, filepath.Base(p)+" "+strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return out
}

// socketNamespaces returns the "net:[inode]" of the namespace of every
// socket this process holds: a socket keeps its namespace alive without
// naming it in /proc/self/fd.
func socketNamespaces(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	fds, _ := filepath.Glob("/proc/self/fd/*")
	for _, p := range fds {
		l, err := os.Readlink(p)
		if err != nil || !strings.HasPrefix(l, "socket:[") {
			continue
		}
		fd, err := strconv.Atoi(filepath.Base(p))
		if err != nil {
			continue
		}
		nsfd, err := unix.IoctlRetInt(fd, unix.SIOCGSKNS)
		if err != nil {
			continue // closed meanwhile
		}
		var st unix.Stat_t
		if unix.Fstat(nsfd, &st) == nil {
			out[fmt.Sprintf("net:[%d]", st.Ino)] = true
		}
		unix.Close(nsfd)
	}
	return out
}

func pluginOptions(plugin, marker string) sandbox.Options {
	c := sandbox.DefaultConfig()
	c.Network, c.Plugin, c.PluginConfig = sandbox.NetworkPlugin, plugin, "mode=test"
	return sandbox.Options{Config: c, Args: []string{"touch", marker}, InitPath: sluiceBin}
}

// TestPluginFailsBeforeTheCommandStarts starts sandboxes whose stack is
// unknown or fails at each step, and checks that Start says which and why,
// the command never ran, the stack was closed once, and no process,
// namespace or veth is left.
func TestPluginFailsBeforeTheCommandStarts(t *testing.T) {
	if sluiceBin == "" {
		testenv.Skip(t, "requires root to build sluice's init")
	}
	for _, tc := range []struct {
		plugin string
		want   []string
	}{
		{"no-such-stack", []string{"--plugin no-such-stack", "no such stack", "registered: ", sandbox.NetstackName, "test-netstack"}},
		{"test-fail-new", []string{"stack test-fail-new", "new", errFault.Error()}},
		{"test-fail-pre-init", []string{"stack test-fail-pre-init", "pre-init", errFault.Error()}},
		{"test-fail-init", []string{"stack test-fail-init", ": init: ", errFault.Error()}},
		{"test-fail-create-links-and-routes", []string{"stack test-fail-create-links-and-routes", "create links and routes", errFault.Error()}},
	} {
		t.Run(tc.plugin, func(t *testing.T) {
			if left := sluiceChildren(); len(left) > 0 {
				t.Fatalf("sluice processes exist before the test: %v", left)
			}
			marker := filepath.Join(t.TempDir(), "ran")
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			sb, err := sandbox.Start(ctx, pluginOptions(tc.plugin, marker))
			if err == nil {
				sb.Close()
				t.Fatal("Start succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if _, err := os.Stat(marker); err == nil {
				t.Error("the command ran")
			}
			var nsLinks []string
			if w := lastStack(tc.plugin); w != nil {
				w.mu.Lock()
				closes, config := w.closes, w.config
				nsLinks = w.nsLinks
				w.mu.Unlock()
				if closes != 1 {
					t.Errorf("the stack was closed %d times, want once", closes)
				}
				if config != "mode=test" {
					t.Errorf("the stack got --plugin-config %q, want mode=test", config)
				}
				if len(nsLinks) != 2 {
					t.Errorf("the stack saw namespaces %v, want the stack's and the command's", nsLinks)
				}
			}
			// A namespace nobody holds is gone with its devices. Only
			// this process (its descriptors, sockets and threads) and the
			// sandbox's processes could hold these: sluice never
			// mounts them. (Another process showing the same inode
			// later has a new namespace that reuses the number.) The
			// thread that made the stack namespace ends on its own,
			// so give it a moment.
			deadline := time.Now().Add(10 * time.Second)
			for {
				var left []string
				left = append(left, sluiceChildren()...)
				held := map[string]string{}
				tasks, _ := filepath.Glob("/proc/self/task/*/ns/net")
				fds, _ := filepath.Glob("/proc/self/fd/*")
				for _, p := range append(tasks, fds...) {
					if l, err := os.Readlink(p); err == nil && strings.HasPrefix(l, "net:[") {
						held[l] = p
					}
				}
				for ns := range socketNamespaces(t) {
					held[ns] = "a socket"
				}
				for _, ns := range nsLinks {
					if by, ok := held[ns]; ok {
						left = append(left, fmt.Sprintf("namespace %s still held by %s of this process", ns, by))
					}
				}
				if len(left) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("10 s after Start failed, still there: %v", left)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// TestPluginStack runs a download through a stack registered as a plugin
// (the netstack under another name): the command's traffic flows, and the
// sandbox reports the plugin's link and service counters.
func TestPluginStack(t *testing.T) {
	if sluiceBin == "" {
		testenv.Skip(t, "requires root to build sluice's init")
	}
	testenv.RequireTool(t, "curl", "sha256sum")
	ns := serverNS(t)
	const size = 5 << 20
	sum := serveData(t, listen(t, ns, netip.AddrPortFrom(server4, 8080)), size)

	o := pluginOptions("test-netstack", "")
	o.Config.UplinkNetNS = ns
	o.Args = []string{"sh", "-c", "curl -sS --max-time 60 http://10.99.0.1:8080/data | sha256sum"}
	var stdout, stderr bytes.Buffer
	o.Stdout, o.Stderr = &stdout, &stderr
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sb, err := sandbox.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	select {
	case <-sb.Done():
	case <-ctx.Done():
		t.Fatal("the command did not end within a minute")
	}
	if code, err := sb.Wait(); code != 0 || err != nil {
		t.Fatalf("command: exit %d, %v; stderr: %s", code, err, stderr.String())
	}
	if got := strings.Fields(stdout.String()); len(got) == 0 || got[0] != sum {
		t.Fatalf("sha256 inside the sandbox = %q, want %s; stderr: %s", stdout.String(), sum, stderr.String())
	}
	if sb.StackName() != "test-netstack" {
		t.Errorf("StackName() = %q", sb.StackName())
	}
	if got := sb.StackServiceStats()["pre_inits"]; got != 1 {
		t.Errorf("service stats pre_inits = %d, want 1", got)
	}
	sb.Close()
	st := sb.Stats()
	if len(st) != 1 || st[0].TxBytes < size {
		t.Errorf("link stats after Close %+v: want one link with tx bytes >= %d", st, size)
	}
	if w := lastStack("test-netstack"); w == nil || w.closes != 1 {
		t.Errorf("the plugin stack was not closed once: %+v", w)
	}
}

// TestStatsFileNamesTheStack checks that --stats-file names the stack that
// ran behind eth0.
func TestStatsFileNamesTheStack(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, sandbox.NetstackName},
		{[]string{"--network=plugin", "--plugin=" + sandbox.BridgeName}, sandbox.BridgeName},
		{[]string{"--network=none"}, ""},
	} {
		name := tc.want
		if name == "" {
			name = "network none"
		}
		t.Run(name, func(t *testing.T) {
			if tc.want == sandbox.BridgeName {
				testenv.RequireTool(t, "nft")
			}
			statsFile := filepath.Join(t.TempDir(), "stats.json")
			args := append([]string{"run", "--stats-file", statsFile}, tc.args...)
			mustRun(t, append(args, "--", "true")...)
			b, err := os.ReadFile(statsFile)
			if err != nil {
				t.Fatal(err)
			}
			var rep sandbox.Report
			if err := json.Unmarshal(b, &rep); err != nil {
				t.Fatalf("stats file %s: %v", b, err)
			}
			if rep.Stack != tc.want {
				t.Errorf("stats file names stack %q, want %q: %s", rep.Stack, tc.want, b)
			}
		})
	}
}
