package sandbox

import (
	"net/netip"
	"strings"
	"testing"
)

// nicFacts is a fakeFacts that also describes one NIC.
type nicFacts struct {
	fakeFacts
	nic NICFacts
}

func (f *nicFacts) NIC(_, name string) (NICFacts, error) {
	if name != f.nic.Name {
		return NICFacts{}, errNoSuchNIC(name)
	}
	return f.nic, nil
}

type errNoSuchNIC string

func (e errNoSuchNIC) Error() string { return "no interface " + string(e) }

func planFor(t *testing.T, src FactSource, flags ...string) (Args, error) {
	t.Helper()
	c, err := ParseFlags(flags)
	if err != nil {
		t.Fatal(err)
	}
	f, err := GatherFacts(src, c)
	if err != nil {
		return Args{}, err
	}
	return Plan(c, f)
}

func TestPlanXDPNS(t *testing.T) {
	a, err := planFor(t, &fakeFacts{routes: thisMachine}, "--xdp=ns", "--num-network-channels=2", "--gvisor-gro")
	if err != nil {
		t.Fatal(err)
	}
	if len(a.FDBasedLinks) != 0 || len(a.XDPLinks) != 1 {
		t.Fatalf("%d fd-based and %d XDP links, want 0 and 1", len(a.FDBasedLinks), len(a.XDPLinks))
	}
	x := a.XDPLinks[0]
	if x.Mode != XDPNS || x.Name != StackLinkName || x.Interface != StackLinkName {
		t.Errorf("XDP link %+v: want ns mode on %s", x, StackLinkName)
	}
	if x.MTU != XDPVethMaxMTU || a.Sandbox.MTU != XDPVethMaxMTU || x.FrameSize != 4096 {
		t.Errorf("MTU %d (eth0 %d), frame %d: want %d, %d, 4096", x.MTU, a.Sandbox.MTU, x.FrameSize, XDPVethMaxMTU, XDPVethMaxMTU)
	}
	if x.NumQueues != 2 || !x.GRO || !x.RXChecksumOffload || !x.NeedWakeup || x.GSOMaxSize != GSOMaxSize {
		t.Errorf("XDP link %+v: want 2 queues, GRO, RX checksum trust, need_wakeup and GSO", x)
	}
	if len(x.Addresses) != 2 || !x.Promiscuous || !x.Spoofing {
		t.Errorf("XDP link %+v: want the gateway addresses, promiscuous and spoofing", x)
	}
	sl, ok := a.StackLink()
	if !ok || sl.Name != StackLinkName || sl.Queues != 2 || sl.MTU != XDPVethMaxMTU {
		t.Errorf("StackLink() = %+v, %v", sl, ok)
	}

	a, err = planFor(t, &fakeFacts{routes: thisMachine}, "--xdp=ns", "--mtu=1500")
	if err != nil {
		t.Fatal(err)
	}
	if x := a.XDPLinks[0]; x.MTU != 1500 || x.FrameSize != 2048 || !x.GRO {
		t.Errorf("--mtu 1500: MTU %d frame %d GRO %v, want 1500 in 2048-byte frames, GRO on by default", x.MTU, x.FrameSize, x.GRO)
	}
	a, err = planFor(t, &fakeFacts{routes: thisMachine}, "--xdp=ns", "--gvisor-gro=false")
	if err != nil {
		t.Fatal(err)
	}
	if x := a.XDPLinks[0]; x.GRO {
		t.Errorf("--gvisor-gro=false: GRO on")
	}
}

func TestPlanXDPUplink(t *testing.T) {
	nic := NICFacts{Name: "hv", MTU: 1500,
		Addrs:    []netip.Prefix{netip.MustParsePrefix("192.0.2.2/24"), netip.MustParsePrefix("2001:db8::2/64"), netip.MustParsePrefix("192.0.2.3/24")},
		Gateway4: netip.MustParseAddr("192.0.2.1"), Gateway6: netip.MustParseAddr("2001:db8::1")}
	src := &nicFacts{fakeFacts{routes: thisMachine}, nic}

	// Taken over: one address per family, the NIC's gateways.
	a, err := planFor(t, src, "--xdp=tunnel:hv")
	if err != nil {
		t.Fatal(err)
	}
	if len(a.FDBasedLinks) != 1 || len(a.XDPLinks) != 1 {
		t.Fatalf("%d fd-based and %d XDP links, want 1 and 1", len(a.FDBasedLinks), len(a.XDPLinks))
	}
	x := a.XDPLinks[0]
	if x.Mode != XDPTunnel || x.Interface != "hv" || x.Name != UplinkLinkName || x.MTU != 1500 {
		t.Errorf("XDP link %+v", x)
	}
	if got := joinPrefixes(x.Addresses); got != "192.0.2.2/24, 2001:db8::2/64" {
		t.Errorf("addresses %s, want the NIC's first of each family", got)
	}
	if !strings.Contains(x.AddressSource, "taken over from hv") {
		t.Errorf("address source %q", x.AddressSource)
	}
	if a.Defaultv4Gateway.Route.Gateway != nic.Gateway4 || a.Defaultv6Gateway.Route.Gateway != nic.Gateway6 || a.Defaultv4Gateway.Name != UplinkLinkName {
		t.Errorf("default routes %+v %+v", a.Defaultv4Gateway, a.Defaultv6Gateway)
	}

	// Given: --uplink-addr and --uplink-gateway win.
	a, err = planFor(t, src, "--xdp=redirect:hv", "--uplink-addr=192.0.2.7/24", "--uplink-gateway=192.0.2.254")
	if err != nil {
		t.Fatal(err)
	}
	x = a.XDPLinks[0]
	if got := joinPrefixes(x.Addresses); got != "192.0.2.7/24" || x.AddressSource != "--uplink-addr" {
		t.Errorf("addresses %s from %q", got, x.AddressSource)
	}
	if a.Defaultv4Gateway.Route.Gateway != netip.MustParseAddr("192.0.2.254") || !a.Defaultv6Gateway.Empty() {
		t.Errorf("default routes %+v %+v: want 192.0.2.254 and no IPv6 one (no IPv6 address)", a.Defaultv4Gateway, a.Defaultv6Gateway)
	}

	for _, tc := range []struct {
		name  string
		flags []string
		want  string
	}{
		{"no such NIC", []string{"--xdp=redirect:nic9", "--uplink-addr=192.0.2.7/24"}, "no interface nic9"},
		{"gateway off the subnet", []string{"--xdp=redirect:hv", "--uplink-addr=198.51.100.7/24"}, "not on the netstack's subnet"},
		{"gateway for a family without an address", []string{"--xdp=redirect:hv", "--uplink-addr=192.0.2.7/24", "--uplink-gateway=2001:db8::1"}, "no IPv6 address"},
		{"NIC MTU too large", nil, "MTU 9000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := src
			flags := tc.flags
			if flags == nil {
				big := nic
				big.MTU = 9000
				s = &nicFacts{fakeFacts{routes: thisMachine}, big}
				flags = []string{"--xdp=tunnel:hv"}
			}
			_, err := planFor(t, s, flags...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one with %q", err, tc.want)
			}
		})
	}
}
