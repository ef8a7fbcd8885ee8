package sandbox

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// pcap file constants (https://www.tcpdump.org/manpages/pcap-savefile.5.html).
// The link type is Ethernet: eth0 is a veth, and with Ethernet framing ARP
// and NDP are in the capture too, which LINKTYPE_RAW (gVisor's sniffer)
// cannot carry.
const (
	pcapMagic        = 0xa1b2c3d4
	pcapLinkEthernet = 1
	// pcapSnapLen holds a whole GSO frame (64 KiB plus headers); tcpdump
	// reads records up to 262144 bytes.
	pcapSnapLen = 262144
)

// tap records the frames of the sandbox link: to a pcap file (--pcap-log)
// and/or as one decoded line per frame (--log-packets). One tap serves every
// channel of the link; the endpoint delivers and writes from several
// goroutines, so writes are serialised by mu.
type tap struct {
	mu    sync.Mutex
	file  *os.File
	pcap  *bufio.Writer // nil without --pcap-log
	lines io.Writer     // nil without --log-packets
	log   *slog.Logger
	// failed is set after the first write error: the capture stops
	// (logged once) rather than panicking or failing the sandbox's
	// traffic, which matters more than its record.
	failed bool
}

// newTap opens the tap of cfg, or returns nil when neither --pcap-log nor
// --log-packets is set. The pcap file is created (truncated) now, so a bad
// path fails before the command starts.
func newTap(cfg Config, lines io.Writer, log *slog.Logger) (*tap, error) {
	if cfg.PCAPLog == "" && !cfg.LogPackets {
		return nil, nil
	}
	t := &tap{log: log}
	if cfg.LogPackets {
		t.lines = lines
	}
	if cfg.PCAPLog != "" {
		f, err := os.OpenFile(cfg.PCAPLog, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return nil, fmt.Errorf("sandbox: --pcap-log: %w", err)
		}
		t.file = f
		t.pcap = bufio.NewWriterSize(f, 1<<20)
		var h [24]byte
		binary.LittleEndian.PutUint32(h[0:], pcapMagic)
		binary.LittleEndian.PutUint16(h[4:], 2)
		binary.LittleEndian.PutUint16(h[6:], 4)
		binary.LittleEndian.PutUint32(h[16:], pcapSnapLen)
		binary.LittleEndian.PutUint32(h[20:], pcapLinkEthernet)
		if _, err := t.pcap.Write(h[:]); err != nil {
			f.Close()
			return nil, fmt.Errorf("sandbox: --pcap-log: write header: %w", err)
		}
	}
	return t, nil
}

// Close flushes and closes the pcap file. Call it after the link's
// goroutines have stopped.
func (t *tap) Close() error {
	if t == nil || t.file == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	err := t.pcap.Flush()
	if cerr := t.file.Close(); err == nil {
		err = cerr
	}
	t.file = nil
	if err != nil {
		return fmt.Errorf("sandbox: --pcap-log: %w", err)
	}
	return nil
}

// record writes one frame seen in direction dir ("in": from the sandbox to
// the stack; "out": from the stack to the sandbox).
func (t *tap) record(dir string, frame []byte) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.failed {
		return
	}
	if t.pcap != nil {
		n := len(frame)
		if n > pcapSnapLen {
			n = pcapSnapLen
		}
		var h [16]byte
		binary.LittleEndian.PutUint32(h[0:], uint32(now.Unix()))
		binary.LittleEndian.PutUint32(h[4:], uint32(now.Nanosecond()/1000))
		binary.LittleEndian.PutUint32(h[8:], uint32(n))
		binary.LittleEndian.PutUint32(h[12:], uint32(len(frame)))
		_, err := t.pcap.Write(h[:])
		if err == nil {
			_, err = t.pcap.Write(frame[:n])
		}
		if err == nil {
			// Flushed per frame so that a capture read while the
			// command runs (or after sluice is killed) is whole.
			err = t.pcap.Flush()
		}
		if err != nil {
			t.failed = true
			t.log.Error("sandbox: --pcap-log: writing stopped", "err", err)
			return
		}
	}
	if t.lines != nil {
		fmt.Fprintf(t.lines, "%s %s %s\n", now.Format("15:04:05.000000"), dir, describeFrame(frame))
	}
}

// wrap returns ep with every frame recorded by t: the decorator of
// STYLE D.19, the endpoint itself is untouched.
func (t *tap) wrap(ep stack.LinkEndpoint) stack.LinkEndpoint {
	e := &tapEndpoint{tap: t}
	e.Endpoint.Init(ep, e)
	return e
}

// tapEndpoint is a nested link endpoint that hands each frame to its tap.
type tapEndpoint struct {
	nested.Endpoint
	tap *tap
}

// DeliverNetworkPacket records an inbound frame. The Ethernet endpoint has
// consumed the link header, which stays at the front of the packet's
// storage, so the whole packet is the frame as it came off the wire.
func (e *tapEndpoint) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	e.tap.record("in", flatten(pkt.AsSlices()))
	e.Endpoint.DeliverNetworkPacket(proto, pkt)
}

