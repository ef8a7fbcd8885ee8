package sandbox

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"github.com/sluicenet/sluice/dataplane"
)

// Default addressing, as slirp4netns's: the sandbox is 10.0.2.100 behind
// the gateway 10.0.2.2. The IPv6 subnet is a unique local /64 (RFC 4193)
// of sluice's own rather than slirp's fd00::/64, which hosts use on their
// own links often enough to make the default collide (this machine's eth0
// has it).
var (
	DefaultSubnet  = netip.MustParsePrefix("10.0.2.0/24")
	DefaultSubnet6 = netip.MustParsePrefix("fd00:51ce::/64")
)

// DefaultMTU is eth0's MTU when --mtu is 0 (auto): 65520, as pasta and
// slirp4netns use. Measured on this project's 2-vCPU VM (iperf3 -t 3 from
// the sandbox to a namespace through sluice, host GSO on, medians of 3 runs
// under a noisy shared load): 1500 gave 2.70 Gbit/s up, 3.05 down, 3.19 up
// with 4 flows; 9000 gave 2.79, 3.38, 3.35; 65520 gave 4.13, 4.05, 4.19.
// A large MTU makes the sandbox's TCP send and acknowledge 64 KiB segments
// even where GSO does not reach, and the netstack then handles a few large
// segments instead of many small ones. 65520 rather than the veth's 65535
// leaves room for headers in a 64 KiB buffer, as the others chose.
const DefaultMTU = 65520

// Host offsets of the gateway and the sandbox in their subnet, as slirp's
// .2 and .100 (IPv4) and ::2 and ::100 (IPv6).
const (
	gatewayOffset  = 2
	sandboxOffset4 = 100
	sandboxOffset6 = 0x100
)

// ErrNotImplemented wraps the error for a setting that is accepted and
// validated but whose implementation belongs to a later piece of work. The
// caller should drop the flag; retrying does not help.
var ErrNotImplemented = errors.New("not implemented yet")

