package bench

import (
	"net"
	"net/netip"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

const (
	// frameLen is the benchmark frame: the classic "64-byte frame" is 60
	// bytes plus the 4-byte FCS on the wire, but a veth has no FCS, so the
	// 64 bytes handed to the kernel are all header and payload.
	frameLen = 64
	// udpPayloadLen is what is left of frameLen after the headers.
	udpPayloadLen = frameLen - header.EthernetMinimumSize - header.IPv4MinimumSize - header.UDPMinimumSize
	// numFlows distinct source ports: enough that PACKET_FANOUT_HASH
	// spreads them evenly over any channel count measured.
	numFlows = 64
	// srcPortBase is the first source port of the flows.
	srcPortBase = 40000
	// discardPort is the UDP destination (RFC 863 discard); nothing
	// listens there, which is the point.
	discardPort = 9
	// txBatch is the number of packets per WritePackets call: the
	// reference's sendmmsg batch (one 64 KiB segment at MSS 1420 is 47
	// frames), so each call maps to one sendmmsg in both implementations.
	txBatch = 47
)

// udpFrame returns a frameLen-byte Ethernet + IPv4 + UDP frame with valid
// IPv4 and UDP checksums, of the flow given by sport.
func udpFrame(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, sport, dport uint16) []byte {
	b := make([]byte, frameLen)
	header.Ethernet(b).Encode(&header.EthernetFields{
		SrcAddr: tcpip.LinkAddress(srcMAC),
		DstAddr: tcpip.LinkAddress(dstMAC),
		Type:    header.IPv4ProtocolNumber,
	})
	ipb := b[header.EthernetMinimumSize:]
	encodeIPv4UDP(header.IPv4(ipb[:header.IPv4MinimumSize]), header.UDP(ipb[header.IPv4MinimumSize:]), ipb[header.IPv4MinimumSize+header.UDPMinimumSize:], src, dst, sport, dport)
	return b
}

// encodeIPv4UDP fills in the IPv4 and UDP headers of a datagram carrying
// payload, checksums included, as a stack's UDP and IPv4 endpoints would.
func encodeIPv4UDP(ip header.IPv4, udp header.UDP, payload []byte, src, dst netip.Addr, sport, dport uint16) {
	srcA, dstA := tcpip.AddrFrom4(src.As4()), tcpip.AddrFrom4(dst.As4())
	udpLen := uint16(header.UDPMinimumSize + len(payload))
	udp.Encode(&header.UDPFields{SrcPort: sport, DstPort: dport, Length: udpLen})
	xsum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, srcA, dstA, udpLen)
	xsum = checksum.Checksum(payload, xsum)
	udp.SetChecksum(^udp.CalculateChecksum(xsum))
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(header.IPv4MinimumSize) + udpLen,
		TTL:         64,
		Protocol:    uint8(header.UDPProtocolNumber),
		SrcAddr:     srcA,
		DstAddr:     dstA,
	})
	ip.SetChecksum(^ip.CalculateChecksum())
}

// udpPacket returns a packet buffer of one flow as a stack hands it to a
// link endpoint: network and transport headers pushed, the route's link
// addresses, protocol numbers and flow hash set, and the link header added
// by ep.AddHeader. The caller owns the returned reference.
func udpPacket(ep stack.LinkEndpoint, srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, sport, dport uint16) *stack.PacketBuffer {
	payload := make([]byte, udpPayloadLen)
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: int(ep.MaxHeaderLength()) + header.IPv4MinimumSize + header.UDPMinimumSize,
		Payload:            buffer.MakeWithData(payload),
	})
	udp := header.UDP(pkt.TransportHeader().Push(header.UDPMinimumSize))
	ip := header.IPv4(pkt.NetworkHeader().Push(header.IPv4MinimumSize))
	encodeIPv4UDP(ip, udp, payload, src, dst, sport, dport)
	pkt.TransportProtocolNumber = header.UDPProtocolNumber
	pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
	pkt.EgressRoute.LocalLinkAddress = tcpip.LinkAddress(srcMAC)
	pkt.EgressRoute.RemoteLinkAddress = tcpip.LinkAddress(dstMAC)
	pkt.EgressRoute.LocalAddress = tcpip.AddrFrom4(src.As4())
	pkt.EgressRoute.RemoteAddress = tcpip.AddrFrom4(dst.As4())
	pkt.EgressRoute.NetProto = header.IPv4ProtocolNumber
	// The stack sets Hash from the transport endpoint; endpoints pick the
	// channel (socket) of a packet by it.
	pkt.Hash = uint32(sport)
	ep.AddHeader(pkt)
	return pkt
}
