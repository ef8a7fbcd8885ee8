package sandbox

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sluicenet/sluice/dataplane"
)

// fakeFacts is a FactSource with canned answers; it records the namespace
// it was asked about.
type fakeFacts struct {
	routes    []HostRoute
	routesErr error
	missing   []string
	ring      bool
	askedNS   []string
}

func (f *fakeFacts) Routes(ns string) ([]HostRoute, error) {
	f.askedNS = append(f.askedNS, ns)
	return f.routes, f.routesErr
}

func (f *fakeFacts) MissingCaps(caps []string) ([]string, error) {
	var out []string
	for _, c := range caps {
		for _, m := range f.missing {
			if c == m {
				out = append(out, c)
			}
		}
	}
	return out, nil
}

func (f *fakeFacts) PacketRing() bool { return f.ring }

func route(s, dev string) HostRoute { return HostRoute{Dst: netip.MustParsePrefix(s), Dev: dev} }

// thisMachine is the routing table of the VM this was written on: its eth0
// sits in 192.0.2.0/24 and fd00::/64.
var thisMachine = []HostRoute{
	route("192.0.2.0/24", "eth0"), route("fd00::/64", "eth0"), route("fe80::/64", "eth0"),
}

func TestPlanDefaults(t *testing.T) {
	f := &fakeFacts{routes: thisMachine}
	c := DefaultConfig()
	facts, err := GatherFacts(f, c)
	if err != nil {
		t.Fatal(err)
	}
	a, err := Plan(c, facts)
	if err != nil {
		t.Fatalf("Plan: %v", err)
	}
	p := netip.MustParsePrefix
	addr := netip.MustParseAddr
	want := Args{
		Network: NetworkSandbox,
		LoopbackLinks: []LoopbackLink{{
			Name:      "lo",
			Addresses: []netip.Prefix{p("127.0.0.1/8"), p("::1/128")},
			Routes:    []Route{{Destination: p("127.0.0.0/8")}, {Destination: p("::1/128")}},
		}},
		FDBasedLinks: []FDBasedLink{{
			Name:              "sluice0",
			MTU:               DefaultMTU,
			Addresses:         []netip.Prefix{p("10.0.2.2/24"), p("fd00:51ce::2/64")},
			Routes:            []Route{{Destination: p("10.0.2.0/24")}, {Destination: p("fd00:51ce::/64")}},
			LinkAddress:       GatewayMAC,
			NumChannels:       1,
			Dispatch:          dataplane.RecvMMsg,
			GSOMaxSize:        GSOMaxSize,
			RXChecksumOffload: true,
			Promiscuous:       true,
			Spoofing:          true,
		}},
		Sandbox: SandboxLink{
			Name:      "eth0",
			MTU:       DefaultMTU,
			Addresses: []netip.Prefix{p("10.0.2.100/24"), p("fd00:51ce::100/64")},
			Gateway4:  addr("10.0.2.2"),
			Gateway6:  addr("fd00:51ce::2"),
		},
		Uplink: Uplink{
			Gateways: []netip.Addr{addr("10.0.2.2"), addr("fd00:51ce::2")},
			Subnets:  []netip.Prefix{p("10.0.2.0/24"), p("fd00:51ce::/64")},
		},
	}
	opts := cmp.Options{cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })}
	if diff := cmp.Diff(want, a, opts); diff != "" {
		t.Errorf("Plan(defaults) (-want +got):\n%s", diff)
	}
	if len(f.askedNS) != 1 || f.askedNS[0] != "" {
		t.Errorf("routes read from namespaces %q, want only the host's", f.askedNS)
	}
}