// Config is the network configuration of a sandbox. Each field carries the
// name of its flag, which is the reference's (runsc/config) where it has
// one. The zero value is not useful: start from DefaultConfig.
type Config struct {
	// Network is the kind of network the command gets.
	Network NetworkType `flag:"network"`
	// Plugin is the registered stack of --network plugin (see Stack).
	Plugin string `flag:"plugin"`
	// PluginConfig is handed to the plugin stack as it is, for it to
	// parse.
	PluginConfig string `flag:"plugin-config"`
	// Profile is the bundle of settings applied to flags not given
	// explicitly.
	Profile Profile `flag:"profile"`
	// Dispatch is the inbound dispatch mode of the stack-side link.
	Dispatch dataplane.Mode `flag:"dispatch"`
	// NumNetworkChannels is the number of packet sockets (channels) on the
	// stack-side veth, joined in one PACKET_FANOUT hash group.
	NumNetworkChannels int `flag:"num-network-channels"`
	// NetworkProcessorsPerChannel is the number of goroutines per channel
	// that deliver packets to the stack; 0 divides GOMAXPROCS among the
	// channels, as the reference does.
	NetworkProcessorsPerChannel int `flag:"network-processors-per-channel"`
	// GSO enables host segmentation offload: the sockets carry a
	// virtio_net_hdr and the kernel segments (and coalesces) large TCP
	// segments.
	GSO bool `flag:"gso"`
	// SoftwareGSO enables the endpoint's own segmentation when host GSO is
	// off.
	SoftwareGSO bool `flag:"software-gso"`
	// GVisorGRO enables generic receive offload before the stack.
	GVisorGRO bool `flag:"gvisor-gro"`
	// TXChecksumOffload leaves outbound checksums to the kernel.
	TXChecksumOffload bool `flag:"tx-checksum-offload"`
	// RXChecksumOffload skips verifying inbound checksums (the frames come
	// from a veth, which never corrupts them).
	RXChecksumOffload bool `flag:"rx-checksum-offload"`
	// QDisc is the queueing discipline in front of the link's writes.
	QDisc QDisc `flag:"qdisc"`
	// BufferPooling reads frames into pooled buffers instead of fresh heap
	// allocations.
	BufferPooling bool `flag:"buffer-pooling"`
	// PCAPLog is a file to write every frame of the link to, in pcap
	// format; empty means none.
	PCAPLog string `flag:"pcap-log"`
	// LogPackets logs every frame of the link.
	LogPackets bool `flag:"log-packets"`
	// XDP selects AF_XDP and XDP instead of AF_PACKET.
	XDP XDPConfig `flag:"xdp"`
	// XDPNeedWakeup binds AF_XDP sockets with XDP_USE_NEED_WAKEUP.
	XDPNeedWakeup bool `flag:"xdp-need-wakeup"`
	// Subnet is the sandbox's IPv4 subnet: the gateway is its .2 and the
	// sandbox its .100. The zero Prefix switches IPv4 off.
	Subnet netip.Prefix `flag:"subnet"`
	// Subnet6 is the sandbox's IPv6 subnet: gateway ::2, sandbox ::100. The
	// zero Prefix switches IPv6 off.
	Subnet6 netip.Prefix `flag:"subnet6"`
	// MTU is eth0's MTU in bytes (and the stack-side link's); 0 picks
	// DefaultMTU.
	MTU int `flag:"mtu"`
	// Stats prints the interface counters to stderr when the command ends.
	Stats bool `flag:"stats"`
	// StatsFile writes the interface counters as JSON to this file when the
	// command ends; empty means none.
	StatsFile string `flag:"stats-file"`
	// FaultCorpus is a directory where the frame behind each contained
	// fault (a panic while the stack-side link turned a frame into a
	// packet or the stack handled it: the frame is dropped, counted in
	// the faults column and logged) is written as a Go fuzz corpus entry
	// of fdbased's FuzzEndpointFrame, to replay it. Empty, the default,
	// writes none: the frames are the sandbox's bytes, which are not put
	// on disk unasked.
	FaultCorpus string `flag:"fault-corpus"`
	// AllowHostLoopback lets connections to the gateway address reach the
	// uplink namespace's loopback (gateway:port -> 127.0.0.1:port); without
	// it they are refused.
	AllowHostLoopback bool `flag:"allow-host-loopback"`
	// UplinkNetNS is the network namespace (name under /var/run/netns or
	// path) in which the host sockets of the uplink are opened; empty means
	// sluice's own.
	UplinkNetNS string `flag:"uplink-netns"`
	// UplinkAddr are the netstack's addresses (CIDR, at most one per
	// family) on the host NIC of --xdp redirect:IFACE or tunnel:IFACE;
	// empty takes over the NIC's own.
	UplinkAddr []string `flag:"uplink-addr"`
	// UplinkGateway are the next hops (at most one per family) of the
	// netstack's default routes on that NIC; empty takes the uplink
	// namespace's default gateways through it.
	UplinkGateway []string `flag:"uplink-gateway"`
	// Allow and Deny are the egress policy's rules (see Policy and
	// ParseRule); `--deny all` makes the policy default-deny.
	Allow []string `flag:"allow"`
	Deny  []string `flag:"deny"`
	// LogPolicy logs every policy decision to stderr, one line each.
	LogPolicy bool `flag:"log-policy"`
	// LogPolicyJSON writes the decisions as JSON lines instead.
	LogPolicyJSON bool `flag:"log-policy-json"`
	// DNS serves DNS on the gateway addresses (port 53, UDP and TCP) by
	// forwarding to DNSUpstream, and points the command's resolv.conf at
	// it; domain rules of the policy need it. On by default with
	// --network sandbox, as the design has it: the command's resolver is
	// then always the gateway, whose answers the policy can see. Without
	// an upstream the service answers SERVFAIL rather than failing the
	// run.
	DNS bool `flag:"dns"`
	// DNSUpstream is the resolver the DNS service forwards to
	// (ADDR[:PORT]); empty means the first nameserver of the host's
	// /etc/resolv.conf. Setting it implies DNS.
	DNSUpstream string `flag:"dns-upstream"`
	// Publish are the host ports forwarded into the sandbox, each
	// [HOSTADDR:]HOSTPORT:SANDBOXPORT[/tcp|/udp] (see ParsePublish).
	Publish []string `flag:"publish"`
}

