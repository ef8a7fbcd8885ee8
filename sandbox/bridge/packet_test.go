package bridge

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/sluicenet/sluice/internal/csum"
)

// Addresses from the documentation ranges.
var (
	macSandbox = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x64}
	macRouter  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	ip4Sandbox = net.IP{192, 0, 2, 100}
	ip4Peer    = net.IP{198, 51, 100, 7}
	ip6Sandbox = net.ParseIP("2001:db8::100")
	ip6Peer    = net.ParseIP("2001:db8:1::7")
)

func serialize(t *testing.T, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// frame builds an Ethernet frame from the sandbox to the peer carrying l4
// (a *layers.TCP or *layers.UDP) over IPv4 or IPv6.
func frame(t *testing.T, v6 bool, l4 gopacket.SerializableLayer, payload []byte) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: macSandbox, DstMAC: macRouter, EthernetType: layers.EthernetTypeIPv4}
	var ip gopacket.SerializableLayer
	var nl gopacket.NetworkLayer
	proto := layers.IPProtocolTCP
	if _, ok := l4.(*layers.UDP); ok {
		proto = layers.IPProtocolUDP
	}
	if v6 {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: ip6Sandbox, DstIP: ip6Peer}
		ip, nl = ip6, ip6
	} else {
		ip4 := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: ip4Sandbox, DstIP: ip4Peer}
		ip, nl = ip4, ip4
	}
	switch l := l4.(type) {
	case *layers.TCP:
		_ = l.SetNetworkLayerForChecksum(nl)
	case *layers.UDP:
		_ = l.SetNetworkLayerForChecksum(nl)
	}
	return serialize(t, eth, ip, l4, gopacket.Payload(payload))
}

func addrs(v6 bool) (sandbox, peer netip.Addr) {
	if v6 {
		return netip.MustParseAddr(ip6Sandbox.String()), netip.MustParseAddr(ip6Peer.String())
	}
	return netip.MustParseAddr(ip4Sandbox.String()), netip.MustParseAddr(ip4Peer.String())
}

func TestParsePacketFlows(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		sb, peer := addrs(v6)
		syn := frame(t, v6, &layers.TCP{SrcPort: 40000, DstPort: 443, Seq: 1000, SYN: true, Window: 65535}, nil)
		p := parsePacket(syn)
		want := Flow{Proto: TCP, Src: netip.AddrPortFrom(sb, 40000), Dst: netip.AddrPortFrom(peer, 443)}
		if !p.hasFlow() || p.flow != want || p.tcpFlags != tcpSYN || p.payload != 0 || p.ipv6 != v6 {
			t.Errorf("v6=%v SYN: got %+v, want flow %v with SYN and no payload", v6, p, want)
		}
		udp := frame(t, v6, &layers.UDP{SrcPort: 5353, DstPort: 53}, []byte("query"))
		p = parsePacket(udp)
		want = Flow{Proto: UDP, Src: netip.AddrPortFrom(sb, 5353), Dst: netip.AddrPortFrom(peer, 53)}
		if !p.hasFlow() || p.flow != want || p.payload != 5 {
			t.Errorf("v6=%v UDP: got %+v, want flow %v with 5 bytes", v6, p, want)
		}
		if got := want.Reverse(); got.Src != want.Dst || got.Dst != want.Src || got.Proto != UDP {
			t.Errorf("Reverse(%v) = %v", want, got)
		}
	}
}

