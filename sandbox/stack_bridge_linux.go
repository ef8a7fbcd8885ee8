package sandbox

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/netns"
	"github.com/sluicenet/sluice/sandbox/bridge"
)

// BridgeName is the registered name of the bridge stack:
// --network plugin --plugin bridge.
const BridgeName = "bridge"

func init() {
	if err := RegisterStack(BridgeName, func() (Stack, error) { return &bridgeStack{}, nil }); err != nil {
		panic(err)
	}
}

// bridgeStack is the sandbox's bridge stack: the sandbox's frames are
// forwarded unterminated by package bridge between the stack side of eth0's
// veth and a veth into the uplink namespace, whose kernel is the sandbox's
// router (gateway addresses, forwarding, masquerade). TCP stays end to end
// and GSO super-frames cross whole; the egress policy decides each flow at
// its first frame, and --pcap-log and --log-packets record the frames.
type bridgeStack struct {
	env    *StackEnv
	cfg    bridgeConfig
	router *bridge.Router
	fds    []int // the packet sockets: cfg.channels on side A, then on side B
	br     *bridge.Bridge
	// gateways are the router's addresses: flows to them reach the uplink
	// namespace's own sockets, which only --allow-host-loopback allows.
	gateways []netip.Addr
	closed   bool
}

// bridgeConfig is the --plugin-config of the bridge stack: comma-separated
// key=value pairs.
//
//	dispatch=readv|recvmmsg|mmap  how both sides read (default: --dispatch)
//	channels=N                    packet sockets per side, 1..64 (default:
//	                              --num-network-channels)
type bridgeConfig struct {
	dispatch dataplane.Mode
	channels int
}

func (c bridgeConfig) String() string {
	return fmt.Sprintf("dispatch=%v,channels=%d", c.dispatch, c.channels)
}

// parseBridgeConfig parses s over the defaults in c.
func parseBridgeConfig(s string, c bridgeConfig) (bridgeConfig, error) {
	for _, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return c, fmt.Errorf("--plugin-config %q: %q is not key=value (keys: dispatch, channels)", s, kv)
		}
		switch k {
		case "dispatch":
			m, err := dataplane.ParseMode(v)
			if err != nil {
				return c, fmt.Errorf("--plugin-config %q: dispatch=%s: want readv, recvmmsg or mmap", s, v)
			}
			c.dispatch = m
		case "channels":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 64 {
				return c, fmt.Errorf("--plugin-config %q: channels=%s: want 1 to 64", s, v)
			}
			c.channels = n
		default:
			return c, fmt.Errorf("--plugin-config %q: unknown key %q (keys: dispatch, channels)", s, k)
		}
	}
	return c, nil
}

// bridgeSocketBuf is SO_RCVBUF and SO_SNDBUF of the bridge's packet
// sockets: a burst of 64 KiB super-frames (a TCP window's worth) must fit
// while the reader is descheduled, as for the netstack's link
// (socketBufBytes).
const bridgeSocketBuf = socketBufBytes

