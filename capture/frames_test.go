package capture

import (
	"encoding/binary"
	"net"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// Test frames: addresses in 192.0.2.0/24 and 2001:db8::/32, MACs locally
// administered. The destination MAC is nobody's, so a receiving veth sees
// them as PACKET_OTHERHOST and its kernel drops them without answering.
var (
	testSrcMAC = net.HardwareAddr{0x02, 0x53, 0x4c, 0x00, 0x00, 0x01}
	testDstMAC = net.HardwareAddr{0x02, 0x53, 0x4c, 0x00, 0x00, 0x02}
	testSrc4   = net.IP{192, 0, 2, 1}
	testDst4   = net.IP{192, 0, 2, 2}
	testSrc6   = net.ParseIP("2001:db8::1")
	testDst6   = net.ParseIP("2001:db8::2")
)

// testFrame is a frame a test sends, with what it is.
type testFrame struct {
	name string
	data []byte
	vlan int // VLAN id, -1 untagged
	kind string
}

func serialize(ls ...gopacket.SerializableLayer) []byte {
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		panic(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// frame builds an Ethernet frame, VLAN-tagged when vlan >= 0, around an IPv4
// or IPv6 packet carrying l4 with payload.
func frame(vlan int, ip6 bool, l4 gopacket.SerializableLayer, payload []byte) []byte {
	eth := &layers.Ethernet{SrcMAC: testSrcMAC, DstMAC: testDstMAC, EthernetType: layers.EthernetTypeIPv4}
	var netl gopacket.SerializableLayer
	var proto layers.IPProtocol
	switch l := l4.(type) {
	case *layers.TCP:
		proto = layers.IPProtocolTCP
		_ = l
	case *layers.UDP:
		proto = layers.IPProtocolUDP
	case *layers.ICMPv4:
		proto = layers.IPProtocolICMPv4
	case *layers.ICMPv6:
		proto = layers.IPProtocolICMPv6
	}
	if ip6 {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: testSrc6, DstIP: testDst6}
		netl = ip
		switch l := l4.(type) {
		case *layers.TCP:
			l.SetNetworkLayerForChecksum(ip)
		case *layers.UDP:
			l.SetNetworkLayerForChecksum(ip)
		case *layers.ICMPv6:
			l.SetNetworkLayerForChecksum(ip)
		}
	} else {
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: testSrc4, DstIP: testDst4}
		netl = ip
		switch l := l4.(type) {
		case *layers.TCP:
			l.SetNetworkLayerForChecksum(ip)
		case *layers.UDP:
			l.SetNetworkLayerForChecksum(ip)
		}
	}
	ls := []gopacket.SerializableLayer{eth}
	if vlan >= 0 {
		et := eth.EthernetType
		eth.EthernetType = layers.EthernetTypeDot1Q
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: uint16(vlan), Priority: 3, Type: et})
	}
	ls = append(ls, netl, l4, gopacket.Payload(payload))
	return serialize(ls...)
}

// testFrames returns the known set: TCP, UDP, ICMP, IPv6 (UDP, TCP and
// ICMPv6) and VLAN-tagged frames, of several sizes, each payload numbered.
func testFrames() []testFrame {
	p := func(i, n int) []byte {
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(i*7 + j)
		}
		if n >= 4 {
			binary.BigEndian.PutUint32(b, uint32(i))
		}
		return b
	}
	var fs []testFrame
	add := func(name, kind string, vlan int, data []byte) {
		fs = append(fs, testFrame{name: name, data: data, vlan: vlan, kind: kind})
	}
	for i := range 3 {
		add("tcp4 syn", "tcp", -1, frame(-1, false, &layers.TCP{SrcPort: 40000, DstPort: 80, Seq: uint32(1000 + i), SYN: true, Window: 65535}, nil))
		add("tcp4 data", "tcp", -1, frame(-1, false, &layers.TCP{SrcPort: 40000, DstPort: 80, Seq: 2000, Ack: 1, ACK: true, PSH: true, Window: 512}, p(i, 200+i*500)))
		add("udp4 dns", "udp", -1, frame(-1, false, &layers.UDP{SrcPort: 5353, DstPort: 53}, p(i, 40)))
		add("icmp4 echo", "icmp", -1, frame(-1, false, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 7, Seq: uint16(i)}, p(i, 56)))
		add("udp6", "udp6", -1, frame(-1, true, &layers.UDP{SrcPort: 40001, DstPort: 9}, p(i, 100)))
		add("tcp6", "tcp6", -1, frame(-1, true, &layers.TCP{SrcPort: 40002, DstPort: 443, Seq: 5, SYN: true, Window: 1024}, nil))
		add("icmp6 echo", "icmp6", -1, frame(-1, true, &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(128, 0)}, p(i, 60)))
		add("vlan100 udp4", "udp", 100, frame(100, false, &layers.UDP{SrcPort: 6000, DstPort: 7000}, p(i, 80)))
		add("vlan200 tcp4", "tcp", 200, frame(200, false, &layers.TCP{SrcPort: 6001, DstPort: 22, Seq: 9, ACK: true, Window: 100}, p(i, 1400)))
	}
	return fs
}
