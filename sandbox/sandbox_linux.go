package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/netns"
	"github.com/sluicenet/sluice/qdisc"
)

// guardTimeout bounds the guard's sweep of the namespace at teardown.
const guardTimeout = 5 * time.Second

// Receive buffering of the stack-side link, in bytes: SO_RCVBUF (and
// SO_SNDBUF) of the packet sockets, and the PACKET_RX_RING with --dispatch
// mmap. Whatever the sandbox's TCP has in flight arrives in a burst, up to
// the netstack's receive window (tcpBufMax, 8 MiB), in 64 KiB GSO frames
// whose kernel accounting (truesize) is larger still; when the reader is
// descheduled the burst must fit, or frames drop and TCP retransmits. With
// the dataplane's 4 MiB ring, a 3 s upload through mmap dropped (and
// retransmitted) about 400 frames; with 16 MiB, none (and recvmmsg with a
// 4 MiB buffer dropped a few). The memory is the kernel's and is used only
// as far as bursts fill it (a ring is allocated whole: 16 MiB per channel).
const (
	socketBufBytes = 16 << 20
	rxRingBytes    = 16 << 20
)

// Sandbox is a running command with its network.
type Sandbox struct {
	cfg  Config
	args Args
	log  *slog.Logger
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has been waited for
	werr error         // cmd.Wait's error; valid after done

	childNS  int // -1 when none
	childIno nsInode
	// stack is the stack behind eth0 (nil with --network host or none).
	stack     Stack
	stackName string
	publish   []Publish
	tap       *tap    // --pcap-log and --log-packets; nil when neither
	policy    *Policy // the egress policy; nil without --allow/--deny
	// names learns the DNS answers; nil without --dns. dnsUpstream is
	// where queries go.
	names       *nameTable
	dnsUpstream netip.AddrPort
	// stopWatch ends watchLink's report on the stack-side link; nil
	// before the network is up.
	stopWatch func()

	// undo holds the cleanups of Start, run in reverse by Close.
	undo      []func()
	closeOnce sync.Once
	final     []LinkStats // counters at Close
}

