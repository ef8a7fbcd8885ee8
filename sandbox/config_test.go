package sandbox

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"

	"github.com/sluicenet/sluice/dataplane"
)

// cmpPrefix compares netip values by their text.
var cmpNetip = cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })

// everyFlagSet is a Config with every field away from its default.
func everyFlagSet() Config {
	return Config{
		Network:                     NetworkPlugin,
		Plugin:                      "bridge",
		PluginConfig:                "a=b, c",
		Profile:                     ProfileLatency,
		Dispatch:                    dataplane.PacketMMap,
		NumNetworkChannels:          3,
		NetworkProcessorsPerChannel: 2,
		GSO:                         false,
		SoftwareGSO:                 false,
		GVisorGRO:                   true,
		TXChecksumOffload:           true,
		RXChecksumOffload:           false,
		QDisc:                       QDiscFIFO,
		BufferPooling:               false,
		PCAPLog:                     "/tmp/x y.pcap",
		LogPackets:                  true,
		XDP:                         XDPConfig{Mode: XDPRedirect, Interface: "eth1"},
		XDPNeedWakeup:               false,
		Subnet:                      netip.MustParsePrefix("192.168.77.0/25"),
		Subnet6:                     netip.Prefix{},
		MTU:                         9000,
		Stats:                       true,
		StatsFile:                   "/tmp/stats.json",
		FaultCorpus:                 "/tmp/fault corpus",
		AllowHostLoopback:           true,
		UplinkNetNS:                 "/proc/1/ns/net",
		Allow:                       []string{"10.0.0.0/8:443/tcp", "example.org"},
		Deny:                        []string{"all", "[fd00::/8]:53/udp"},
		LogPolicy:                   true,
		LogPolicyJSON:               true,
		DNS:                         false,
		DNSUpstream:                 "192.0.2.53:5353",
		Publish:                     []string{"8080:80", "127.0.0.1:5353:53/udp"},
		UplinkAddr:                  []string{"192.0.2.7/24", "2001:db8::7/64"},
		UplinkGateway:               []string{"192.0.2.1"},
	}
}

func TestConfigRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Config
	}{
		{"defaults", DefaultConfig()},
		{"every field changed", everyFlagSet()},
		{"throughput profile", func() Config { c := DefaultConfig(); c.Profile = ProfileThroughput; _ = c.ApplyProfile(nil); return c }()},
		{"xdp ns, ipv6 only", func() Config {
			c := DefaultConfig()
			c.XDP = XDPConfig{Mode: XDPNS}
			c.Subnet = netip.Prefix{}
			c.Subnet6 = netip.MustParsePrefix("fd12:3456::/64")
			return c
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.c.Validate(); err != nil {
				t.Fatalf("test config does not validate: %v", err)
			}
			flags := tc.c.ToFlags()
			got, err := ParseFlags(flags)
			if err != nil {
				t.Fatalf("ParseFlags(%q): %v", flags, err)
			}
			if diff := cmp.Diff(tc.c, got, cmpNetip); diff != "" {
				t.Errorf("round trip through %q (-want +got):\n%s", flags, diff)
			}
		})
	}
}

// TestEveryFieldHasAFlag makes sure a new Config field cannot be forgotten
// in RegisterFlags (and so in ToFlags): every field has a flag tag naming a
// registered flag, and every registered flag belongs to a field.
func TestEveryFieldHasAFlag(t *testing.T) {
	c := DefaultConfig()
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	c.RegisterFlags(fs)
	registered := map[string]bool{}
	fs.VisitAll(func(f *pflag.Flag) { registered[f.Name] = true })
	typ := reflect.TypeOf(c)
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, ok := f.Tag.Lookup("flag")
		if !ok {
			t.Errorf("Config.%s has no flag tag", f.Name)
			continue
		}
		if !registered[name] {
			t.Errorf("Config.%s: flag --%s is not registered", f.Name, name)
		}
		delete(registered, name)
	}
	for name := range registered {
		t.Errorf("flag --%s has no Config field", name)
	}
	// Every field must change what ToFlags says, or the round trip test
	// above would not notice a flag bound to the wrong field.
	def, all := DefaultConfig().ToFlags(), everyFlagSet().ToFlags()
	for i := range def {
		if def[i] == all[i] {
			t.Errorf("everyFlagSet leaves %s at its default", def[i])
		}
	}
}

func TestReferenceFlagNames(t *testing.T) {
	// The names the issue and the reference (runsc/config) use.
	want := []string{"network", "gso", "software-gso", "gvisor-gro", "tx-checksum-offload",
		"rx-checksum-offload", "qdisc", "num-network-channels", "pcap-log", "log-packets",
		"buffer-pooling", "xdp", "xdp-need-wakeup", "dispatch", "subnet", "subnet6", "mtu",
		"stats", "stats-file", "allow-host-loopback", "uplink-netns", "profile"}
	c := DefaultConfig()
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	c.RegisterFlags(fs)
	for _, n := range want {
		if fs.Lookup(n) == nil {
			t.Errorf("flag --%s is missing", n)
		}
	}
}

func TestParseFlagsErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want []string // substrings of the error
	}{
		{"unknown network", []string{"--network=bridge"}, []string{`"bridge"`, "--network"}},
		{"unknown dispatch", []string{"--dispatch", "io_uring"}, []string{`"io_uring"`, "--dispatch"}},
		{"unknown qdisc", []string{"--qdisc=tbf"}, []string{`"tbf"`, "--qdisc"}},
		{"unknown profile", []string{"--profile=fast"}, []string{`"fast"`, "--profile"}},
		{"unknown xdp mode", []string{"--xdp=zerocopy"}, []string{`"zerocopy"`, "--xdp"}},
		{"xdp redirect without interface", []string{"--xdp=redirect"}, []string{`"redirect"`, "needs an interface"}},
		{"xdp ns with interface", []string{"--xdp=ns:eth0"}, []string{`"ns:eth0"`, "takes no interface"}},
		{"xdp interface name too long", []string{"--xdp=tunnel:abcdefghijklmnopq"}, []string{"not a valid interface name"}},
		{"subnet not cidr", []string{"--subnet=10.0.2.1"}, []string{`"10.0.2.1"`, "--subnet"}},
		{"subnet host bits", []string{"--subnet=10.0.2.1/24"}, []string{"host bits", "10.0.2.0/24"}},
		{"subnet is ipv6", []string{"--subnet=fd00::/64"}, []string{"not an IPv4 subnet"}},
		{"subnet6 is ipv4", []string{"--subnet6=10.0.0.0/8"}, []string{"not an IPv6 subnet"}},
		{"subnet too small", []string{"--subnet=10.0.2.0/30"}, []string{"--subnet 10.0.2.0/30", "prefix length"}},
		{"subnet loopback", []string{"--subnet=127.0.0.0/8"}, []string{"--subnet 127.0.0.0/8", "loopback"}},
		{"subnet6 link-local", []string{"--subnet6=fe80::/64"}, []string{"--subnet6 fe80::/64", "link-local"}},
		{"subnet multicast", []string{"--subnet=224.0.0.0/8"}, []string{"--subnet", "multicast"}},
		{"both families off", []string{"--subnet=none", "--subnet6=none"}, []string{"--subnet and --subnet6"}},
		{"channels zero", []string{"--num-network-channels=0"}, []string{"--num-network-channels 0"}},
		{"channels too many", []string{"--num-network-channels=65"}, []string{"--num-network-channels 65"}},
		{"processors negative", []string{"--network-processors-per-channel=-1"}, []string{"--network-processors-per-channel -1"}},
		{"mtu too small", []string{"--mtu=100"}, []string{"--mtu 100"}},
		{"mtu too large", []string{"--mtu=70000"}, []string{"--mtu 70000"}},
		{"mtu below ipv6 minimum", []string{"--mtu=1000"}, []string{"--mtu 1000", "IPv6", "--subnet6 none"}},
		{"bad bool", []string{"--gso=maybe"}, []string{`"maybe"`, "--gso"}},
		{"positional argument", []string{"curl"}, []string{`"curl"`}},
		{"plugin network without plugin", []string{"--network=plugin"}, []string{"--network plugin needs --plugin NAME", "registered: ", NetstackName}},
		{"plugin without plugin network", []string{"--plugin=bridge"}, []string{"--plugin bridge needs --network plugin", "--network sandbox"}},
		{"plugin config without plugin network", []string{"--network=none", "--plugin-config=x"}, []string{"--plugin-config needs --network plugin"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseFlags(tc.args)
			if err == nil {
				t.Fatalf("ParseFlags(%q) succeeded, want an error", tc.args)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("ParseFlags(%q) error %q does not contain %q", tc.args, err, w)
				}
			}
		})
	}
}

