package capture

import (
	"fmt"
	"strings"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// decodeOpts: decode lazily, without copying (the frame is only valid
// during OnFrame).
var decodeOpts = gopacket.DecodeOptions{Lazy: true, NoCopy: true}

// Summary returns one line describing a frame, in the spirit of tcpdump's:
// time, direction, channel, then the link, network and transport layers as
// gopacket decodes them. nano selects nanosecond time.
func Summary(fi FrameInfo, nano bool) string {
	var b strings.Builder
	t := time.Unix(0, fi.Time)
	if nano {
		b.WriteString(t.Format("15:04:05.000000000"))
	} else {
		b.WriteString(t.Format("15:04:05.000000"))
	}
	if fi.Outbound {
		b.WriteString(" Out ")
	} else {
		b.WriteString(" In  ")
	}
	fmt.Fprintf(&b, "ch%d ", fi.Channel)
	describe(&b, gopacket.NewPacket(fi.Data, layers.LayerTypeEthernet, decodeOpts), fi.WireLen)
	if fi.GSOSegments > 1 {
		fmt.Fprintf(&b, " (GSO, %d segments)", fi.GSOSegments)
	}
	return b.String()
}

func describe(b *strings.Builder, p gopacket.Packet, wireLen int) {
	eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if eth == nil {
		fmt.Fprintf(b, "undecodable frame, length %d", wireLen)
		return
	}
	for _, l := range p.Layers() {
		if v, ok := l.(*layers.Dot1Q); ok {
			fmt.Fprintf(b, "vlan %d, p %d, ", v.VLANIdentifier, v.Priority)
		}
	}
	var src, dst, proto string
	switch {
	case p.Layer(layers.LayerTypeIPv4) != nil:
		ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		proto, src, dst = "IP", ip.SrcIP.String(), ip.DstIP.String()
		if ip.Flags&layers.IPv4MoreFragments != 0 || ip.FragOffset != 0 {
			fmt.Fprintf(b, "IP %s > %s: fragment id %d offset %d, length %d", src, dst, ip.Id, int(ip.FragOffset)*8, wireLen)
			return
		}
	case p.Layer(layers.LayerTypeIPv6) != nil:
		ip := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
		proto, src, dst = "IP6", ip.SrcIP.String(), ip.DstIP.String()
	case p.Layer(layers.LayerTypeARP) != nil:
		a := p.Layer(layers.LayerTypeARP).(*layers.ARP)
		if a.Operation == layers.ARPRequest {
			fmt.Fprintf(b, "ARP, Request who-has %v tell %v, length %d", ipBytes(a.DstProtAddress), ipBytes(a.SourceProtAddress), wireLen)
		} else {
			fmt.Fprintf(b, "ARP, Reply %v is-at %v, length %d", ipBytes(a.SourceProtAddress), hwBytes(a.SourceHwAddress), wireLen)
		}
		return
	default:
		et := eth.EthernetType
		if v, ok := p.Layer(layers.LayerTypeDot1Q).(*layers.Dot1Q); ok {
			et = v.Type
		}
		fmt.Fprintf(b, "%s > %s, ethertype %#04x, length %d", eth.SrcMAC, eth.DstMAC, uint16(et), wireLen)
		return
	}
	switch {
	case p.Layer(layers.LayerTypeTCP) != nil:
		t := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		fmt.Fprintf(b, "%s %s.%d > %s.%d: Flags [%s], seq %d, ack %d, win %d, length %d",
			proto, src, t.SrcPort, dst, t.DstPort, tcpFlags(t), t.Seq, t.Ack, t.Window, len(t.Payload))
	case p.Layer(layers.LayerTypeUDP) != nil:
		u := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
		fmt.Fprintf(b, "%s %s.%d > %s.%d: UDP, length %d", proto, src, u.SrcPort, dst, u.DstPort, int(u.Length)-8)
	case p.Layer(layers.LayerTypeICMPv4) != nil:
		ic := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
		fmt.Fprintf(b, "%s %s > %s: ICMP %s, id %d, seq %d, length %d", proto, src, dst, ic.TypeCode, ic.Id, ic.Seq, len(ic.Payload)+8)
	case p.Layer(layers.LayerTypeICMPv6) != nil:
		ic := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
		fmt.Fprintf(b, "%s %s > %s: ICMP6 %s, length %d", proto, src, dst, ic.TypeCode, len(ic.Payload)+4)
	default:
		fmt.Fprintf(b, "%s %s > %s: length %d", proto, src, dst, wireLen)
	}
}

func tcpFlags(t *layers.TCP) string {
	var f []byte
	for _, x := range []struct {
		on bool
		c  byte
	}{{t.FIN, 'F'}, {t.SYN, 'S'}, {t.RST, 'R'}, {t.PSH, 'P'}, {t.ACK, '.'}, {t.URG, 'U'}, {t.ECE, 'E'}, {t.CWR, 'W'}} {
		if x.on {
			f = append(f, x.c)
		}
	}
	if len(f) == 0 {
		return "none"
	}
	return string(f)
}

type ipBytes []byte

func (ip ipBytes) String() string {
	if len(ip) == 4 {
		return fmt.Sprintf("%d.%d.%d.%d", ip[0], ip[1], ip[2], ip[3])
	}
	return fmt.Sprintf("%x", []byte(ip))
}

type hwBytes []byte

func (h hwBytes) String() string {
	parts := make([]string, len(h))
	for i, x := range h {
		parts[i] = fmt.Sprintf("%02x", x)
	}
	return strings.Join(parts, ":")
}