// DefaultConfig returns the settings used when no flag is given. The
// defaults follow the reference where it has one, except:
//   - Dispatch is recvmmsg, the reference's: the FIELD-NOTES measured the
//     three AF_PACKET modes within noise of each other for TCP, and
//     recvmmsg needs no ring memory.
//   - QDisc is none: the FIELD-NOTES saw the reference's FIFO tail-drop
//     frames at a full 1000-frame queue and collapse TCP into
//     retransmission timeouts; without it the socket's send buffer pushes
//     back on the stack instead.
func DefaultConfig() Config {
	return Config{
		Network:            NetworkSandbox,
		Profile:            ProfileDefault,
		Dispatch:           dataplane.RecvMMsg,
		NumNetworkChannels: 1,
		GSO:                true,
		SoftwareGSO:        true,
		RXChecksumOffload:  true,
		QDisc:              QDiscNone,
		BufferPooling:      true,
		XDPNeedWakeup:      true,
		DNS:                true,
		Subnet:             DefaultSubnet,
		Subnet6:            DefaultSubnet6,
	}
}

// RegisterFlags binds every field of c to a flag on fs, with c's current
// values as the defaults. After fs is parsed, call Finish.
func (c *Config) RegisterFlags(fs *pflag.FlagSet) {
	fs.Var(&c.Network, "network", "network of the command: sandbox (own namespace, all traffic through the user-space stack), host (sluice's namespace, no isolation), none (loopback only), plugin (own namespace behind the stack --plugin names)")
	fs.StringVar(&c.Plugin, "plugin", c.Plugin, "stack behind the sandbox's eth0 with --network plugin; registered: "+strings.Join(Stacks(), ", "))
	fs.StringVar(&c.PluginConfig, "plugin-config", c.PluginConfig, "configuration string handed to the --plugin stack as it is")
	fs.Var(&c.Profile, "profile", "bundle of settings for flags not given explicitly: default, throughput, latency")
	fs.Var(&c.Dispatch, "dispatch", "inbound dispatch of the stack-side link: readv, recvmmsg or mmap (PACKET_RX_RING)")
	fs.IntVar(&c.NumNetworkChannels, "num-network-channels", c.NumNetworkChannels, "number of packet sockets (channels) on the stack-side link, in one PACKET_FANOUT hash group")
	fs.IntVar(&c.NetworkProcessorsPerChannel, "network-processors-per-channel", c.NetworkProcessorsPerChannel, "goroutines per channel delivering packets to the stack; 0 divides GOMAXPROCS among the channels")
	fs.BoolVar(&c.GSO, "gso", c.GSO, "host segmentation offload: large TCP segments cross the veth whole (PACKET_VNET_HDR)")
	fs.BoolVar(&c.SoftwareGSO, "software-gso", c.SoftwareGSO, "the endpoint segments large TCP segments itself when host GSO is off")
	fs.BoolVar(&c.GVisorGRO, "gvisor-gro", c.GVisorGRO, "generic receive offload before the stack")
	fs.BoolVar(&c.TXChecksumOffload, "tx-checksum-offload", c.TXChecksumOffload, "leave outbound checksums to the kernel")
	fs.BoolVar(&c.RXChecksumOffload, "rx-checksum-offload", c.RXChecksumOffload, "trust inbound checksums (the frames come from a veth)")
	fs.Var(&c.QDisc, "qdisc", "queueing discipline in front of the stack-side link's writes: none or fifo")
	fs.BoolVar(&c.BufferPooling, "buffer-pooling", c.BufferPooling, "read frames into pooled buffers (the netstack's; =false is not implemented yet and fails at run)")
	fs.StringVar(&c.PCAPLog, "pcap-log", c.PCAPLog, "write every frame of the sandbox's eth0, both directions, to this pcap file (Ethernet link type; tcpdump -r reads it)")
	fs.BoolVar(&c.LogPackets, "log-packets", c.LogPackets, "log one decoded line per frame of the sandbox's eth0 to stderr")
	fs.Var(&c.XDP, "xdp", "XDP mode: off; ns (AF_XDP instead of packet sockets on the stack's veth, MTU at most 3506); redirect:IFACE or tunnel:IFACE (the netstack gets its own NIC on IFACE of the uplink namespace through AF_XDP and re-originates the sandbox's flows over it)")
	fs.BoolVar(&c.XDPNeedWakeup, "xdp-need-wakeup", c.XDPNeedWakeup, "bind AF_XDP sockets with XDP_USE_NEED_WAKEUP")
	fs.Var(prefixValue{&c.Subnet, 4}, "subnet", "IPv4 subnet of the sandbox (gateway .2, sandbox .100), or none")
	fs.Var(prefixValue{&c.Subnet6, 6}, "subnet6", "IPv6 subnet of the sandbox (gateway ::2, sandbox ::100), or none")
	fs.IntVar(&c.MTU, "mtu", c.MTU, fmt.Sprintf("MTU of eth0 in bytes; 0 picks the default (%d)", DefaultMTU))
	fs.BoolVar(&c.Stats, "stats", c.Stats, "print interface counters (rx/tx packets, bytes, errors, dropped) to stderr when the command ends")
	fs.StringVar(&c.StatsFile, "stats-file", c.StatsFile, "write interface counters as JSON to this file when the command ends")
	fs.StringVar(&c.FaultCorpus, "fault-corpus", c.FaultCorpus, "write each frame whose handling panicked (the fault is contained: the frame is dropped, counted and logged) into this directory as a Go fuzz corpus entry of fdbased's FuzzEndpointFrame; default: none written")
	fs.BoolVar(&c.AllowHostLoopback, "allow-host-loopback", c.AllowHostLoopback, "let connections to the gateway address reach the uplink namespace's loopback (gateway:port -> 127.0.0.1:port)")
	fs.Var(ruleList{&c.Allow}, "allow", "allow new flows to CIDR[:PORT[/tcp|udp]] ([CIDR6]:PORT for IPv6 with a port), NAME[:PORT[/tcp|udp]] (the addresses the sandbox's DNS answered for exactly that name, CNAME chains included) or *.NAME[:PORT[/tcp|udp]] (for any name under NAME, not NAME itself) (repeatable; comma-separated values are split)")
	fs.Var(ruleList{&c.Deny}, "deny", "deny new flows to CIDR, NAME or *.NAME[:PORT[/tcp|udp]] as --allow (TCP gets a RST, UDP an ICMP unreachable); all makes every flow not allowed denied (repeatable)")
	fs.BoolVar(&c.LogPolicy, "log-policy", c.LogPolicy, "log every egress policy decision to stderr, one line each")
	fs.BoolVar(&c.LogPolicyJSON, "log-policy-json", c.LogPolicyJSON, "log the policy decisions as JSON lines (implies --log-policy)")
	fs.BoolVar(&c.DNS, "dns", c.DNS, "serve DNS on the gateway (UDP and TCP port 53, forwarded to the first nameserver of the host's /etc/resolv.conf or --dns-upstream) and bind-mount a resolv.conf naming it over the command's /etc/resolv.conf; with no usable nameserver it answers SERVFAIL (counted in the stats) and the command still runs; on by default with --network sandbox (--dns=false turns it off); a plugin stack gets it only with --dns-upstream")
	fs.StringVar(&c.DNSUpstream, "dns-upstream", c.DNSUpstream, "resolver the sandbox's DNS forwards to, ADDR[:PORT] (implies --dns)")
	fs.Var(ruleList{&c.Publish}, "publish", "forward a host port into the sandbox: [HOSTADDR:]HOSTPORT:SANDBOXPORT[/tcp|/udp], listening in the uplink namespace, on both families without HOSTADDR; the sandbox sees the client's address (the gateway's for a loopback client) (repeatable)")
	fs.StringVar(&c.UplinkNetNS, "uplink-netns", c.UplinkNetNS, "open the uplink's host sockets in this network namespace (name or path) instead of sluice's own")
	fs.Var(ruleList{&c.UplinkAddr}, "uplink-addr", "with --xdp redirect:IFACE or tunnel:IFACE, the netstack's address on IFACE, CIDR (repeatable, one per family); default: take over IFACE's addresses")
	fs.Var(ruleList{&c.UplinkGateway}, "uplink-gateway", "with --xdp redirect:IFACE or tunnel:IFACE, the next hop of the netstack's default route on IFACE (repeatable, one per family); default: the uplink namespace's default gateways through IFACE")
}