// WritePackets records outbound frames. The NIC has had the Ethernet
// endpoint add the link header (AddHeader) before the write, so the packet
// is the whole frame; one without a link header (none is expected) gets
// one built here, as the endpoint would, so the capture stays Ethernet.
func (e *tapEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	for _, pkt := range pkts.AsSlice() {
		if len(pkt.LinkHeader().Slice()) != 0 {
			e.tap.record("out", flatten(pkt.AsSlices()))
			continue
		}
		eth := make([]byte, header.EthernetMinimumSize, header.EthernetMinimumSize+pkt.Size())
		src := pkt.EgressRoute.LocalLinkAddress
		if src == "" {
			src = e.LinkAddress()
		}
		header.Ethernet(eth).Encode(&header.EthernetFields{SrcAddr: src, DstAddr: pkt.EgressRoute.RemoteLinkAddress, Type: pkt.NetworkProtocolNumber})
		for _, s := range pkt.AsSlices() {
			eth = append(eth, s...)
		}
		e.tap.record("out", eth)
	}
	return e.Endpoint.WritePackets(pkts)
}

func flatten(ss [][]byte) []byte {
	n := 0
	for _, s := range ss {
		n += len(s)
	}
	out := make([]byte, 0, n)
	for _, s := range ss {
		out = append(out, s...)
	}
	return out
}

// describeFrame returns a one-line, tcpdump-like decoding of an Ethernet
// frame. It never fails: what it cannot decode it names as such.
func describeFrame(f []byte) string {
	if len(f) < header.EthernetMinimumSize {
		return fmt.Sprintf("short frame (%d bytes)", len(f))
	}
	eth := header.Ethernet(f)
	body := f[header.EthernetMinimumSize:]
	var b strings.Builder
	fmt.Fprintf(&b, "%s > %s ", eth.SourceAddress(), eth.DestinationAddress())
	switch eth.Type() {
	case header.ARPProtocolNumber:
		a := header.ARP(body)
		if !a.IsValid() {
			b.WriteString("ARP, truncated")
			break
		}
		sip, _ := netip.AddrFromSlice(a.ProtocolAddressSender())
		tip, _ := netip.AddrFromSlice(a.ProtocolAddressTarget())
		if a.Op() == header.ARPRequest {
			fmt.Fprintf(&b, "ARP, who-has %v tell %v", tip, sip)
		} else {
			fmt.Fprintf(&b, "ARP, %v is-at %s", sip, tcpip.LinkAddress(a.HardwareAddressSender()))
		}
	case header.IPv4ProtocolNumber:
		ip := header.IPv4(body)
		if !ip.IsValid(len(body)) {
			fmt.Fprintf(&b, "IPv4, bad header (%d bytes)", len(body))
			break
		}
		src, dst := toAddr(ip.SourceAddress()), toAddr(ip.DestinationAddress())
		describeTransport(&b, "IP", src, dst, ip.TransportProtocol(), ip.Payload(), int(ip.TotalLength()))
	case header.IPv6ProtocolNumber:
		ip := header.IPv6(body)
		if !ip.IsValid(len(body)) {
			fmt.Fprintf(&b, "IPv6, bad header (%d bytes)", len(body))
			break
		}
		src, dst := toAddr(ip.SourceAddress()), toAddr(ip.DestinationAddress())
		// Extension headers are named by their number rather than
		// walked: the sandbox's traffic rarely has them.
		describeTransport(&b, "IP6", src, dst, ip.TransportProtocol(), ip.Payload(), len(body))
	default:
		fmt.Fprintf(&b, "ethertype %#04x, length %d", uint16(eth.Type()), len(body))
	}
	return b.String()
}

func describeTransport(b *strings.Builder, fam string, src, dst netip.Addr, proto tcpip.TransportProtocolNumber, p []byte, length int) {
	switch proto {
	case header.TCPProtocolNumber:
		if len(p) < header.TCPMinimumSize {
			fmt.Fprintf(b, "%s %v > %v: TCP, truncated", fam, src, dst)
			return
		}
		t := header.TCP(p)
		off := int(t.DataOffset())
		if off < header.TCPMinimumSize || off > len(p) {
			off = len(p)
		}
		fmt.Fprintf(b, "%s %v.%d > %v.%d: Flags [%s], seq %d, ack %d, win %d, length %d",
			fam, src, t.SourcePort(), dst, t.DestinationPort(), strings.ReplaceAll(t.Flags().String(), " ", ""), t.SequenceNumber(), t.AckNumber(), t.WindowSize(), len(p)-off)
	case header.UDPProtocolNumber:
		if len(p) < header.UDPMinimumSize {
			fmt.Fprintf(b, "%s %v > %v: UDP, truncated", fam, src, dst)
			return
		}
		u := header.UDP(p)
		fmt.Fprintf(b, "%s %v.%d > %v.%d: UDP, length %d", fam, src, u.SourcePort(), dst, u.DestinationPort(), len(p)-header.UDPMinimumSize)
	case header.ICMPv4ProtocolNumber:
		if len(p) < header.ICMPv4MinimumSize {
			fmt.Fprintf(b, "%s %v > %v: ICMP, truncated", fam, src, dst)
			return
		}
		i := header.ICMPv4(p)
		fmt.Fprintf(b, "%s %v > %v: ICMP type %d code %d, length %d", fam, src, dst, i.Type(), i.Code(), len(p))
	case header.ICMPv6ProtocolNumber:
		if len(p) < header.ICMPv6MinimumSize {
			fmt.Fprintf(b, "%s %v > %v: ICMP6, truncated", fam, src, dst)
			return
		}
		i := header.ICMPv6(p)
		fmt.Fprintf(b, "%s %v > %v: ICMP6 type %d code %d, length %d", fam, src, dst, i.Type(), i.Code(), len(p))
	default:
		fmt.Fprintf(b, "%s %v > %v: protocol %d, length %d", fam, src, dst, proto, length)
	}
}