// Start runs o.Args in a sandbox with network o.Config. Everything that can
// fail (flags, host facts, namespaces, veth, sockets, the stack) fails
// before the command starts; the command's process exists already (it is
// the child whose namespace the veth goes into) but has not executed
// anything of the user's. The caller must call Wait and then Close.
func Start(ctx context.Context, o Options) (_ *Sandbox, err error) {
	c := o.Config
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if err := c.CheckImplemented(); err != nil {
		return nil, err
	}
	if len(o.Args) == 0 {
		return nil, errors.New("sandbox: no command to run")
	}
	path, err := exec.LookPath(o.Args[0])
	if err != nil {
		return nil, fmt.Errorf("sandbox: command %q: %w", o.Args[0], err)
	}
	src := o.Facts
	if src == nil {
		src = HostFactSource{}
	}
	facts, err := GatherFacts(src, c)
	if err != nil {
		return nil, err
	}
	args, err := Plan(c, facts)
	if err != nil {
		return nil, err
	}
	var factory StackFactory
	if args.Network.hasStack() {
		// An unknown stack fails here, before anything exists.
		if factory, err = LookupStack(c.StackName()); err != nil {
			return nil, fmt.Errorf("sandbox: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sb := &Sandbox{cfg: c, args: args, log: log, childNS: -1, done: make(chan struct{}), stackName: c.StackName()}
	defer func() {
		if err != nil {
			sb.Close()
		}
	}()
	lines := o.PacketLog
	if lines == nil {
		lines = os.Stderr
	}
	if sb.tap, err = newTap(c, lines, log); err != nil {
		return nil, err
	}
	if c.FaultCorpus != "" {
		// Made now, so that a bad directory fails the run at once and
		// not at the first fault, when nobody is looking.
		if err := os.MkdirAll(c.FaultCorpus, 0o755); err != nil {
			return nil, fmt.Errorf("sandbox: --fault-corpus: %w", err)
		}
	}
	if len(c.Publish) > 0 && !args.Network.hasStack() {
		return nil, fmt.Errorf("sandbox: --publish needs --network sandbox (with --network %v there is no stack to forward into)", args.Network)
	}
	for _, v := range c.Publish {
		p, err := ParsePublish(v)
		if err != nil {
			return nil, fmt.Errorf("sandbox: --publish %w", err)
		}
		sb.publish = append(sb.publish, p)
	}
	var resolvConf string
	// DNS is the netstack's service, on unless --dns=false; a plugin
	// stack (whose gateway may be a kernel serving none) is asked for it
	// only when --dns-upstream names a resolver.
	if (c.DNSOn() && args.Network == NetworkSandbox) || (c.DNSUpstream != "" && args.Network == NetworkPlugin) {
		if c.DNSUpstream != "" {
			if sb.dnsUpstream, err = ParseDNSUpstream(c.DNSUpstream); err != nil {
				return nil, err
			}
		} else if sb.dnsUpstream, err = hostResolver("/etc/resolv.conf"); err != nil {
			// The service runs all the same and answers SERVFAIL
			// (counted, and logged at the first query): a host
			// without a resolver must not keep a command that needs
			// no names from running.
			log.Info("sandbox: DNS without an upstream resolver", "err", err)
		}
		sb.names = newNameTable()
		// The bind mount needs a file to cover; a host without
		// /etc/resolv.conf leaves the command's resolver unconfigured,
		// and the service on the gateway still answers.
		if _, err := os.Stat("/etc/resolv.conf"); err == nil {
			if resolvConf, err = writeResolvConf(args.Uplink.Gateways); err != nil {
				return nil, err
			}
			sb.push(func() { os.RemoveAll(filepath.Dir(resolvConf)) })
		} else {
			log.Warn("sandbox: DNS: the host has no /etc/resolv.conf to bind-mount over; the command's resolver is not pointed at the gateway", "err", err)
		}
	}
	if len(c.Allow) > 0 || len(c.Deny) > 0 {
		var plog io.Writer
		if c.LogPolicy || c.LogPolicyJSON {
			plog = o.PolicyLog
			if plog == nil {
				plog = os.Stderr
			}
		}
		if sb.policy, err = newPolicy(c, plog, c.LogPolicyJSON, sb.names); err != nil {
			return nil, err
		}
	}

	if args.Network == NetworkHost {
		cmd := sb.command(o, path, o.Args)
		if err := sb.startChild(cmd); err != nil {
			return nil, err
		}
		if o.Ready != nil {
			if err := o.Ready(sb); err != nil {
				return nil, err
			}
		}
		return sb, nil
	}

	// The child: sluice's init in a new network namespace, blocked on a
	// pipe until its network is ready.
	rd, wr, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("sandbox: pipe: %w", err)
	}
	sb.push(func() { wr.Close() })
	initPath := o.InitPath
	if initPath == "" {
		initPath = "/proc/self/exe"
	}
	argv := []string{"sluice", InitCommand, "--", path}
	argv = append(argv, o.Args...)
	cmd := sb.command(o, initPath, argv)
	cmd.ExtraFiles = []*os.File{rd} // fd 3 in the child
	cmd.SysProcAttr.Cloneflags = unix.CLONE_NEWNET
	if resolvConf != "" {
		// A mount namespace of its own, in which the init bind-mounts
		// the generated resolv.conf over /etc/resolv.conf: the
		// command's resolver is the gateway, and the host's file is
		// untouched.
		cmd.SysProcAttr.Cloneflags |= unix.CLONE_NEWNS
		env := cmd.Env
		if env == nil {
			env = os.Environ()
		}
		cmd.Env = append(env[:len(env):len(env)], resolvConfEnv+"="+resolvConf)
	}
	err = sb.startChild(cmd)
	rd.Close()
	if err != nil {
		return nil, err
	}
	sb.childNS, err = unix.Open(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sandbox: open the command's namespace: %w", err)
	}
	ns := sb.childNS
	sb.push(func() { unix.Close(ns) })
	if sb.childIno, err = inodeOfFD(ns); err != nil {
		return nil, fmt.Errorf("sandbox: the command's namespace: %w", err)
	}
	if err := sb.startGuard(initPath); err != nil {
		return nil, err
	}

	if args.Network.hasStack() {
		if err := sb.startNetwork(factory); err != nil {
			return nil, err
		}
	} else if _, err := configureSandboxSide(sb.childNS, SandboxLink{}); err != nil {
		return nil, fmt.Errorf("sandbox: --network none: %w", err)
	}

	if o.Ready != nil {
		if err := o.Ready(sb); err != nil {
			return nil, err
		}
	}
	// Go: the init reads this byte and execs the command.
	if _, err := wr.Write([]byte{'g'}); err != nil {
		return nil, fmt.Errorf("sandbox: start the command: %w", err)
	}
	wr.Close()
	return sb, nil
}

// command returns the exec.Cmd of the child, which dies with sluice: the
// kernel sends it SIGKILL when the thread that forked it ends (startChild
// keeps that thread for the child's lifetime).
func (sb *Sandbox) command(o Options, path string, argv []string) *exec.Cmd {
	cmd := &exec.Cmd{Path: path, Args: argv, Env: o.Env, Dir: o.Dir, Stdin: o.Stdin, Stdout: o.Stdout, Stderr: o.Stderr}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Pdeathsig: syscall.SIGKILL,
		Setpgid:   o.NewProcessGroup || o.Foreground,
	}
	if o.Foreground {
		cmd.SysProcAttr.Foreground = true
		cmd.SysProcAttr.Ctty = 0 // the child's stdin
	}
	return cmd
}

// startChild starts cmd on a locked OS thread that stays alive until the
// child has been waited for: Pdeathsig fires when the forking *thread*
// exits, not the process (prctl(2); golang/go#27505), and the Go runtime may
// retire an unlocked thread at any time.
func (sb *Sandbox) startChild(cmd *exec.Cmd) error {
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			close(sb.done)
			return
		}
		sb.cmd = cmd
		started <- nil
		sb.werr = cmd.Wait()
		close(sb.done)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("sandbox: start %s: %w", cmd.Path, err)
	}
	return nil
}