func TestPlanSettings(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags []string
		check func(t *testing.T, a Args)
	}{
		{"host loopback NAT", []string{"--allow-host-loopback"}, func(t *testing.T, a Args) {
			want := []NATRule{
				{Dst: netip.MustParseAddr("10.0.2.2"), To: netip.MustParseAddr("127.0.0.1")},
				{Dst: netip.MustParseAddr("fd00:51ce::2"), To: netip.MustParseAddr("::1")},
			}
			if diff := cmp.Diff(want, a.NAT, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("NAT (-want +got):\n%s", diff)
			}
		}},
		{"no NAT by default", nil, func(t *testing.T, a Args) {
			if len(a.NAT) != 0 {
				t.Errorf("NAT = %v, want none: the gateway must not reach the host's loopback", a.NAT)
			}
		}},
		{"software gso", []string{"--gso=false"}, func(t *testing.T, a Args) {
			l := a.FDBasedLinks[0]
			if l.GSOMaxSize != GSOMaxSize || !l.SoftwareGSOEnabled {
				t.Errorf("GSOMaxSize %d, SoftwareGSOEnabled %v; want %d, true", l.GSOMaxSize, l.SoftwareGSOEnabled, GSOMaxSize)
			}
		}},
		{"no gso at all", []string{"--gso=false", "--software-gso=false"}, func(t *testing.T, a Args) {
			if l := a.FDBasedLinks[0]; l.GSOMaxSize != 0 {
				t.Errorf("GSOMaxSize %d, want 0", l.GSOMaxSize)
			}
		}},
		{"host gso wins", []string{"--gso", "--software-gso"}, func(t *testing.T, a Args) {
			if l := a.FDBasedLinks[0]; l.SoftwareGSOEnabled {
				t.Error("software GSO chosen over host GSO")
			}
		}},
		{"ipv6 only", []string{"--subnet=none"}, func(t *testing.T, a Args) {
			if a.Sandbox.Gateway4.IsValid() || len(a.Sandbox.Addresses) != 1 || !a.Sandbox.Addresses[0].Addr().Is6() {
				t.Errorf("sandbox link %+v, want IPv6 only", a.Sandbox)
			}
		}},
		{"channels, mtu, dispatch", []string{"--num-network-channels=2", "--mtu=9000", "--dispatch=readv", "--qdisc=fifo"}, func(t *testing.T, a Args) {
			l := a.FDBasedLinks[0]
			if l.NumChannels != 2 || l.MTU != 9000 || a.Sandbox.MTU != 9000 || l.Dispatch != dataplane.Readv || l.QDisc != QDiscFIFO {
				t.Errorf("link %+v, sandbox MTU %d", l, a.Sandbox.MTU)
			}
		}},
		{"uplink namespace", []string{"--uplink-netns=srv"}, func(t *testing.T, a Args) {
			if a.Uplink.NetNS != "srv" {
				t.Errorf("Uplink.NetNS = %q", a.Uplink.NetNS)
			}
		}},
		{"network host", []string{"--network=host"}, func(t *testing.T, a Args) {
			if len(a.FDBasedLinks)+len(a.LoopbackLinks) != 0 {
				t.Errorf("--network host plans links: %+v", a)
			}
		}},
		{"network none", []string{"--network=none"}, func(t *testing.T, a Args) {
			if len(a.FDBasedLinks) != 0 || a.Sandbox.Name != "" {
				t.Errorf("--network none plans links: %+v", a)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseFlags(tc.flags)
			if err != nil {
				t.Fatal(err)
			}
			facts, err := GatherFacts(&fakeFacts{routes: thisMachine, ring: true}, c)
			if err != nil {
				t.Fatal(err)
			}
			a, err := Plan(c, facts)
			if err != nil {
				t.Fatalf("Plan: %v", err)
			}
			tc.check(t, a)
		})
	}
}

func TestPlanRefuses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags []string
		facts fakeFacts
		want  []string
	}{
		{"subnet inside a host route", []string{"--subnet=192.0.2.0/25"}, fakeFacts{routes: thisMachine},
			[]string{"--subnet 192.0.2.0/25", "192.0.2.0/24", "eth0", "pick a free subnet with --subnet"}},
		{"subnet covering a host route", []string{"--subnet=10.0.0.0/8"}, fakeFacts{routes: []HostRoute{route("10.1.2.0/24", "br0")}},
			[]string{"--subnet 10.0.0.0/8", "10.1.2.0/24", "br0"}},
		{"slirp's fd00::/64 on this machine", []string{"--subnet6=fd00::/64"}, fakeFacts{routes: thisMachine},
			[]string{"--subnet6 fd00::/64", "fd00::/64", "eth0"}},
		{"overlap in the uplink namespace", []string{"--uplink-netns=srv"}, fakeFacts{routes: []HostRoute{route("10.0.2.0/24", "lo")}},
			[]string{"--subnet 10.0.2.0/24", "uplink namespace srv"}},
		{"mmap without rings", []string{"--dispatch=mmap"}, fakeFacts{ring: false},
			[]string{"--dispatch mmap", "--dispatch recvmmsg"}},
		{"no privilege", nil, fakeFacts{missing: []string{"CAP_NET_RAW", "CAP_SYS_ADMIN"}},
			[]string{"--network sandbox", "CAP_SYS_ADMIN", "CAP_NET_RAW", "root", "--network host"}},
		{"no privilege for none", []string{"--network=none"}, fakeFacts{missing: []string{"CAP_SYS_ADMIN"}},
			[]string{"--network none", "CAP_SYS_ADMIN"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseFlags(tc.flags)
			if err != nil {
				t.Fatal(err)
			}
			facts, err := GatherFacts(&tc.facts, c)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Plan(c, facts)
			if err == nil {
				t.Fatal("Plan succeeded, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	// A default route overlaps everything and must not count.
	c := DefaultConfig()
	facts, _ := GatherFacts(&fakeFacts{routes: []HostRoute{route("0.0.0.0/0", "eth0"), route("::/0", "eth0")}}, c)
	if _, err := Plan(c, facts); err != nil {
		t.Errorf("default routes refused the default subnets: %v", err)
	}
	// --network host needs no privilege.
	c.Network = NetworkHost
	facts, _ = GatherFacts(&fakeFacts{missing: []string{"CAP_NET_RAW", "CAP_SYS_ADMIN", "CAP_NET_ADMIN"}}, c)
	if _, err := Plan(c, facts); err != nil {
		t.Errorf("--network host without privilege: %v", err)
	}
}

func TestGatherFactsErrors(t *testing.T) {
	c := DefaultConfig()
	c.UplinkNetNS = "gone"
	_, err := GatherFacts(&fakeFacts{routesErr: errors.New("no such file")}, c)
	if err == nil || !strings.Contains(err.Error(), "--uplink-netns gone") {
		t.Errorf("GatherFacts = %v, want an error naming --uplink-netns", err)
	}
}