func TestParsePacketKinds(t *testing.T) {
	ethv4 := &layers.Ethernet{SrcMAC: macSandbox, DstMAC: macRouter, EthernetType: layers.EthernetTypeIPv4}
	ethv6 := &layers.Ethernet{SrcMAC: macSandbox, DstMAC: macRouter, EthernetType: layers.EthernetTypeIPv6}
	v4 := func(proto layers.IPProtocol, frag uint16) *layers.IPv4 {
		return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: ip4Sandbox, DstIP: ip4Peer, FragOffset: frag}
	}
	v6 := func(next layers.IPProtocol) *layers.IPv6 {
		return &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: next, SrcIP: ip6Sandbox, DstIP: ip6Peer}
	}
	// A bare TCP SYN header, 40000 -> 443 (its checksum does not matter
	// here).
	tcp := gopacket.Payload{0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0}
	icmp6 := func(typ uint8) []byte {
		ip := v6(layers.IPProtocolICMPv6)
		l := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, 0)}
		_ = l.SetNetworkLayerForChecksum(ip)
		return serialize(t, ethv6, ip, l, gopacket.Payload(make([]byte, 20)))
	}
	sb4, peer4 := addrs(false)
	sb6, peer6 := addrs(true)
	for _, tc := range []struct {
		name  string
		frame []byte
		kind  packetKind
		flow  Flow
	}{
		{"arp", serialize(t,
			&layers.Ethernet{SrcMAC: macSandbox, DstMAC: layers.EthernetBroadcast, EthernetType: layers.EthernetTypeARP},
			&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
				Operation: layers.ARPRequest, SourceHwAddress: macSandbox, SourceProtAddress: ip4Sandbox,
				DstHwAddress: make([]byte, 6), DstProtAddress: ip4Peer}), notIP, Flow{}},
		{"icmp echo request", serialize(t, ethv4, v4(layers.IPProtocolICMPv4, 0),
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0)}),
			echoRequest, Flow{Proto: ICMP, Src: netip.AddrPortFrom(sb4, 0), Dst: netip.AddrPortFrom(peer4, 0)}},
		{"icmp error", serialize(t, ethv4, v4(layers.IPProtocolICMPv4, 0),
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, 3)}), control, Flow{}},
		{"icmpv6 echo request", icmp6(layers.ICMPv6TypeEchoRequest),
			echoRequest, Flow{Proto: ICMPv6, Src: netip.AddrPortFrom(sb6, 0), Dst: netip.AddrPortFrom(peer6, 0)}},
		{"neighbour solicitation", icmp6(layers.ICMPv6TypeNeighborSolicitation), control, Flow{}},
		{"gre", serialize(t, ethv4, v4(layers.IPProtocolGRE, 0), gopacket.Payload(make([]byte, 8))),
			flowPacket, Flow{Proto: Proto(47), Src: netip.AddrPortFrom(sb4, 0), Dst: netip.AddrPortFrom(peer4, 0)}},
		// A UDP datagram's second fragment: its first was decided.
		{"later fragment", serialize(t, ethv4, v4(layers.IPProtocolUDP, 185), gopacket.Payload(make([]byte, 64))), control, Flow{}},
		// A first fragment too short for the TCP header (RFC 1858).
		{"tiny first fragment", func() []byte {
			f := serialize(t, ethv4, v4(layers.IPProtocolTCP, 0), gopacket.Payload(make([]byte, 8)))
			f[ethHeaderLen+6] |= 0x20 // more fragments
			return f
		}(), unreadable, Flow{}},
		{"tcp behind hop-by-hop and destination options", serialize(t, ethv6, v6(layers.IPProtocolIPv6HopByHop),
			gopacket.Payload([]byte{60, 0, 1, 4, 0, 0, 0, 0}), gopacket.Payload([]byte{6, 0, 1, 4, 0, 0, 0, 0}), tcp),
			flowPacket, Flow{Proto: TCP, Src: netip.AddrPortFrom(sb6, 40000), Dst: netip.AddrPortFrom(peer6, 443)}},
		{"header chain past the first buffer", func() []byte {
			// Nine destination-options headers: more than maxExtHeaders.
			var ext []byte
			for range 9 {
				ext = append(ext, 60, 0, 1, 4, 0, 0, 0, 0)
			}
			ext[len(ext)-8] = 6
			return serialize(t, ethv6, v6(layers.IPProtocolIPv6Destination), gopacket.Payload(ext), tcp)
		}(), unreadable, Flow{}},
	} {
		p := parsePacket(tc.frame)
		if p.kind != tc.kind || (p.hasFlow() && p.flow != tc.flow) {
			t.Errorf("%s: kind %d flow %v, want kind %d flow %v", tc.name, p.kind, p.flow, tc.kind, tc.flow)
		}
	}
}

// TestParsePacketTruncated feeds every prefix of real frames (and lying
// length fields) to the parser: no panic, and no flow from a header that is
// not all there.
func TestParsePacketTruncated(t *testing.T) {
	frames := [][]byte{
		frame(t, false, &layers.TCP{SrcPort: 1, DstPort: 2, SYN: true}, []byte("x")),
		frame(t, true, &layers.TCP{SrcPort: 1, DstPort: 2, SYN: true}, nil),
		frame(t, false, &layers.UDP{SrcPort: 1, DstPort: 2}, []byte("x")),
		frame(t, true, &layers.UDP{SrcPort: 1, DstPort: 2}, []byte("x")),
	}
	for i, f := range frames {
		full := parsePacket(f)
		if !full.hasFlow() {
			t.Fatalf("frame %d: no flow", i)
		}
		for n := range len(f) {
			p := parsePacket(f[:n])
			if p.kind == flowPacket && n < full.l4+4 {
				t.Errorf("frame %d cut at %d bytes: got a flow from a partial header", i, n)
			}
			_ = refusal(f[:n], p)
		}
	}
	// A TCP data offset past the IP length, an IHL below 5.
	bad := frame(t, false, &layers.TCP{SrcPort: 1, DstPort: 2, SYN: true}, nil)
	bad[ethHeaderLen+20+12] = 0xf0
	if p := parsePacket(bad); p.kind != unreadable {
		t.Errorf("TCP data offset 60 in a 20-byte segment: got kind %d flow %v, want unreadable", p.kind, p.flow)
	}
	bad = frame(t, false, &layers.UDP{SrcPort: 1, DstPort: 2}, nil)
	bad[ethHeaderLen] = 0x44
	if p := parsePacket(bad); p.kind != unreadable {
		t.Errorf("IHL 4: got kind %d flow %v, want unreadable", p.kind, p.flow)
	}
}