// profiles are the bundles of `--profile`, as flag name -> value. They are
// applied through the flags themselves, so a bundle can only say what a user
// could say on the command line.
var profiles = map[Profile]map[string]string{
	ProfileDefault: {},
	// Bulk transfers: the large MTU and host GSO both ways (see
	// DefaultMTU), no checksum computed or verified by the netstack (the
	// frames never leave the machine: outbound ones cross the veth as
	// CHECKSUM_PARTIAL skbs, which the sandbox's kernel accepts without
	// computing, and inbound ones come from a kernel that built them), no
	// queue in front of the writes. The channel count stays 1: 2 channels
	// measured within noise of 1 on 2 vCPUs.
	ProfileThroughput: {
		"mtu":                 "65520",
		"gso":                 "true",
		"software-gso":        "true",
		"tx-checksum-offload": "true",
		"rx-checksum-offload": "true",
		"qdisc":               "none",
	},
	// Round trips: recvmmsg, not the PACKET_RX_RING. sluice's ring is
	// TPACKET_V3, whose blocks reach the reader only when full or after the
	// 1 ms retire timeout, so a lone request waits 1 ms (`sluice bench
	// sandbox` measured rr_us 1000 for mmap against 190 for recvmmsg; see
	// dataplane/dispatch_mmap_linux.go). One channel and frames delivered
	// on the reader goroutine (no hand-off to a processor).
	ProfileLatency: {
		"dispatch":                       "recvmmsg",
		"num-network-channels":           "1",
		"network-processors-per-channel": "1",
		"qdisc":                          "none",
	},
}

