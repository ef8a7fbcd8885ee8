package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/sluicenet/sluice/sandbox"
)

// runOptions are the inputs of `sluice run`.
type runOptions struct {
	cfg    sandbox.Config
	args   []string // the command
	stdin  *os.File
	stdout io.Writer
	stderr io.Writer
	privs  privOptions
}

func newRunCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &runOptions{cfg: sandbox.DefaultConfig(), stdin: os.Stdin, stdout: stdout, stderr: stderr}
	cmd := &cobra.Command{
		Use:   "run [flags] -- COMMAND [ARGS...]",
		Short: "Run a command whose whole network goes through sluice's dataplane and a user-space TCP/IP stack",
		Long: fmt.Sprintf(`run starts COMMAND in a network namespace of its own, with lo and eth0 (a
veth). The far end of the veth is read by sluice's dataplane in a private
namespace and feeds gVisor's netstack, which owns the gateway addresses,
answers ARP and NDP, and terminates the command's TCP, UDP and ICMP echo,
re-originating each flow from a host socket (in --uplink-netns if given).

Addresses (defaults): sandbox 10.0.2.100/24 and fd00:51ce::100/64, gateway
10.0.2.2 and fd00:51ce::2. Connections to the gateway are refused unless
--allow-host-loopback maps them to the uplink namespace's 127.0.0.1 / ::1.

Network services:
  DNS (on by default; --dns=false turns it off) is served on the gateway
  addresses, UDP and TCP port 53, forwarded to the first nameserver of the
  host's /etc/resolv.conf or to --dns-upstream ADDR[:PORT], and a
  resolv.conf naming the gateways is bind-mounted over the command's
  /etc/resolv.conf (in a mount namespace of its own; the host's file is
  untouched). With no usable nameserver on the host the service answers
  SERVFAIL, counted in the stats, and the command runs all the same.
  --allow/--deny decide each new flow by CIDR[:PORT[/tcp|udp]], by exact
  domain name (example.org: the addresses the sandbox's DNS answered for
  that name, CNAME chains included) or by wildcard (*.example.org: any name
  under it, at any depth, not example.org itself); --deny all makes the
  policy default-deny; denied TCP gets a RST and UDP an ICMP unreachable;
  --log-policy[-json] logs each decision, and a refusal under domain rules
  says what the address was resolved as, or that it never was.
  --publish [HOSTADDR:]HOSTPORT:SANDBOXPORT[/tcp|/udp] forwards a port of
  the uplink namespace into the sandbox; without HOSTADDR it listens on
  both families. The sandbox sees the client's own address, or the
  gateway's when it could not answer the client there (a loopback client).
  --pcap-log FILE captures eth0's frames both ways, --log-packets logs one
  decoded line per frame. --stats and --stats-file include the per-rule
  policy counters and the DNS counters.

sluice exits with the command's exit status (128+N if a signal N killed it)
and passes SIGINT, SIGTERM and SIGHUP on to it. Every namespace, veth and
socket goes when sluice exits, also when sluice itself is killed.

Stacks: --network sandbox puts gVisor's netstack (registered as netstack)
behind eth0; --network plugin --plugin NAME puts another registered stack
there instead, handed --plugin-config STRING as it is.
Registered stacks: %s.

AF_XDP: --xdp ns reads the stack's end of the veth with AF_XDP sockets (one
per --num-network-channels queue, copy mode on a veth) instead of packet
sockets; the veth then carries an XDP program, which the kernel allows up to
MTU 3506, the automatic --mtu in that mode, and turns TSO off on eth0, so
--gvisor-gro is on by default in that mode. --stats says which mode each
queue ran and the kernel's AF_XDP counters. --xdp redirect:IFACE and
--xdp tunnel:IFACE give the netstack a second NIC on IFACE (a NIC of the
uplink namespace) through AF_XDP, owning --uplink-addr CIDR (or, without it,
the NIC's own addresses, taken over), with default routes through the NIC's
gateways (or --uplink-gateway); the sandbox's flows are then re-originated
from the netstack over that NIC, not from host sockets. Redirect mode takes
only the frames for the netstack's addresses; tunnel mode takes all of the
NIC's traffic but SSH (port 22), which stays with the host. In both, TCP
--publish listens in the netstack on its addresses on IFACE.

Accepted and validated but not implemented yet (they fail before the command
starts): UDP --publish with --xdp redirect or tunnel, --buffer-pooling=false.

Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_NET_RAW), except --network host.
Once the sandbox is set up and before the command starts, sluice's own
process gives up every capability (keeping CAP_NET_RAW only when ping
sockets are not allowed in the uplink namespace, for ICMP echo), sets
no_new_privs and installs a seccomp filter; the command keeps what it was
given. --no-drop-privileges and --seccomp=false turn these off.`, strings.Join(sandbox.Stacks(), ", ")),
		Example: `  sluice run -- curl -sS http://example.com/
  sluice run --deny all --allow example.com --allow '*.example.org' -- curl -sS https://example.com/
  sluice run --publish 8080:80 -- python3 -m http.server 80
  sluice run --pcap-log eth0.pcap -- curl -sS http://example.com/
  sluice run --stats --dispatch mmap -- iperf3 -c 192.0.2.10
  sluice run --network none -- ip addr`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.cfg.Finish(cmd.Flags()); err != nil {
				return err
			}
			o.args = args
			return runRun(cmd.Context(), o)
		},
	}
	// Flags after the command belong to the command: `sluice run curl -v`
	// works without the "--".
	cmd.Flags().SetInterspersed(false)
	o.cfg.RegisterFlags(cmd.Flags())
	cmd.Flags().BoolVar(&o.privs.noDrop, "no-drop-privileges", false,
		"keep all of sluice's privileges while the command runs (for debugging); by default sluice gives up every capability the packet path does not need once the sandbox is set up")
	cmd.Flags().BoolVar(&o.privs.seccomp, "seccomp", true,
		"once set up, refuse system calls sluice's packet path never makes (execve, ptrace, mount, setns, module and eBPF program loading, ...) in sluice's own process")
	return cmd
}