// checksumOK reports whether seg, the transport segment of a packet with
// the given IP header, carries a valid checksum.
func checksumOK(ip []byte, v6 bool, proto uint8, seg []byte) bool {
	var pseudo uint16
	switch {
	case proto == protoICMP:
	case v6:
		pseudo = csum.PseudoV6(proto, ip[8:24], ip[24:40], uint32(len(seg)))
	default:
		pseudo = csum.PseudoV4(proto, ip[12:16], ip[16:20], uint16(len(seg)))
	}
	return csum.Sum(seg, pseudo) == 0xffff
}

func TestTCPReset(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, tc := range []struct {
			name    string
			tcp     *layers.TCP
			payload []byte
			// the RST's sequence and acknowledgement numbers and ACK flag
			seq, ack uint32
			hasAck   bool
		}{
			{"SYN", &layers.TCP{SrcPort: 40000, DstPort: 443, Seq: 1000, SYN: true}, nil, 0, 1001, true},
			{"data with ACK", &layers.TCP{SrcPort: 40000, DstPort: 443, Seq: 5000, Ack: 777, ACK: true, PSH: true}, []byte("hello"), 777, 0, false},
			{"FIN without ACK", &layers.TCP{SrcPort: 40000, DstPort: 443, Seq: 9, FIN: true}, []byte("ab"), 0, 12, true},
		} {
			f := frame(t, v6, tc.tcp, tc.payload)
			p := parsePacket(f)
			r := refusal(f, p)
			if r == nil {
				t.Fatalf("v6=%v %s: no RST", v6, tc.name)
			}
			pkt := gopacket.NewPacket(r, layers.LayerTypeEthernet, gopacket.Default)
			if el := pkt.ErrorLayer(); el != nil {
				t.Fatalf("v6=%v %s: RST does not decode: %v", v6, tc.name, el.Error())
			}
			eth := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			rst, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
			if rst == nil {
				t.Fatalf("v6=%v %s: no TCP layer in %x", v6, tc.name, r)
			}
			if eth.SrcMAC.String() != macRouter.String() || eth.DstMAC.String() != macSandbox.String() {
				t.Errorf("v6=%v %s: MACs %v > %v, want %v > %v", v6, tc.name, eth.SrcMAC, eth.DstMAC, macRouter, macSandbox)
			}
			src, dst := pkt.NetworkLayer().NetworkFlow().Endpoints()
			sb, peer := addrs(v6)
			if src.String() != peer.String() || dst.String() != sb.String() {
				t.Errorf("v6=%v %s: addresses %v > %v, want %v > %v", v6, tc.name, src, dst, peer, sb)
			}
			if !rst.RST || rst.SYN || rst.FIN || rst.ACK != tc.hasAck || rst.Seq != tc.seq || (tc.hasAck && rst.Ack != tc.ack) {
				t.Errorf("v6=%v %s: got RST=%v ACK=%v seq %d ack %d, want RST ACK=%v seq %d ack %d",
					v6, tc.name, rst.RST, rst.ACK, rst.Seq, rst.Ack, tc.hasAck, tc.seq, tc.ack)
			}
			if rst.SrcPort != 443 || rst.DstPort != 40000 {
				t.Errorf("v6=%v %s: ports %d > %d, want 443 > 40000", v6, tc.name, rst.SrcPort, rst.DstPort)
			}
			ip := r[ethHeaderLen:]
			l4 := ip[20:]
			if v6 {
				l4 = ip[40:]
			} else if csum.Sum(ip[:20], 0) != 0xffff {
				t.Errorf("v6=%v %s: bad IPv4 header checksum", v6, tc.name)
			}
			if !checksumOK(ip, v6, protoTCP, l4) {
				t.Errorf("v6=%v %s: bad TCP checksum", v6, tc.name)
			}
		}
	}
}