// ProfileSettings returns the settings of profile p as flag name -> value.
func ProfileSettings(p Profile) map[string]string {
	out := map[string]string{}
	for k, v := range profiles[p] {
		out[k] = v
	}
	return out
}

// ApplyProfile sets the settings of c.Profile on every flag for which
// explicit(name) is false.
func (c *Config) ApplyProfile(explicit func(name string) bool) error {
	bundle, ok := profiles[c.Profile]
	if !ok {
		return fmt.Errorf("--profile %v: unknown profile", c.Profile)
	}
	fs := pflag.NewFlagSet("profile", pflag.ContinueOnError)
	c.RegisterFlags(fs)
	for name, val := range bundle {
		if explicit != nil && explicit(name) {
			continue
		}
		f := fs.Lookup(name)
		if f == nil {
			return fmt.Errorf("profile %v sets unknown flag --%s", c.Profile, name)
		}
		if err := f.Value.Set(val); err != nil {
			return fmt.Errorf("profile %v: --%s=%s: %w", c.Profile, name, val, err)
		}
	}
	return nil
}

// Finish completes a Config bound to fs with RegisterFlags after fs has been
// parsed: it applies the profile to the flags not given explicitly and
// validates the result.
func (c *Config) Finish(fs *pflag.FlagSet) error {
	if err := c.ApplyProfile(fs.Changed); err != nil {
		return err
	}
	c.applyXDPDefaults(fs.Changed)
	return c.Validate()
}

// ParseFlags returns the Config that args (flags only) describe, starting
// from DefaultConfig: the inverse of ToFlags.
func ParseFlags(args []string) (Config, error) {
	c := DefaultConfig()
	fs := pflag.NewFlagSet("sandbox", pflag.ContinueOnError)
	fs.SetOutput(discard{})
	c.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q: only flags", fs.Arg(0))
	}
	if err := c.Finish(fs); err != nil {
		return Config{}, err
	}
	return c, nil
}

// ToFlags returns c as command-line flags, one `--name=value` per field in
// declaration order, such that ParseFlags(c.ToFlags()) gives c back. Every
// field is spelled out, so the result does not depend on the defaults or
// profile of the sluice that reads it.
func (c Config) ToFlags() []string {
	fs := pflag.NewFlagSet("toflags", pflag.ContinueOnError)
	c.RegisterFlags(fs)
	var out []string
	fs.VisitAll(func(f *pflag.Flag) {
		out = append(out, "--"+f.Name+"="+f.Value.String())
	})
	return out
}

