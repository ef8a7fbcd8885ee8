package fdbased

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/csum"
)

// Addresses of the socketpair tests: the endpoint's stack is 192.0.2.1 /
// 2001:db8::1 with MAC epMAC; the far end is .2 / ::2.
var (
	epMAC    = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x02")
	farMAC   = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x01")
	farAddr4 = tcpip.AddrFrom4([4]byte{192, 0, 2, 2})
	farAddr6 = tcpip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 2})
)

// pairEndpoint makes an endpoint over one end of a SOCK_SEQPACKET
// socketpair (frame boundaries kept, no queue-length limit) and returns it
// with the other end, which the test reads and writes frames on.
func pairEndpoint(t testing.TB, opts Options) (*Endpoint, int) {
	t.Helper()
	ep, peer, _ := pairEndpointFDs(t, opts)
	return ep, peer
}

// pairEndpointFDs is pairEndpoint that also returns the endpoint's own
// descriptor.
func pairEndpointFDs(t testing.TB, opts Options) (*Endpoint, int, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	}
	opts.FDs = []int{fds[0]}
	if opts.MTU == 0 {
		opts.MTU = 1500
	}
	if opts.EthernetHeader && opts.Address == "" {
		opts.Address = epMAC
	}
	ep, err := NewEndpoint(opts)
	if err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ep.Close()
		ep.Wait()
		unix.Close(fds[0])
		unix.Close(fds[1])
	})
	return ep, fds[1], fds[0]
}

// tcpPacket builds an outbound TCP packet as gVisor's TCP hands it to a link
// endpoint: headers pushed, GSOOptions set, and with gsoType other than
// GSONone the checksum field seeded with the pseudo-header sum over the
// whole segment (NeedsCsum, host GSO), else fully computed.
func tcpPacket(v6, eth bool, payload []byte, gsoType stack.GSOType, mss uint16, flags header.TCPFlags) *stack.PacketBuffer {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: 14 + 40 + 20,
		Payload:            buffer.MakeWithData(payload),
	})
	tcp := header.TCP(pkt.TransportHeader().Push(header.TCPMinimumSize))
	tcp.Encode(&header.TCPFields{SrcPort: 2000, DstPort: 1000, SeqNum: 1 << 20, AckNum: 7, DataOffset: header.TCPMinimumSize,
		Flags: flags, WindowSize: 65535})
	pkt.TransportProtocolNumber = header.TCPProtocolNumber
	l4len := header.TCPMinimumSize + len(payload)
	src, dst := stackAddr4, farAddr4
	if v6 {
		src, dst = stackAddr6, farAddr6
		ip := header.IPv6(pkt.NetworkHeader().Push(header.IPv6MinimumSize))
		ip.Encode(&header.IPv6Fields{PayloadLength: uint16(l4len), TransportProtocol: header.TCPProtocolNumber, HopLimit: 64, SrcAddr: src, DstAddr: dst})
		pkt.NetworkProtocolNumber = header.IPv6ProtocolNumber
	} else {
		ip := header.IPv4(pkt.NetworkHeader().Push(header.IPv4MinimumSize))
		ip.Encode(&header.IPv4Fields{TotalLength: uint16(20 + l4len), ID: 100, Flags: header.IPv4FlagDontFragment, TTL: 64,
			Protocol: uint8(header.TCPProtocolNumber), SrcAddr: src, DstAddr: dst})
		ip.SetChecksum(^ip.CalculateChecksum())
		pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
	}
	pseudo := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(l4len))
	if gsoType != stack.GSONone {
		tcp.SetChecksum(pseudo)
		l3 := uint16(header.IPv4MinimumSize)
		if v6 {
			l3 = header.IPv6MinimumSize
		}
		pkt.GSOOptions = stack.GSO{Type: gsoType, NeedsCsum: true, CsumOffset: header.TCPChecksumOffset, MSS: mss, L3HdrLen: l3, MaxSize: 65536}
	} else {
		tcp.SetChecksum(^tcp.CalculateChecksum(checksum.Combine(pseudo, checksum.Checksum(payload, 0))))
	}
	if eth {
		et := header.IPv4ProtocolNumber
		if v6 {
			et = header.IPv6ProtocolNumber
		}
		header.Ethernet(pkt.LinkHeader().Push(header.EthernetMinimumSize)).Encode(&header.EthernetFields{SrcAddr: epMAC, DstAddr: farMAC, Type: et})
	}
	return pkt
}

// udpPacket builds an outbound UDP datagram over IPv4 or IPv6 with its
// checksum left zero, as gVisor's UDP leaves it with TX checksum offload.
func udpPacket(v6, eth bool, payload []byte) *stack.PacketBuffer {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: 14 + 40 + 8, Payload: buffer.MakeWithData(payload)})
	udp := header.UDP(pkt.TransportHeader().Push(header.UDPMinimumSize))
	udp.Encode(&header.UDPFields{SrcPort: 2000, DstPort: 1000, Length: uint16(8 + len(payload))})
	pkt.TransportProtocolNumber = header.UDPProtocolNumber
	if v6 {
		ip := header.IPv6(pkt.NetworkHeader().Push(header.IPv6MinimumSize))
		ip.Encode(&header.IPv6Fields{PayloadLength: uint16(8 + len(payload)), TransportProtocol: header.UDPProtocolNumber, HopLimit: 64, SrcAddr: stackAddr6, DstAddr: farAddr6})
		pkt.NetworkProtocolNumber = header.IPv6ProtocolNumber
	} else {
		ip := header.IPv4(pkt.NetworkHeader().Push(header.IPv4MinimumSize))
		ip.Encode(&header.IPv4Fields{TotalLength: uint16(28 + len(payload)), TTL: 64, Protocol: uint8(header.UDPProtocolNumber), SrcAddr: stackAddr4, DstAddr: farAddr4})
		ip.SetChecksum(^ip.CalculateChecksum())
		pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
	}
	if eth {
		et := header.IPv4ProtocolNumber
		if v6 {
			et = header.IPv6ProtocolNumber
		}
		header.Ethernet(pkt.LinkHeader().Push(header.EthernetMinimumSize)).Encode(&header.EthernetFields{SrcAddr: epMAC, DstAddr: farMAC, Type: et})
	}
	return pkt
}