func TestNoAnswerToReset(t *testing.T) {
	f := frame(t, false, &layers.TCP{SrcPort: 1, DstPort: 2, RST: true, ACK: true}, nil)
	if r := refusal(f, parsePacket(f)); r != nil {
		t.Errorf("a RST was answered with %x", r)
	}
}

func TestPortUnreachable(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		payload := make([]byte, 2000) // more than an ICMP error quotes
		f := frame(t, v6, &layers.UDP{SrcPort: 5353, DstPort: 53}, payload)
		p := parsePacket(f)
		r := refusal(f, p)
		pkt := gopacket.NewPacket(r, layers.LayerTypeEthernet, gopacket.Default)
		ip := r[ethHeaderLen:]
		var icmp, quote []byte
		if v6 {
			l, _ := pkt.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
			if l == nil || l.TypeCode != layers.CreateICMPv6TypeCode(layers.ICMPv6TypeDestinationUnreachable, layers.ICMPv6CodePortUnreachable) {
				t.Fatalf("v6: got %v, want an ICMPv6 port unreachable", pkt)
			}
			icmp = ip[40:]
			if len(r) > 1280+ethHeaderLen {
				t.Errorf("v6: the error is %d bytes, beyond the 1280-byte minimum MTU", len(r)-ethHeaderLen)
			}
		} else {
			l, _ := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
			if l == nil || l.TypeCode != layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort) {
				t.Fatalf("v4: got %v, want an ICMP port unreachable", pkt)
			}
			icmp = ip[20:]
			if len(r) > 576+ethHeaderLen {
				t.Errorf("v4: the error is %d bytes, beyond 576", len(r)-ethHeaderLen)
			}
		}
		quote = icmp[8:]
		proto := uint8(protoICMP)
		if v6 {
			proto = protoICMPv6
		}
		if !checksumOK(ip, v6, proto, icmp) {
			t.Errorf("v6=%v: bad ICMP checksum", v6)
		}
		// The quote starts with the original IP header and UDP header,
		// which is what the sandbox's kernel matches its socket with.
		orig := f[ethHeaderLen:]
		n := p.l4 - p.l3 + 8
		if string(quote[:n]) != string(orig[:n]) {
			t.Errorf("v6=%v: the quote does not start with the datagram's headers", v6)
		}
	}
}

func TestFlowTableExpiresAndBounds(t *testing.T) {
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	tab := newFlowTable(flowShards*2, time.Minute, clock)
	f := Flow{Proto: TCP, Src: netip.MustParseAddrPort("192.0.2.100:40000"), Dst: netip.MustParseAddrPort("198.51.100.7:443")}
	if _, ok := tab.lookup(f); ok {
		t.Fatal("an empty table has a verdict")
	}
	tab.insert(f, false)
	if allow, ok := tab.lookup(f); !ok || allow {
		t.Fatalf("lookup after insert(deny) = %v, %v", allow, ok)
	}
	now = now.Add(59 * time.Second)
	if _, ok := tab.lookup(f); !ok {
		t.Fatal("expired before its idle timeout")
	}
	// The lookup refreshed it: another 59 s keep it.
	now = now.Add(59 * time.Second)
	if _, ok := tab.lookup(f); !ok {
		t.Fatal("a lookup did not refresh the flow")
	}
	now = now.Add(61 * time.Second)
	if _, ok := tab.lookup(f); ok {
		t.Fatal("still there after idling past the timeout")
	}
	// Far more flows than the bound: the table stays within it.
	for i := range 10000 {
		g := f
		g.Src = netip.AddrPortFrom(g.Src.Addr(), uint16(i))
		tab.insert(g, true)
		now = now.Add(time.Millisecond)
	}
	if n := tab.len(); n > flowShards*2 {
		t.Errorf("table holds %d flows, bound %d", n, flowShards*2)
	}
	if tab.evicted.Load() == 0 {
		t.Error("nothing counted as evicted")
	}
	// The newest flow survived.
	g := f
	g.Src = netip.AddrPortFrom(g.Src.Addr(), 9999)
	if _, ok := tab.lookup(g); !ok {
		t.Error("the newest flow was evicted")
	}
}

func TestBufferPool(t *testing.T) {
	var p bufferPool
	for _, size := range []int{1, 128, 129, 1514, 32768, 65550, 1 << 20} {
		b := p.Alloc(size)
		if len(b.Data) != size {
			t.Errorf("Alloc(%d) gave %d bytes", size, len(b.Data))
		}
		p.Free(b)
	}
}