// discard is an io.Writer that drops pflag's own error printing; errors are
// returned instead.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// Validate checks every field on its own and against the others, with
// messages that name the flag to change. It looks at nothing outside c; the
// checks against the host are Plan's.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if c.Network < NetworkSandbox || c.Network > NetworkPlugin {
		bad("--network %v: unknown", c.Network)
	}
	switch {
	case c.Network == NetworkPlugin && c.Plugin == "":
		bad("--network plugin needs --plugin NAME (registered: %s)", strings.Join(Stacks(), ", "))
	case c.Network != NetworkPlugin && c.Plugin != "":
		bad("--plugin %s needs --network plugin (with --network %v it would not be used)", c.Plugin, c.Network)
	case c.Network != NetworkPlugin && c.PluginConfig != "":
		bad("--plugin-config needs --network plugin and --plugin (with --network %v there is no plugin to hand it to)", c.Network)
	}
	if _, ok := profiles[c.Profile]; !ok {
		bad("--profile %v: unknown", c.Profile)
	}
	switch c.Dispatch {
	case dataplane.Readv, dataplane.RecvMMsg, dataplane.PacketMMap:
	default:
		bad("--dispatch %v: unknown (want readv, recvmmsg or mmap)", c.Dispatch)
	}
	if c.NumNetworkChannels < 1 || c.NumNetworkChannels > 64 {
		bad("--num-network-channels %d: must be between 1 and 64", c.NumNetworkChannels)
	}
	if c.NetworkProcessorsPerChannel < 0 || c.NetworkProcessorsPerChannel > 256 {
		bad("--network-processors-per-channel %d: must be between 0 (automatic) and 256", c.NetworkProcessorsPerChannel)
	}
	if c.QDisc != QDiscNone && c.QDisc != QDiscFIFO {
		bad("--qdisc %v: unknown (want none or fifo)", c.QDisc)
	}
	if c.XDP.Mode < XDPOff || c.XDP.Mode > XDPTunnel {
		bad("--xdp %v: unknown mode", c.XDP)
	}
	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535) {
		// 576 is the smallest datagram every IPv4 host must accept
		// (RFC 791); 65535 is the veth's largest MTU (ETH_MAX_MTU).
		bad("--mtu %d: must be 0 (automatic) or between 576 and 65535", c.MTU)
	} else if c.Subnet6.IsValid() && c.MTU != 0 && c.MTU < 1280 {
		bad("--mtu %d: IPv6 needs at least 1280 (RFC 8200); raise --mtu or switch IPv6 off with --subnet6 none", c.MTU)
	}
	if !c.Subnet.IsValid() && !c.Subnet6.IsValid() {
		bad("--subnet and --subnet6 are both none: the sandbox needs at least one address family")
	}
	if c.Subnet.IsValid() {
		if err := checkSubnet(c.Subnet, 4); err != nil {
			bad("--subnet %v: %w", c.Subnet, err)
		}
	}
	if c.Subnet6.IsValid() {
		if err := checkSubnet(c.Subnet6, 6); err != nil {
			bad("--subnet6 %v: %w", c.Subnet6, err)
		}
	}
	if c.StatsFile != "" && filepath.Base(c.StatsFile) == "." {
		bad("--stats-file %q: not a file name", c.StatsFile)
	}
	if c.FaultCorpus != "" && filepath.Base(c.FaultCorpus) == "." && c.FaultCorpus != "." {
		bad("--fault-corpus %q: not a directory name", c.FaultCorpus)
	}
	if c.PCAPLog != "" && filepath.Base(c.PCAPLog) == "." {
		bad("--pcap-log %q: not a file name", c.PCAPLog)
	}
	for _, set := range []struct {
		allow bool
		name  string
		vals  []string
	}{{true, "--allow", c.Allow}, {false, "--deny", c.Deny}} {
		for _, v := range set.vals {
			r, err := ParseRule(set.allow, v)
			if err != nil {
				bad("%s %w", set.name, err)
			} else if r.All && r.Allow {
				bad("%s all: allowing everything is the default; drop it (or give --deny rules)", set.name)
			}
		}
	}
	for _, v := range c.Publish {
		if _, err := ParsePublish(v); err != nil {
			bad("--publish %w", err)
		}
	}
	if c.DNSUpstream != "" {
		if _, err := ParseDNSUpstream(c.DNSUpstream); err != nil {
			bad("--dns-upstream %w", err)
		}
	}
	errs = append(errs, c.validateXDPFlags()...)
	return errors.Join(errs...)
}

// StackName is the registered name of the stack behind eth0: NetstackName
// for --network sandbox, --plugin for --network plugin, empty otherwise.
func (c Config) StackName() string {
	switch c.Network {
	case NetworkSandbox:
		return NetstackName
	case NetworkPlugin:
		return c.Plugin
	}
	return ""
}