// startGuard starts the guard: sluice re-executed in the command's
// namespace, holding the read end of a pipe whose write end only sluice
// has. When sluice dies (even by SIGKILL) or closes it at teardown, the
// guard kills every process left in the namespace. Pdeathsig covers only
// the command itself; what the command started in the background would
// otherwise outlive sluice and keep the namespace alive.
func (sb *Sandbox) startGuard(initPath string) error {
	rd, wr, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("sandbox: guard pipe: %w", err)
	}
	guard := &exec.Cmd{
		Path:       initPath,
		Args:       []string{"sluice", GuardCommand},
		ExtraFiles: []*os.File{rd},
		// Its own process group: a ^C at the terminal is not for it.
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	// A process starts in the network namespace of the thread that forks
	// it.
	err = netns.DoFD(sb.childNS, guard.Start)
	rd.Close()
	if err != nil {
		wr.Close()
		return fmt.Errorf("sandbox: start the guard: %w", err)
	}
	sb.push(func() {
		wr.Close()
		done := make(chan struct{})
		go func() { _ = guard.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(guardTimeout):
			sb.log.Warn("sandbox: the guard did not finish; killing it", "pid", guard.Process.Pid)
			_ = guard.Process.Kill()
			<-done
		}
	})
	return nil
}

// startNetwork makes the stack namespace and brings the stack up through
// the Stack steps: PreInit (the veth), Init, CreateLinksAndRoutes. On error
// Close undoes it.
func (sb *Sandbox) startNetwork(factory StackFactory) error {
	a := &sb.args
	env := &StackEnv{
		Name:         sb.stackName,
		Args:         a,
		CommandNS:    sb.childNS,
		UplinkNS:     -1,
		Logger:       sb.log,
		PluginConfig: sb.cfg.PluginConfig,
		Publish:      sb.publish,
		FaultCorpus:  sb.cfg.FaultCorpus,
		policy:       sb.policy,
		tap:          sb.tap,
	}
	if sb.tap != nil {
		env.Tap = sb.tap
	}
	if sb.names != nil {
		env.DNSService, env.DNS, env.names = true, sb.dnsUpstream, sb.names
	}
	if a.Uplink.NetNS != "" {
		fd, err := unix.Open(netns.Path(a.Uplink.NetNS), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("sandbox: --uplink-netns %s: %w", a.Uplink.NetNS, err)
		}
		sb.push(func() { unix.Close(fd) })
		env.UplinkNS = fd
	}
	stackNS, err := netns.NewAnonymous()
	if err != nil {
		return fmt.Errorf("sandbox: create the stack namespace: %w", err)
	}
	sb.push(func() { unix.Close(stackNS) })
	env.StackNS = stackNS

	fail := func(step string, err error) error {
		return fmt.Errorf("sandbox: stack %s: %s: %w", sb.stackName, step, err)
	}
	st, err := factory()
	if err != nil {
		return fail("new", err)
	}
	if st == nil {
		return fail("new", errors.New("the factory returned no stack"))
	}
	sb.stack = st
	initStr, fds, err := st.PreInit(env)
	if err != nil {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return fail("pre-init", err)
	}
	if err := st.Init(initStr, fds); err != nil {
		return fail("init", err)
	}
	if err := st.CreateLinksAndRoutes(); err != nil {
		return fail("create links and routes", err)
	}
	// The stack-side link, whichever endpoint reads it (fd-based, or
	// AF_XDP with --xdp ns).
	if sl, ok := a.StackLink(); ok {
		if sb.stopWatch, err = watchLink(stackNS, sl.Name, sb.log); err != nil {
			return err
		}
	}
	return nil
}

