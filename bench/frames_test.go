package bench

import (
	"bytes"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
)

func TestUDPFrame(t *testing.T) {
	f := udpFrame(macB, macA, kernelAddr, stackAddr, srcPortBase+3, discardPort)
	if len(f) != frameLen {
		t.Fatalf("len = %d, want %d", len(f), frameLen)
	}
	eth := header.Ethernet(f)
	if eth.SourceAddress() != tcpip.LinkAddress(macB) || eth.DestinationAddress() != tcpip.LinkAddress(macA) || eth.Type() != header.IPv4ProtocolNumber {
		t.Errorf("ethernet header %x", f[:header.EthernetMinimumSize])
	}
	ip := header.IPv4(f[header.EthernetMinimumSize:])
	if !ip.IsValid(len(ip)) {
		t.Fatalf("invalid IPv4 header %x", []byte(ip[:header.IPv4MinimumSize]))
	}
	if !ip.IsChecksumValid() {
		t.Error("IPv4 header checksum is wrong")
	}
	if ip.SourceAddress() != tcpip.AddrFrom4(kernelAddr.As4()) || ip.DestinationAddress() != tcpip.AddrFrom4(stackAddr.As4()) {
		t.Errorf("addresses %s -> %s", ip.SourceAddress(), ip.DestinationAddress())
	}
	udp := header.UDP(ip.Payload())
	if udp.SourcePort() != srcPortBase+3 || udp.DestinationPort() != discardPort || int(udp.Length()) != header.UDPMinimumSize+udpPayloadLen {
		t.Errorf("udp header %x", []byte(udp[:header.UDPMinimumSize]))
	}
	if !udp.IsChecksumValid(ip.SourceAddress(), ip.DestinationAddress(), checksum.Checksum(udp.Payload(), 0)) {
		t.Error("UDP checksum is wrong")
	}
}

// TestUDPPacketMatchesFrame checks that the packet buffers tx_pps writes
// serialise to the same bytes as the frames rx_pps sends, so both
// directions carry the same 64-byte frame.
func TestUDPPacketMatchesFrame(t *testing.T) {
	ep := ethernet.New(channel.New(1, vethMTU, tcpip.LinkAddress(macA)))
	pkt := udpPacket(ep, macA, macB, stackAddr, kernelAddr, srcPortBase+7, discardPort)
	defer pkt.DecRef()
	var got []byte
	for _, s := range pkt.AsSlices() {
		got = append(got, s...)
	}
	want := udpFrame(macA, macB, stackAddr, kernelAddr, srcPortBase+7, discardPort)
	if !bytes.Equal(got, want) {
		t.Errorf("packet bytes\n%x\nwant\n%x", got, want)
	}
	if pkt.Hash != srcPortBase+7 {
		t.Errorf("Hash = %d, want the flow's source port %d", pkt.Hash, srcPortBase+7)
	}
}