func TestParseFlagsAccepts(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want func(*Config)
	}{
		{"mtu 1000 without ipv6", []string{"--mtu=1000", "--subnet6=none"}, func(c *Config) { c.MTU = 1000; c.Subnet6 = netip.Prefix{} }},
		{"ipv4 off", []string{"--subnet=none"}, func(c *Config) { c.Subnet = netip.Prefix{} }},
		{"xdp tunnel", []string{"--xdp=tunnel:ens3"}, func(c *Config) { c.XDP = XDPConfig{Mode: XDPTunnel, Interface: "ens3"} }},
		{"dispatch alias", []string{"--dispatch=packet-mmap"}, func(c *Config) { c.Dispatch = dataplane.PacketMMap }},
		{"small subnet", []string{"--subnet=10.9.0.0/29"}, func(c *Config) { c.Subnet = netip.MustParsePrefix("10.9.0.0/29") }},
		{"plugin", []string{"--network=plugin", "--plugin=bridge", "--plugin-config=k=v"}, func(c *Config) {
			c.Network, c.Plugin, c.PluginConfig = NetworkPlugin, "bridge", "k=v"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseFlags(tc.args)
			if err != nil {
				t.Fatalf("ParseFlags(%q): %v", tc.args, err)
			}
			want := DefaultConfig()
			tc.want(&want)
			if diff := cmp.Diff(want, got, cmpNetip); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestProfileExplicitFlagsWin(t *testing.T) {
	c, err := ParseFlags([]string{"--profile=latency", "--num-network-channels=4"})
	if err != nil {
		t.Fatal(err)
	}
	// recvmmsg, not the V3 ring whose 1 ms block timeout every lone
	// request would wait for.
	if c.Dispatch != dataplane.RecvMMsg {
		t.Errorf("latency profile: Dispatch = %v, want recvmmsg", c.Dispatch)
	}
	if c.NumNetworkChannels != 4 {
		t.Errorf("explicit --num-network-channels=4 lost to the profile: got %d", c.NumNetworkChannels)
	}
	c, err = ParseFlags([]string{"--profile=latency", "--dispatch=readv"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Dispatch != dataplane.Readv {
		t.Errorf("explicit --dispatch=readv lost to the profile: got %v", c.Dispatch)
	}
	// An explicit value equal to the default still wins over the profile.
	if DefaultConfig().TXChecksumOffload {
		t.Fatal("test assumes --tx-checksum-offload defaults to false")
	}
	c, err = ParseFlags([]string{"--profile=throughput", "--tx-checksum-offload=false"})
	if err != nil {
		t.Fatal(err)
	}
	if c.TXChecksumOffload {
		t.Error("explicit --tx-checksum-offload=false lost to the throughput profile")
	}
	// Every profile names only real flags with valid values.
	for p := range profiles {
		c := DefaultConfig()
		c.Profile = p
		if err := c.ApplyProfile(nil); err != nil {
			t.Errorf("profile %v: %v", p, err)
		}
		if err := c.Validate(); err != nil {
			t.Errorf("profile %v does not validate: %v", p, err)
		}
	}
}

func TestCheckImplemented(t *testing.T) {
	if err := DefaultConfig().CheckImplemented(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tc := range []struct {
		name string
		set  func(*Config)
		flag string
	}{
		{"buffer pooling off", func(c *Config) { c.BufferPooling = false }, "--buffer-pooling=false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.set(&c)
			err := c.CheckImplemented()
			if !errors.Is(err, ErrNotImplemented) || !strings.Contains(err.Error(), tc.flag) {
				t.Errorf("CheckImplemented() = %v, want ErrNotImplemented naming %s", err, tc.flag)
			}
		})
	}
}

func TestAddressingOf(t *testing.T) {
	for _, tc := range []struct {
		subnet, gw, sb string
	}{
		{"10.0.2.0/24", "10.0.2.2", "10.0.2.100"},
		{"10.9.0.0/29", "10.9.0.2", "10.9.0.3"},
		{"10.9.0.0/25", "10.9.0.2", "10.9.0.100"},
		{"10.9.0.128/25", "10.9.0.130", "10.9.0.228"},
		{"172.16.0.0/12", "172.16.0.2", "172.16.0.100"},
		{"fd00:51ce::/64", "fd00:51ce::2", "fd00:51ce::100"},
		{"fd00:1::ff00/120", "fd00:1::ff02", "fd00:1::ff03"},
	} {
		a := AddressingOf(netip.MustParsePrefix(tc.subnet))
		if a.Gateway.String() != tc.gw || a.Sandbox.String() != tc.sb {
			t.Errorf("AddressingOf(%s) = gateway %v, sandbox %v; want %s, %s", tc.subnet, a.Gateway, a.Sandbox, tc.gw, tc.sb)
		}
		p := netip.MustParsePrefix(tc.subnet)
		if !p.Contains(a.Gateway) || !p.Contains(a.Sandbox) {
			t.Errorf("AddressingOf(%s): addresses outside the subnet", tc.subnet)
		}
	}
	if a := AddressingOf(netip.Prefix{}); a.Gateway.IsValid() {
		t.Errorf("AddressingOf(none) = %+v, want zero", a)
	}
}

func FuzzParseFlags(f *testing.F) {
	for _, s := range [][]string{
		DefaultConfig().ToFlags(), everyFlagSet().ToFlags(),
		{"--subnet=192.0.2.0/24", "--xdp=redirect:eth0"}, {"--mtu=1280", "--subnet6=2001:db8::/64"},
	} {
		f.Add(strings.Join(s, "\x00"))
	}
	f.Fuzz(func(t *testing.T, joined string) {
		args := strings.Split(joined, "\x00")
		c, err := ParseFlags(args)
		if err != nil {
			return
		}
		// Whatever parses must validate and survive a round trip.
		if err := c.Validate(); err != nil {
			t.Fatalf("ParseFlags(%q) returned a Config that does not validate: %v", args, err)
		}
		again, err := ParseFlags(c.ToFlags())
		if err != nil {
			t.Fatalf("ParseFlags(ToFlags()) of %q: %v", args, err)
		}
		if diff := cmp.Diff(c, again, cmpNetip); diff != "" {
			t.Fatalf("round trip of %q (-want +got):\n%s", args, diff)
		}
	})
}
