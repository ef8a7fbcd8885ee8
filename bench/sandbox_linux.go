package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sluicenet/sluice/internal/syncbuf"

	"github.com/sluicenet/sluice/internal/netns"
)

// Addresses of the sandbox scenario's server namespace. The servers listen
// on 10.200.0.1 on the namespace's lo; every sandbox reaches it by its
// default route. None of these overlap sluice run's default subnet
// (10.0.2.0/24), slirp4netns's (10.0.2.0/24, in its own namespace) or each
// other.
var (
	sbxServer = netip.MustParseAddr("10.200.0.1")
	// pasta copies the addresses and default route of the interface
	// that holds its namespace's default route into the sandbox: this
	// veth (both ends in the server namespace) gives it one.
	sbxUplinkCIDR = "10.200.9.1/24"
	sbxUplinkGW   = "10.200.9.254"
	// The kernel limit's veth between the sandbox and the server.
	sbxKernelServerCIDR  = "10.200.1.1/24"
	sbxKernelSandboxCIDR = "10.200.1.2/24"
	sbxKernelGW          = "10.200.1.1"
)

const (
	sbxIperfPort = 5201
	sbxRRPort    = 7007
	// sbxUser is the unprivileged user pasta runs as (pasta refuses to
	// run as root).
	sbxUser = "sluicebench"
)

// SandboxResult is what RunSandbox measured and what it could not.
type SandboxResult struct {
	Report
	// Skips says, per implementation or measurement not run, why.
	Skips []string
}

// RunSandbox measures the sandbox scenario (see the top of sandbox.go). It
// needs root. Everything it creates (namespaces, veths, processes, a copy
// of Exe for pasta's user) is removed before it returns, also when ctx is
// cancelled. A measurement that fails is left out of the report and its
// error joined into the returned one; the others still run.
func RunSandbox(ctx context.Context, opts SandboxOptions) (*SandboxResult, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("bench: sandbox: %w", ErrNeedRoot)
	}
	if opts.Exe == "" {
		return nil, errors.New("bench: sandbox: no sluice executable given")
	}
	if _, err := exec.LookPath("iperf3"); err != nil && opts.TCP {
		return nil, errors.New("bench: sandbox: iperf3 is not installed (apt-get install iperf3), or select --metrics rr_us")
	}
	progress := opts.Progress
	if progress == nil {
		progress = io.Discard
	}
	t := &sbxTopology{id: strconv.Itoa(os.Getpid()), progress: progress}
	defer t.close()
	if err := t.setupServer(opts); err != nil {
		return nil, fmt.Errorf("bench: sandbox: %w", err)
	}
	res := &SandboxResult{}
	var errs []error
	for _, impl := range opts.Impls {
		if ctx.Err() != nil {
			break
		}
		stacks := opts.Stacks
		if impl == ImplSluice {
			var skips []string
			stacks, skips = opts.runnableStacks()
			for _, sk := range skips {
				res.Skips = append(res.Skips, impl+" "+sk)
				fmt.Fprintf(progress, "sandbox: %s %s skipped\n", impl, sk)
			}
			if len(stacks) == 0 {
				continue
			}
		}
		run, skip, err := t.prepare(ctx, impl, opts.Exe)
		if skip != "" {
			res.Skips = append(res.Skips, impl+": "+skip)
			fmt.Fprintf(progress, "sandbox: %s skipped: %s\n", impl, skip)
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", impl, err))
			continue
		}
		for _, c := range opts.configs(impl, stacks) {
			if ctx.Err() != nil {
				break
			}
			v, err := t.measure(ctx, run, c, opts)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s %s %s: %w", impl, c.Metric, c, err))
				fmt.Fprintf(progress, "sandbox: %s %s %s: failed: %v\n", impl, c.Metric, c, err)
				continue
			}
			row := Row{Scenario: ScenarioSandbox, Impl: impl, Config: c.String(), Metric: c.Metric, Value: v, Unit: UnitGbps}
			if c.Metric == MetricRRMicros {
				row.Unit = UnitMicros
			}
			fmt.Fprintf(progress, "sandbox: %s %s %s: %s %s\n", impl, c.Metric, c, FormatValue(v), row.Unit)
			res.Add(row)
		}
	}
	if err := ctx.Err(); err != nil {
		errs = append(errs, fmt.Errorf("interrupted: %w", err))
	}
	if len(errs) > 0 {
		return res, fmt.Errorf("bench: sandbox: %w", errors.Join(errs...))
	}
	return res, nil
}