// writePkts writes pkts through ep.WritePackets and releases them.
func writePkts(t testing.TB, ep *Endpoint, pkts ...*stack.PacketBuffer) (int, tcpip.Error) {
	t.Helper()
	var l stack.PacketBufferList
	for _, p := range pkts {
		l.PushBack(p)
	}
	n, err := ep.WritePackets(l)
	l.DecRef()
	return n, err
}

// readFrames reads n frames from fd, each split into its virtio_net_hdr
// (when vnet) and bytes.
func readFrames(t testing.TB, fd, n int, vnet bool) ([]dataplane.VnetHdr, [][]byte) {
	t.Helper()
	var hs []dataplane.VnetHdr
	var fs [][]byte
	buf := make([]byte, 70000)
	deadline := time.Now().Add(10 * time.Second)
	for len(fs) < n {
		if time.Now().After(deadline) {
			t.Fatalf("read %d of %d frames", len(fs), n)
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, 1000); err != nil && !errors.Is(err, unix.EINTR) {
			t.Fatal(err)
		}
		if pfd[0].Revents&unix.POLLIN == 0 {
			continue
		}
		m, err := unix.Read(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		f := append([]byte(nil), buf[:m]...)
		var h dataplane.VnetHdr
		if vnet {
			if h, err = dataplane.ParseVnetHdr(f); err != nil {
				t.Fatal(err)
			}
			f = f[dataplane.VnetHdrLen:]
		}
		hs, fs = append(hs, h), append(fs, f)
	}
	return hs, fs
}

// noMoreFrames checks that fd has nothing more to read.
func noMoreFrames(t testing.TB, fd int) {
	t.Helper()
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if n, _ := unix.Poll(pfd, 50); n > 0 {
		t.Errorf("more frames than expected")
	}
}

// checkL4 checks frame f's IP header and transport checksum (completing it
// first from h when h says NEEDS_CSUM) and returns the transport header
// offset and the payload. l3 is the IP header's offset.
func checkL4(f []byte, l3 int, h dataplane.VnetHdr) (l4 int, payload []byte, err error) {
	f = append([]byte(nil), f...)
	ip := f[l3:]
	var l4len int
	var pseudo func(proto uint8) uint16
	switch ip[0] >> 4 {
	case 4:
		if csum.Sum(ip[:20], 0) != 0xffff {
			return 0, nil, fmt.Errorf("IPv4 header checksum wrong")
		}
		if int(binary.BigEndian.Uint16(ip[2:])) != len(ip) {
			return 0, nil, fmt.Errorf("IPv4 total length %d, %d bytes", binary.BigEndian.Uint16(ip[2:]), len(ip))
		}
		l4, l4len = l3+20, len(ip)-20
		pseudo = func(p uint8) uint16 { return csum.PseudoV4(p, ip[12:16], ip[16:20], uint16(l4len)) }
	case 6:
		if int(binary.BigEndian.Uint16(ip[4:]))+40 != len(ip) {
			return 0, nil, fmt.Errorf("IPv6 payload length %d, %d bytes", binary.BigEndian.Uint16(ip[4:]), len(ip)-40)
		}
		l4, l4len = l3+40, len(ip)-40
		pseudo = func(p uint8) uint16 { return csum.PseudoV6(p, ip[8:24], ip[24:40], uint32(l4len)) }
	default:
		return 0, nil, fmt.Errorf("IP version %d", ip[0]>>4)
	}
	proto := ip[9]
	if ip[0]>>4 == 6 {
		proto = ip[6]
	}
	hdr, ck := 20, 16
	if proto == 17 {
		hdr, ck = 8, 6
	} else {
		hdr = int(f[l4+12]>>4) * 4
	}
	if h.Flags&dataplane.VnetFlagNeedsCsum != 0 {
		if int(h.CsumStart) != l4 || int(h.CsumOffset) != ck {
			return 0, nil, fmt.Errorf("csum_start %d offset %d, transport header at %d (checksum +%d)", h.CsumStart, h.CsumOffset, l4, ck)
		}
		binary.BigEndian.PutUint16(f[l4+ck:], csum.Finish(csum.Sum(f[l4:], 0)))
	}
	if s := csum.Sum(f[l4:], pseudo(proto)); s != 0xffff {
		return 0, nil, fmt.Errorf("transport checksum %#04x wrong (NEEDS_CSUM %t)", binary.BigEndian.Uint16(f[l4+ck:]), h.Flags&dataplane.VnetFlagNeedsCsum != 0)
	}
	return l4, f[l4+hdr:], nil
}