// DNSOn reports whether the sandbox serves DNS.
func (c Config) DNSOn() bool { return c.DNS || c.DNSUpstream != "" }

// CheckImplemented reports the settings that are accepted and validated but
// not implemented yet, naming the flag. Start calls it before creating
// anything.
func (c Config) CheckImplemented() error {
	var errs []error
	for _, set := range []struct {
		allow bool
		vals  []string
	}{{true, c.Allow}, {false, c.Deny}} {
		for _, v := range set.vals {
			if r, err := ParseRule(set.allow, v); err == nil && r.Domain != "" && !c.DNSOn() {
				errs = append(errs, fmt.Errorf("%v: %w: drop --dns=false", r, ErrNeedsDNS))
			}
		}
	}
	if !c.BufferPooling {
		errs = append(errs, fmt.Errorf("--buffer-pooling=false: the fdbased endpoint always reads into the netstack's pooled views and has no switch for heap buffers yet: %w", ErrNotImplemented))
	}
	return errors.Join(errs...)
}

// checkSubnet checks that p can hold a gateway and a sandbox address and is
// not a special-purpose range that would break routing.
func checkSubnet(p netip.Prefix, family int) error {
	a := p.Addr()
	switch {
	case a.IsLoopback():
		return errors.New("a loopback subnet cannot be routed to a sandbox")
	case a.IsMulticast():
		return errors.New("a multicast subnet has no hosts")
	case a.IsLinkLocalUnicast():
		return errors.New("link-local addresses are not routable past the gateway")
	case a.IsUnspecified() && p.Bits() == 0:
		return errors.New("the whole address space would hide every destination behind the gateway")
	}
	maxBits := 29 // room for network, .2 and the broadcast address
	minBits := 8
	if family == 6 {
		maxBits, minBits = 120, 16
	}
	if p.Bits() < minBits || p.Bits() > maxBits {
		return fmt.Errorf("prefix length /%d: must be between /%d and /%d", p.Bits(), minBits, maxBits)
	}
	return nil
}

// Addressing is where the gateway and the sandbox sit in a subnet.
type Addressing struct {
	Subnet  netip.Prefix
	Gateway netip.Addr // the netstack's address: subnet + 2
	Sandbox netip.Addr // eth0's address: subnet + 100 (IPv4) or + 0x100 (IPv6), or + 3 in a small subnet
}

// AddressingOf returns the gateway and sandbox addresses of subnet p, which
// must have passed Validate. The zero Addressing means p is off.
func AddressingOf(p netip.Prefix) Addressing {
	if !p.IsValid() {
		return Addressing{}
	}
	off := sandboxOffset4
	if p.Addr().Is6() {
		off = sandboxOffset6
	}
	hostBits := p.Addr().BitLen() - p.Bits()
	// The sandbox's offset must stay below the last address (the IPv4
	// broadcast); in subnets too small for it, the sandbox takes .3.
	if hostBits < 63 && uint64(off) >= (uint64(1)<<hostBits)-1 {
		off = gatewayOffset + 1
	}
	return Addressing{Subnet: p, Gateway: addOffset(p.Addr(), gatewayOffset), Sandbox: addOffset(p.Addr(), off)}
}

func addOffset(a netip.Addr, off int) netip.Addr {
	b := a.As16()
	carry := off
	for i := 15; i >= 0 && carry > 0; i-- {
		s := int(b[i]) + carry
		b[i] = byte(s)
		carry = s >> 8
	}
	r := netip.AddrFrom16(b)
	if a.Is4() {
		r = r.Unmap()
	}
	return r
}

// EffectiveMTU is the MTU the sandbox uses: c.MTU, or the automatic choice.
func (c Config) EffectiveMTU() int {
	if c.MTU != 0 {
		return c.MTU
	}
	return autoMTU(c)
}

// autoMTU is the MTU chosen when --mtu is 0. It is a function of the
// Config because not every link takes a large MTU: with --xdp ns the veth
// carries an XDP program, which the kernel allows up to XDPVethMaxMTU, the
// largest that works and so the fastest (fewer, larger segments).
func autoMTU(c Config) int {
	if c.XDP.Mode == XDPNS {
		return XDPVethMaxMTU
	}
	return DefaultMTU
}
