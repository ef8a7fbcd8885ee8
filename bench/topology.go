package bench

import (
	"net"
	"net/netip"
)

// Addresses of the topology, all in 192.0.2.0/24 (TEST-NET-1, RFC 5737)
// and 2001:db8::/32 (documentation, RFC 3849), which are never routed
// anywhere else.
var (
	stackAddr   = netip.MustParseAddr("192.0.2.1") // the netstack's, on side A
	kernelAddr  = netip.MustParseAddr("192.0.2.2") // the kernel peer's, on vb
	prefixLen   = 24
	stackAddr6  = netip.MustParseAddr("2001:db8::1")
	kernelAddr6 = netip.MustParseAddr("2001:db8::2")
	prefixLen6  = 64
	// Locally administered unicast MACs (bit 1 of the first octet set), so
	// frames are recognisable in a capture and never clash with a vendor's.
	macA = net.HardwareAddr{0x02, 0x53, 0x4c, 0x00, 0x00, 0x0a}
	macB = net.HardwareAddr{0x02, 0x53, 0x4c, 0x00, 0x00, 0x0b}
)

const (
	ifA     = "va"
	ifB     = "vb"
	vethMTU = 1500
	// nsPrefix starts every namespace name the benchmark creates; the rest
	// is "<pid>-<seq>-a|b", which lets a later run remove what a killed
	// one left behind.
	nsPrefix = "slb"
)