// runner runs argv inside one implementation's sandbox (c: sluice's stack
// and dispatch mode) and returns its stdout.
type runner func(ctx context.Context, c SandboxConfig, argv []string, timeout time.Duration) ([]byte, error)

// sbxTopology is what a run creates, removed by close in reverse order.
type sbxTopology struct {
	id       string
	progress io.Writer
	server   string // namespace name
	undo     []func() error
	rrStop   func()
}

func (t *sbxTopology) onClose(f func() error) { t.undo = append(t.undo, f) }

func (t *sbxTopology) close() {
	if t.rrStop != nil {
		t.rrStop()
	}
	for i := len(t.undo) - 1; i >= 0; i-- {
		if err := t.undo[i](); err != nil {
			fmt.Fprintf(t.progress, "sandbox: cleanup: %v\n", err)
		}
	}
	t.undo = nil
}

// newNS creates a named namespace removed by close.
func (t *sbxTopology) newNS(suffix string) (string, error) {
	name := "sluice-sbx-" + suffix + "-" + t.id
	if err := netns.Create(name); err != nil {
		return "", err
	}
	t.onClose(func() error { return netns.Delete(name) })
	return name, nil
}

// ip runs `ip` with args; errors carry its output.
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// setupServer creates the server namespace with its address, the uplink
// veth pasta needs, and the round-trip server. iperf3's server is started
// per measurement (startIperf3).
func (t *sbxTopology) setupServer(opts SandboxOptions) error {
	ns, err := t.newNS("srv")
	if err != nil {
		return err
	}
	t.server = ns
	steps := [][]string{
		{"-n", ns, "addr", "add", sbxServer.String() + "/32", "dev", "lo"},
		{"-n", ns, "link", "add", "sbxup0", "type", "veth", "peer", "name", "sbxup1"},
		{"-n", ns, "addr", "add", sbxUplinkCIDR, "dev", "sbxup0"},
		{"-n", ns, "link", "set", "sbxup0", "up"},
		{"-n", ns, "link", "set", "sbxup1", "up"},
		{"-n", ns, "route", "add", "default", "via", sbxUplinkGW, "dev", "sbxup0", "onlink"},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	if opts.RR {
		var l net.Listener
		err := netns.Do(ns, func() error {
			var err error
			l, err = net.Listen("tcp", netip.AddrPortFrom(sbxServer, sbxRRPort).String())
			return err
		})
		if err != nil {
			return fmt.Errorf("listen for round trips in %s: %w", ns, err)
		}
		t.rrStop = ServeRR(l)
	}
	return nil
}

// waitListening polls until a TCP socket listens on port in ns. It reads
// /proc/net/tcp from inside the namespace rather than connecting, because
// iperf3 -s takes any connection for a test.
func waitListening(ns string, port int, limit time.Duration) error {
	want := fmt.Sprintf(":%04X 00000000:0000 0A", port)
	deadline := time.Now().Add(limit)
	for {
		var data []byte
		err := netns.Do(ns, func() error {
			var err error
			// /proc/thread-self follows the thread's namespace.
			data, err = os.ReadFile("/proc/thread-self/net/tcp")
			return err
		})
		if err != nil {
			return err
		}
		if bytes.Contains(data, []byte(want)) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on port %d after %v", port, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// prepare builds impl's sandbox side and returns how to run a command in
// it, or why impl cannot run here.
func (t *sbxTopology) prepare(ctx context.Context, impl, exe string) (runner, string, error) {
	switch impl {
	case ImplSluice:
		return func(ctx context.Context, c SandboxConfig, argv []string, timeout time.Duration) ([]byte, error) {
			args := []string{"run", "--uplink-netns", netns.Path(t.server), "--profile", "throughput", "--dispatch", c.Mode}
			if c.Stack != "" && c.Stack != StackNetstack {
				args = append(args, "--network", "plugin", "--plugin", c.Stack)
			}
			args = append(args, "--")
			return runCmd(ctx, exe, append(args, argv...), timeout)
		}, "", nil
	case ImplKernel:
		return t.prepareKernel()
	case ImplSlirp4netns:
		return t.prepareSlirp(ctx)
	case ImplPasta:
		return t.preparePasta(exe)
	}
	return nil, "", fmt.Errorf("unknown implementation %q", impl)
}

// nsRunner runs commands in namespace ns with nsenter.
func nsRunner(ns string) runner {
	return func(ctx context.Context, _ SandboxConfig, argv []string, timeout time.Duration) ([]byte, error) {
		return runCmd(ctx, "nsenter", append([]string{"--net=" + netns.Path(ns), "--"}, argv...), timeout)
	}
}

// prepareKernel: a veth from a sandbox namespace to the server namespace,
// routed by the kernel (TSO and GRO on, as veth creates them).
func (t *sbxTopology) prepareKernel() (runner, string, error) {
	ns, err := t.newNS("kern")
	if err != nil {
		return nil, "", err
	}
	for _, s := range [][]string{
		{"-n", t.server, "link", "add", "sbxk1", "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"-n", t.server, "addr", "add", sbxKernelServerCIDR, "dev", "sbxk1"},
		{"-n", t.server, "link", "set", "sbxk1", "up"},
		{"-n", ns, "addr", "add", sbxKernelSandboxCIDR, "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
		{"-n", ns, "route", "add", "default", "via", sbxKernelGW},
	} {
		if err := ip(s...); err != nil {
			return nil, "", err
		}
	}
	// The server address sits on the server namespace's lo, so the
	// kernel delivers locally; forwarding on makes it a router as well,
	// as the brief of the limit says, at no cost to this path.
	if err := netns.Do(t.server, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0)
	}); err != nil {
		return nil, "", fmt.Errorf("ip_forward in %s: %w", t.server, err)
	}
	return nsRunner(ns), "", nil
}

// prepareSlirp starts slirp4netns in the server namespace (so its host-side
// sockets live there, never in the real network), attached to a fresh
// sandbox namespace, with the 65520 MTU it needs to be fast.
func (t *sbxTopology) prepareSlirp(ctx context.Context) (runner, string, error) {
	bin, err := exec.LookPath("slirp4netns")
	if err != nil {
		return nil, "slirp4netns is not installed (apt-get install slirp4netns)", nil
	}
	ns, err := t.newNS("slirp")
	if err != nil {
		return nil, "", err
	}
	cmd := exec.Command("nsenter", "--net="+netns.Path(t.server), "--", bin,
		"--configure", "--mtu=65520", "--disable-host-loopback", "--netns-type=path", netns.Path(ns), "tap0")
	var out syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	g, err := startGroup(cmd)
	if err != nil {
		return nil, "", fmt.Errorf("start slirp4netns: %w", err)
	}
	t.onClose(func() error { return g.Stop(groupGrace) })
	done := g.Exited()
	// --configure sets tap0's address and route before slirp4netns
	// serves: wait for the default route.
	deadline := time.Now().Add(5 * time.Second)
	for {
		o, err := exec.CommandContext(ctx, "ip", "-n", ns, "-4", "route", "show", "default").Output()
		if err == nil && bytes.Contains(o, []byte("tap0")) {
			break
		}
		select {
		case <-done:
			return nil, "", fmt.Errorf("slirp4netns exited: %s", strings.TrimSpace(out.String()))
		default:
		}
		if time.Now().After(deadline) {
			return nil, "", fmt.Errorf("slirp4netns did not configure tap0 within 5s: %s", strings.TrimSpace(out.String()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nsRunner(ns), "", nil
}

// preparePasta checks what pasta needs and returns a runner that starts
// one pasta per command: in the server namespace (its host-side sockets
// live there), as the unprivileged user sbxUser, with the command in the
// user and network namespaces pasta creates for it.
func (t *sbxTopology) preparePasta(exe string) (runner, string, error) {
	bin, err := exec.LookPath("pasta")
	if err != nil {
		return nil, "pasta is not installed (apt-get install passt)", nil
	}
	if b, err := os.ReadFile("/proc/sys/user/max_user_namespaces"); err == nil && strings.TrimSpace(string(b)) == "0" {
		return nil, "pasta runs unprivileged in a user namespace, and user.max_user_namespaces is 0", nil
	}
	// pasta opens /dev/net/tun as sbxUser (root in its user namespace
	// only), so the device must be read-write for others.
	st, err := os.Stat("/dev/net/tun")
	if err != nil {
		return nil, fmt.Sprintf("pasta needs /dev/net/tun: %v", err), nil
	}
	if st.Mode().Perm()&0o006 != 0o006 {
		return nil, fmt.Sprintf("pasta runs as the unprivileged user %s and /dev/net/tun is %v (not read-write for others)", sbxUser, st.Mode()), nil
	}
	uid, gid, err := sbxLookupUser()
	if err != nil {
		return nil, "", err
	}
	// sluice's binary may sit where sbxUser cannot read it (a build
	// cache under /root): a world-executable copy for the rr client.
	dir, err := os.MkdirTemp("", "sluice-sbx-")
	if err != nil {
		return nil, "", fmt.Errorf("temp dir for pasta's user: %w", err)
	}
	t.onClose(func() error { return os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, "", err
	}
	copyExe := filepath.Join(dir, "sluice")
	if err := copyFile(exe, copyExe, 0o755); err != nil {
		return nil, "", fmt.Errorf("copy %s for pasta's user: %w", exe, err)
	}
	return func(ctx context.Context, _ SandboxConfig, argv []string, timeout time.Duration) ([]byte, error) {
		argv = slices.Clone(argv)
		if argv[0] == exe {
			argv[0] = copyExe
		}
		// The change of user clears the parent-death signal runCmd
		// sets: --pdeathsig keep restores it for pasta. pasta does not
		// pass its own death on to the command it forks, so the
		// command gets one of its own; it also dies with its group
		// (runCmd), this is for a bench that is killed.
		args := []string{"--net=" + netns.Path(t.server), "--",
			"setpriv", "--reuid=" + uid, "--regid=" + gid, "--clear-groups", "--pdeathsig", "keep", "--",
			bin, "--config-net", "--quiet", "--foreground", "--",
			"setpriv", "--pdeathsig", "KILL", "--"}
		return runCmd(ctx, "nsenter", append(args, argv...), timeout)
	}, "", nil
}

// sbxLookupUser finds sbxUser, creating it (a system user with no home
// and no login shell) when missing.
func sbxLookupUser() (uid, gid string, err error) {
	u, err := user.Lookup(sbxUser)
	if err != nil {
		out, cerr := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", sbxUser).CombinedOutput()
		if cerr != nil {
			return "", "", fmt.Errorf("create the unprivileged user %s for pasta: %v: %s", sbxUser, cerr, strings.TrimSpace(string(out)))
		}
		if u, err = user.Lookup(sbxUser); err != nil {
			return "", "", fmt.Errorf("look up %s after useradd: %w", sbxUser, err)
		}
	}
	return u.Uid, u.Gid, nil
}

func copyFile(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// runCmd runs name with args, bounded by timeout, and returns its stdout.
// The process leads a process group of its own (see procgroup_linux.go);
// when ctx is cancelled or timeout passes, the whole group gets SIGTERM
// (sluice run passes it on to its command and tears its sandbox down),
// then SIGKILL after groupGrace. runCmd returns only once nothing of the
// group is left, also when the process exited by itself: what pasta
// started outlives pasta.
func runCmd(ctx context.Context, name string, args []string, timeout time.Duration) ([]byte, error) {
	cmd := exec.Command(name, args...)
	// SIGTERM rather than SIGKILL if the bench dies: sluice run then
	// still tears its sandbox down.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	g, err := startGroup(cmd)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", filepath.Base(name), err)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var stopped error
	select {
	case <-g.Exited():
	case <-ctx.Done():
		stopped = ctx.Err()
	case <-timer.C:
		stopped = fmt.Errorf("no result within %v", timeout)
	}
	serr := g.Stop(groupGrace)
	err = g.Err()
	if stopped != nil {
		err = stopped
	}
	if err == nil {
		err = serr
	}
	if err != nil {
		// stderr only: stdout is the result (iperf3's JSON carries its
		// own error, which the caller reports).
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 600 {
			msg = msg[:600] + "..."
		}
		return stdout.Bytes(), fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, msg)
	}
	return stdout.Bytes(), nil
}

// measure runs one configuration in run's sandbox.
func (t *sbxTopology) measure(ctx context.Context, run runner, c SandboxConfig, opts SandboxOptions) (float64, error) {
	timeout := opts.Duration + 60*time.Second
	if c.Metric == MetricRRMicros {
		argv := append(append([]string{opts.Exe}, RRArgs...),
			"--addr", netip.AddrPortFrom(sbxServer, sbxRRPort).String(),
			"--duration", opts.Duration.String())
		out, err := run(ctx, c, argv, timeout)
		if err != nil {
			// The client reports its own errors as JSON.
			if _, perr := ParseRR(out); perr != nil && len(out) > 0 {
				return 0, perr
			}
			return 0, err
		}
		return ParseRR(out)
	}
	stop, err := t.startIperf3()
	if err != nil {
		return 0, err
	}
	defer stop()
	out, err := run(ctx, c, iperf3Args(c, opts.Duration), timeout)
	if err != nil {
		if _, perr := ParseIperf3(out); perr != nil && len(out) > 0 {
			return 0, fmt.Errorf("%w (%v)", perr, errors.Unwrap(err))
		}
		return 0, err
	}
	return ParseIperf3(out)
}

// startIperf3 starts a one-off iperf3 server (-1: one test, then it exits)
// in the server namespace and waits until it listens. A fresh server per
// measurement, because a long-running iperf3 -s was seen to stop listening
// after a client it did not like, failing every later measurement.
func (t *sbxTopology) startIperf3() (stop func(), err error) {
	srv := exec.Command("nsenter", "--net="+netns.Path(t.server), "--", "iperf3", "-s", "-1", "-B", sbxServer.String(), "-p", strconv.Itoa(sbxIperfPort))
	var stderr syncbuf.Buffer
	srv.Stdout, srv.Stderr = &stderr, &stderr
	g, err := startGroup(srv)
	if err != nil {
		return nil, fmt.Errorf("start iperf3 -s: %w", err)
	}
	stop = func() {
		if err := g.Stop(groupGrace); err != nil {
			fmt.Fprintf(t.progress, "sandbox: stop iperf3 -s: %v\n", err)
		}
	}
	if err := waitListening(t.server, sbxIperfPort, 5*time.Second); err != nil {
		stop()
		return nil, fmt.Errorf("iperf3 -s in %s: %w (output: %s)", t.server, err, strings.TrimSpace(stderr.String()))
	}
	return stop, nil
}

// iperf3Args is the client command of a tcp_gbps measurement. iperf3 3.12
// takes whole seconds: the window is rounded up, at least 1 s.
func iperf3Args(c SandboxConfig, d time.Duration) []string {
	secs := max(1, int(math.Ceil(d.Seconds())))
	args := []string{"iperf3", "-c", sbxServer.String(), "-p", strconv.Itoa(sbxIperfPort),
		"-t", strconv.Itoa(secs), "-P", strconv.Itoa(c.Flows), "--json", "--connect-timeout", "5000"}
	if c.Dir == Down {
		args = append(args, "-R")
	}
	return args
}

// ServeRR answers round trips on l (see RRClient) until the returned stop
// function is called; stop closes l and every connection and waits.
func ServeRR(l net.Listener) (stop func()) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, RRMessageSize)
				for {
					if _, err := io.ReadFull(c, buf); err != nil {
						break
					}
					if _, err := c.Write(buf); err != nil {
						break
					}
				}
				c.Close()
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}()
	return func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}
}