func qdiscKind(q QDisc) qdisc.Kind {
	if q == QDiscFIFO {
		return qdisc.FIFO
	}
	return qdisc.None
}

func (sb *Sandbox) push(f func()) { sb.undo = append(sb.undo, f) }

// Pid returns the command's process ID.
func (sb *Sandbox) Pid() int {
	if sb.cmd == nil || sb.cmd.Process == nil {
		return 0
	}
	return sb.cmd.Process.Pid
}

// Signal sends sig to the command.
func (sb *Sandbox) Signal(sig os.Signal) error {
	if sb.cmd == nil {
		return errors.New("sandbox: no command")
	}
	select {
	case <-sb.done:
		return os.ErrProcessDone
	default:
	}
	return sb.cmd.Process.Signal(sig)
}

// Done is closed when the command has exited.
func (sb *Sandbox) Done() <-chan struct{} { return sb.done }

// Wait waits for the command and returns its exit status as a shell reports
// it: the exit code, or 128+N for death by signal N.
func (sb *Sandbox) Wait() (int, error) {
	<-sb.done
	if sb.cmd == nil || sb.cmd.ProcessState == nil {
		return 0, fmt.Errorf("sandbox: command did not run: %w", sb.werr)
	}
	ps := sb.cmd.ProcessState
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	if code := ps.ExitCode(); code >= 0 {
		return code, nil
	}
	return 0, fmt.Errorf("sandbox: wait: %w", sb.werr)
}

// Stats returns the counters of the sandbox's links (none with --network
// host or none). After Close it returns the counters at Close.
func (sb *Sandbox) Stats() []LinkStats {
	if sb.final != nil {
		return sb.final
	}
	if sb.stack == nil {
		return []LinkStats{}
	}
	st := sb.stack.Stats()
	if st == nil {
		st = []LinkStats{}
	}
	return st
}

// StackName returns the registered name of the stack behind eth0; empty
// with --network host or none.
func (sb *Sandbox) StackName() string { return sb.stackName }

// StackServiceStats returns the stack's own service counters; nil when it
// has none.
func (sb *Sandbox) StackServiceStats() map[string]uint64 {
	if sb.stack == nil {
		return nil
	}
	return sb.stack.ServiceStats()
}

// DNSStats returns the DNS service's counters; nil without --dns.
func (sb *Sandbox) DNSStats() *DNSStats { return sb.names.stats() }

// PolicyStats returns the flows each egress rule decided; nil without a
// policy.
func (sb *Sandbox) PolicyStats() []PolicyStats { return sb.policy.Stats() }

// Args returns the plan the sandbox runs.
func (sb *Sandbox) Args() Args { return sb.args }

// Close tears the sandbox down: it kills the command if it still runs and
// every process it left in its namespace, closes the stack (its flows and
// sockets), and releases the namespaces. It is idempotent.
func (sb *Sandbox) Close() error {
	sb.closeOnce.Do(func() {
		if sb.cmd != nil {
			select {
			case <-sb.done:
			default:
				_ = sb.cmd.Process.Kill()
				<-sb.done
			}
		}
		sb.final = sb.Stats()
		// Before the stack's teardown, which may take the link down.
		if sb.stopWatch != nil {
			sb.stopWatch()
		}
		if sb.stack != nil {
			if err := sb.stack.Close(); err != nil {
				sb.log.Error("sandbox: close the stack", "stack", sb.stackName, "err", err)
			}
		}
		if err := sb.tap.Close(); err != nil {
			sb.log.Error(err.Error())
		}
		for i := len(sb.undo) - 1; i >= 0; i-- {
			sb.undo[i]()
		}
		sb.undo = nil
	})
	return nil
}

// Gateways returns the netstack's addresses, as the sandbox sees them.
func (sb *Sandbox) Gateways() []netip.Addr { return sb.args.Uplink.Gateways }