// runRun runs the command in a sandbox and returns its exit status as an
// exitError (nil for 0).
func runRun(ctx context.Context, o *runOptions) error {
	log := slog.New(slog.NewTextHandler(o.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	fg := o.stdin != nil && isTerminal(o.stdin)
	var stdin io.Reader
	if o.stdin != nil {
		stdin = o.stdin
	}
	sb, err := sandbox.Start(ctx, sandbox.Options{
		Config: o.cfg,
		Args:   o.args,
		Stdin:  stdin,
		Stdout: o.stdout,
		Stderr: o.stderr,
		// The command gets a process group of its own, so a signal to
		// sluice's group reaches it once, through sluice; on a terminal
		// it becomes the foreground group, so ^C goes to it directly.
		NewProcessGroup: true,
		Foreground:      fg,
		Logger:          log,
		PacketLog:       o.stderr,
		PolicyLog:       o.stderr,
		Ready:           dropRunPrivileges(o.privs, o.cfg.StatsFile, o.stderr),
	})
	if err != nil {
		return err
	}
	defer sb.Close()

	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
wait:
	for {
		select {
		case s := <-sigs:
			if err := sb.Signal(s); err != nil && !errors.Is(err, os.ErrProcessDone) {
				fmt.Fprintf(o.stderr, "sluice: pass %v on to the command: %v\n", s, err)
			}
		case <-sb.Done():
			break wait
		}
	}
	code, werr := sb.Wait()
	if fg {
		reclaimTerminal(o.stdin)
	}
	stats := sb.Stats()
	sb.Close()
	pstats := sb.PolicyStats()
	dstats := sb.DNSStats()
	sstats := sb.StackServiceStats()
	if werr != nil {
		return werr
	}
	if o.cfg.Stats {
		if len(stats) == 0 {
			fmt.Fprintf(o.stderr, "sluice: no sandbox interfaces with --network %v\n", o.cfg.Network)
		} else if err := sandbox.WriteStatsText(o.stderr, stats); err != nil {
			return err
		}
		if err := sandbox.WritePolicyStatsText(o.stderr, pstats); err != nil {
			return err
		}
		if err := sandbox.WriteServiceStatsText(o.stderr, sb.StackName(), sstats); err != nil {
			return err
		}
		if err := sandbox.WriteDNSStatsText(o.stderr, dstats); err != nil {
			return err
		}
	}
	if o.cfg.StatsFile != "" {
		if err := sandbox.WriteReportFile(o.cfg.StatsFile, sandbox.Report{Interfaces: stats, Policy: pstats, DNS: dstats, Stack: sb.StackName(), StackServices: sstats, ExitStatus: code}); err != nil {
			return err
		}
	}
	if code != 0 {
		return exitError{code}
	}
	return nil
}

// newSandboxGuardCmd is the hidden guard of a sandbox (see
// sandbox.RunGuard): `sluice __sandbox-guard`.
func newSandboxGuardCmd() *cobra.Command {
	return &cobra.Command{
		Use:                sandbox.GuardCommand,
		Short:              "The sandbox's guard (internal)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(*cobra.Command, []string) error {
			return sandbox.RunGuard()
		},
	}
}

// newSandboxInitCmd is the hidden init of the sandbox's child (see
// sandbox.RunInit): `sluice __sandbox-init -- PATH ARGV0 [ARGS...]`.
func newSandboxInitCmd() *cobra.Command {
	return &cobra.Command{
		Use:                sandbox.InitCommand + " -- PATH ARGV0 [ARGS...]",
		Short:              "The sandbox child's init (internal)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 && args[0] == "--" {
				args = args[1:]
			}
			err := sandbox.RunInit(args)
			switch {
			case errors.Is(err, sandbox.ErrSetupFailed):
				// sluice says why; 125 as container runtimes use
				// for "the runtime failed, not the command".
				return exitError{125}
			case errors.Is(err, syscall.ENOENT):
				fmt.Fprintln(cmd.ErrOrStderr(), "sluice:", err)
				return exitError{127}
			case errors.Is(err, syscall.EACCES):
				fmt.Fprintln(cmd.ErrOrStderr(), "sluice:", err)
				return exitError{126}
			}
			return err
		},
	}
}
