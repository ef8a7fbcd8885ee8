package bpf

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/sluicenet/sluice/internal/testenv"
)

// arpFor is an Ethernet/IPv4 ARP request (op 1) or reply (op 2) whose
// target protocol address is target.
func arpFor(op uint16, target netip.Addr) []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint16(b[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(b[2:], 0x0800) // IPv4
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], op)
	spa := netip.MustParseAddr("192.0.2.9").As4()
	copy(b[14:], spa[:])
	tpa := target.As4()
	copy(b[24:], tpa[:])
	return ethFrame(0x0806, b)
}

// ndFor is an ICMPv6 neighbour solicitation (135) or advertisement (136)
// about target, sent to dst.
func ndFor(typ uint8, dst, target netip.Addr) []byte {
	icmp := make([]byte, 24)
	icmp[0] = typ
	t := target.As16()
	copy(icmp[8:], t[:])
	return ipv6Frame(58, dst, nil, icmp)
}

func TestRedirectNeighRun(t *testing.T) {
	testenv.RequireRoot(t)
	stack4 := netip.MustParseAddr("192.0.2.50")
	stack6 := netip.MustParseAddr("2001:db8::50")
	host4 := netip.MustParseAddr("192.0.2.2")
	host6 := netip.MustParseAddr("2001:db8::2")
	o, err := loadRedirectNeigh(LoadOptions{RedirectAddrs: []netip.Addr{stack4, stack6}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	// A socket in the XSKMAP for queue 0 (where test runs arrive), so that
	// what goes to the stack is redirected rather than falling back to
	// XDP_PASS; test runs are not live, so only the verdict is checked.
	v := testenv.NewVeth(t)
	testenv.Do(t, v.NSB, func() error {
		l, err := lookupLink(v.B, "")
		if err != nil {
			return err
		}
		xsk := newTestXSK(t, l.Attrs().Index, 0)
		return o.XSKs.Put(uint32(0), uint32(xsk.fd))
	})
	solicited := netip.MustParseAddr("ff02::1:ff00:50")
	for _, tc := range []struct {
		name    string
		frame   []byte
		toStack bool
	}{
		{"ipv4 tcp to the stack", ipv4Frame(6, stack4, 0, tcpHdr(80)), true},
		{"ipv4 tcp to the host", ipv4Frame(6, host4, 0, tcpHdr(22)), false},
		{"ipv6 udp to the stack", ipv6Frame(17, stack6, nil, udpHdr(53, 4)), true},
		{"ipv6 udp to the host", ipv6Frame(17, host6, nil, udpHdr(53, 4)), false},
		{"arp request for the stack", arpFor(1, stack4), true},
		{"arp reply to the stack", arpFor(2, stack4), true},
		{"arp request for the host", arpFor(1, host4), false},
		{"truncated arp", arpFrame()[:20], false},
		{"ns for the stack to its solicited-node group", ndFor(135, solicited, stack6), true},
		{"na about the stack to all nodes", ndFor(136, netip.MustParseAddr("ff02::1"), stack6), true},
		{"ns for the host", ndFor(135, netip.MustParseAddr("ff02::1:ff00:2"), host6), false},
		{"router advertisement", ndFor(134, netip.MustParseAddr("ff02::1"), stack6), false},
		{"truncated ns", ndFor(135, solicited, stack6)[:14+40+10], false},
		{"unknown ethertype", ethFrame(0x88b5, make([]byte, 46)), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := mustCounters(t, o.Stats)
			act := mustRun(t, o.Program, tc.frame)
			if want := map[bool]uint32{true: xdpRedirect, false: xdpPass}[tc.toStack]; act != want {
				t.Errorf("action %d, want %d", act, want)
			}
			after := mustCounters(t, o.Stats)
			redirected := after.Redirected.Packets - before.Redirected.Packets
			passed := after.Passed.Packets - before.Passed.Packets
			if tc.toStack && (redirected != 1 || passed != 0) {
				t.Errorf("redirected %d, passed %d: want it redirected to the stack", redirected, passed)
			}
			if !tc.toStack && (redirected != 0 || passed != 1) {
				t.Errorf("redirected %d, passed %d: want it passed to the host", redirected, passed)
			}
		})
	}
	if name := kernelNames[Redirect]; name != "xdp_redirect" {
		t.Errorf("kernel name of redirect %q: the neighbour-aware program must share it", name)
	}
	if info, err := o.Program.Info(); err != nil || info.Name != "xdp_redirect" {
		t.Errorf("program name %q (%v), want xdp_redirect", info.Name, err)
	}
}
