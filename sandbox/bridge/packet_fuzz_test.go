package bridge

import (
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// FuzzParsePacket feeds arbitrary frames to the parser and the answer
// builder: no panic; a flow's headers lie inside the frame; an answer is an
// Ethernet frame with an IP header, addressed back to the frame's sender,
// within the ICMP error size limits.
func FuzzParsePacket(f *testing.F) {
	t := &testing.T{}
	for _, v6 := range []bool{false, true} {
		f.Add(frame(t, v6, &layers.TCP{SrcPort: 40000, DstPort: 443, Seq: 1, SYN: true}, nil))
		f.Add(frame(t, v6, &layers.TCP{SrcPort: 40000, DstPort: 443, Seq: 1, Ack: 2, ACK: true}, []byte("data")))
		f.Add(frame(t, v6, &layers.UDP{SrcPort: 53, DstPort: 53}, make([]byte, 100)))
	}
	f.Add(serialize(t,
		&layers.Ethernet{SrcMAC: macSandbox, DstMAC: macRouter, EthernetType: layers.EthernetTypeIPv4},
		&layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: ip4Sandbox, DstIP: ip4Peer},
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0)}, gopacket.Payload("ping")))
	f.Fuzz(func(t *testing.T, b []byte) {
		p := parsePacket(b)
		if p.kind == flowPacket && (p.flow.Proto == TCP || p.flow.Proto == UDP) && p.l4+4 > len(b) {
			t.Fatalf("a %v flow from a %d-byte frame with its transport header at %d", p.flow.Proto, len(b), p.l4)
		}
		r := refusal(b, p)
		if r == nil {
			return
		}
		if len(r) < p.l3+ipv4HeaderLen+tcpHeaderLen {
			t.Fatalf("a %d-byte answer", len(r))
		}
		if string(r[0:6]) != string(b[6:12]) {
			t.Fatalf("the answer goes to %x, not the sender %x", r[0:6], b[6:12])
		}
		limit := 576
		if p.ipv6 {
			limit = 1280
		}
		if len(r)-p.l3 > limit {
			t.Fatalf("a %d-byte answer past %d", len(r)-p.l3, limit)
		}
		q := parsePacket(r)
		if q.src != p.flow.Dst.Addr() {
			t.Fatalf("the answer comes from %v, not the addressed %v", q.src, p.flow.Dst.Addr())
		}
	})
}