// PreInit checks the configuration, creates the sandbox link, the kernel
// side in the uplink namespace (bridge.SetupRouter) and the packet sockets
// on both devices of the stack namespace, which it hands to Init.
func (b *bridgeStack) PreInit(env *StackEnv) (string, []int, error) {
	b.env = env
	a := env.Args
	if len(a.XDPLinks) > 0 {
		return "", nil, errors.New("--xdp: the bridge stack reads the sandbox's veth and its uplink with packet sockets; drop --xdp, or use --network sandbox")
	}
	if len(a.FDBasedLinks) != 1 {
		return "", nil, fmt.Errorf("the plan has %d fd-based links; the bridge wires exactly one", len(a.FDBasedLinks))
	}
	link := a.FDBasedLinks[0]
	cfg, err := parseBridgeConfig(env.PluginConfig, bridgeConfig{dispatch: link.Dispatch, channels: max(1, link.NumChannels)})
	if err != nil {
		return "", nil, err
	}
	b.cfg = cfg
	if len(env.Publish) > 0 {
		return "", nil, errors.New("--publish: the bridge stack does not forward host ports into the sandbox; use --network sandbox")
	}
	if env.DNSService {
		return "", nil, errors.New("--dns-upstream: the bridge stack's gateway is the uplink namespace's kernel, which serves no DNS; drop --dns-upstream (the command then uses the resolv.conf it has) or use --network sandbox")
	}
	for _, p := range link.Addresses {
		b.gateways = append(b.gateways, p.Addr())
	}
	if _, err := env.SetUpSandboxLink(); err != nil {
		return "", nil, err
	}
	uplinkNS, uplinkName := env.UplinkNS, a.Uplink.NetNS
	if uplinkNS < 0 {
		fd, err := unix.Open("/proc/self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", nil, fmt.Errorf("open sluice's own namespace: %w", err)
		}
		defer unix.Close(fd)
		uplinkNS = fd
	}
	b.router, err = bridge.SetupRouter(bridge.RouterOptions{
		UplinkNS: uplinkNS, StackNS: env.StackNS, UplinkName: uplinkName,
		MTU: link.MTU, Gateways: link.Addresses, Logger: env.Logger,
	})
	if err != nil {
		return "", nil, err
	}
	var fds []int
	for _, dev := range []string{link.Name, b.router.StackDev} {
		var side []int
		err := netns.DoFD(env.StackNS, func() (err error) {
			side, err = dataplane.OpenPacketSockets(dataplane.SocketOptions{
				Interface: dev, VnetHdr: true,
				RcvBufBytes: bridgeSocketBuf, SndBufBytes: bridgeSocketBuf,
			}, cfg.channels)
			return err
		})
		if err != nil {
			closeFDs(fds)
			return "", nil, fmt.Errorf("packet sockets on %s: %w", dev, err)
		}
		fds = append(fds, side...)
	}
	return cfg.String(), fds, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// Init makes the bridge over the sockets PreInit opened.
func (b *bridgeStack) Init(initStr string, fds []int) error {
	b.fds = fds
	cfg, err := parseBridgeConfig(initStr, bridgeConfig{})
	if err != nil {
		return fmt.Errorf("init string: %w", err)
	}
	if len(fds) != 2*cfg.channels {
		return fmt.Errorf("init: %d descriptors for %d channels on each of two sides", len(fds), cfg.channels)
	}
	link := b.env.Args.FDBasedLinks[0]
	opts := bridge.Options{
		A:      bridge.Side{FDs: fds[:cfg.channels], Name: link.Name},
		B:      bridge.Side{FDs: fds[cfg.channels:], Name: bridge.StackDevName},
		Mode:   cfg.dispatch,
		Decide: b.decide,
		// The sandbox sends from its subnets only: anything else would
		// leave the uplink unmasqueraded.
		Sources: b.env.Args.Uplink.Subnets,
		Logger:  b.env.Logger,
	}
	if tap := b.env.Tap; tap != nil {
		opts.Hook = tapHook(tap)
	}
	b.br, err = bridge.New(opts)
	return err
}

// decide applies the egress policy to a new flow: TCP and UDP flows by
// address and port, others (ICMP echo, any other IP protocol) by address,
// which only rules without a port or protocol match. TCP and UDP flows to
// the gateway reach the uplink namespace's own sockets, which only
// --allow-host-loopback allows (as it lets the netstack's reach its
// loopback); a ping to the gateway is answered, as by the netstack.
func (b *bridgeStack) decide(f bridge.Flow) bool {
	if (f.Proto == bridge.TCP || f.Proto == bridge.UDP) && !b.hostAllowed() {
		for _, g := range b.gateways {
			if f.Dst.Addr() == g {
				return false
			}
		}
	}
	return b.env.Decide(Flow{Proto: f.Proto.String(), Src: f.Src, Dst: f.Dst}).Allow
}

func (b *bridgeStack) hostAllowed() bool { return len(b.env.Args.NAT) > 0 }

// tapHook records every frame leaving the bridge: the sandbox's frames as
// FromSandbox, the rest (and the bridge's answers) as ToSandbox.
func tapHook(tap FrameTap) func(bridge.Direction, *bridge.Frame) bridge.Verdict {
	pool := sync.Pool{New: func() any { b := make([]byte, 0, 1<<16+1<<10); return &b }}
	return func(dir bridge.Direction, f *bridge.Frame) bridge.Verdict {
		bp := pool.Get().(*[]byte)
		*bp = f.AppendTo((*bp)[:0])
		d := FromSandbox
		if dir == bridge.Ingress {
			d = ToSandbox
		}
		tap.Record(d, *bp)
		pool.Put(bp)
		return bridge.Pass
	}
}

// CreateLinksAndRoutes starts forwarding: the addresses and routes are the
// kernel's, set up in PreInit.
func (b *bridgeStack) CreateLinksAndRoutes() error {
	if b.br == nil {
		return errors.New("the bridge was not initialised")
	}
	b.br.Start()
	return nil
}

// Stats returns the sandbox link's counters (side A: rx is what the
// sandbox sent) and the uplink link's (side B: rx is what came back).
func (b *bridgeStack) Stats() []LinkStats {
	if b.br == nil {
		return nil
	}
	s := b.br.Stats()
	ma, mb := b.br.Modes()
	names := func(ms []dataplane.Mode) []string {
		var out []string
		for _, m := range ms {
			out = append(out, m.String())
		}
		return out
	}
	return []LinkStats{
		{Name: b.env.Args.FDBasedLinks[0].Name, Stats: s.A, Modes: names(ma)},
		{Name: bridge.StackDevName, Stats: s.B, Modes: names(mb)},
	}
}

// ServiceStats returns the bridge's own counters.
func (b *bridgeStack) ServiceStats() map[string]uint64 {
	if b.br == nil {
		return nil
	}
	s := b.br.Stats()
	return map[string]uint64{
		"bridge_out_frames":     s.Egress.Frames,
		"bridge_out_bytes":      s.Egress.Bytes,
		"bridge_out_gso_frames": s.Egress.GSOFrames,
		"bridge_out_dropped":    s.Egress.Dropped,
		"bridge_out_refused":    s.Egress.Refused,
		"bridge_out_answers":    s.Egress.Answers,
		"bridge_in_frames":      s.Ingress.Frames,
		"bridge_in_bytes":       s.Ingress.Bytes,
		"bridge_in_gso_frames":  s.Ingress.GSOFrames,
		"bridge_in_dropped":     s.Ingress.Dropped,
		"bridge_flows_allowed":  s.FlowsAllowed,
		"bridge_flows_denied":   s.FlowsDenied,
		"bridge_flows_active":   uint64(s.FlowsActive),
		"bridge_flows_evicted":  s.FlowsEvicted,
	}
}

// Close stops the bridge, closes its sockets and removes the kernel side.
func (b *bridgeStack) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	var errs []error
	if b.br != nil {
		errs = append(errs, b.br.Close())
		b.br.Wait()
	}
	closeFDs(b.fds)
	b.fds = nil
	if b.router != nil {
		errs = append(errs, b.router.Close())
	}
	return errors.Join(errs...)
}
