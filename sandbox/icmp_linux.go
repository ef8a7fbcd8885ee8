package sandbox

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// echoRequest is what a forwarded ping keeps of the sandbox's request: the
// packet itself is the stack's and gone once the handler returns.
type echoRequest struct {
	src, dst netip.Addr // as the sandbox sent it
	to       netip.Addr // where the host socket sends it
	mac      tcpip.LinkAddress
	ident    uint16
	seq      uint16
	payload  []byte
}

// handleICMPv4 is the stack's default ICMPv4 handler: it sees echo
// requests that no ICMP endpoint took. Requests to the gateway are left to
// the stack, which answers them itself (false). Every other request is
// forwarded from a host socket, or dropped; either way it is consumed
// (true) so that the stack never answers on behalf of another host.
func (u *uplink) handleICMPv4(_ stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
	h := header.ICMPv4(pkt.TransportHeader().Slice())
	if len(h) < header.ICMPv4MinimumSize || h.Type() != header.ICMPv4Echo {
		return false
	}
	ip := header.IPv4(pkt.NetworkHeader().Slice())
	return u.forwardEcho(pkt, toAddr(ip.SourceAddress()), toAddr(ip.DestinationAddress()), h.Ident(), h.Sequence())
}

// handleICMPv6 is handleICMPv4 for ICMPv6 echo requests.
func (u *uplink) handleICMPv6(_ stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
	h := header.ICMPv6(pkt.TransportHeader().Slice())
	if len(h) < header.ICMPv6EchoMinimumSize || h.Type() != header.ICMPv6EchoRequest {
		return false
	}
	ip := header.IPv6(pkt.NetworkHeader().Slice())
	return u.forwardEcho(pkt, toAddr(ip.SourceAddress()), toAddr(ip.DestinationAddress()), h.Ident(), h.Sequence())
}

func (u *uplink) forwardEcho(pkt *stack.PacketBuffer, src, dst netip.Addr, ident, seq uint16) bool {
	if u.gateways[dst] || u.local[dst] || !u.fromSandbox(src) {
		return false
	}
	to, ok := u.target(dst)
	if !ok {
		return true
	}
	eth := header.Ethernet(pkt.LinkHeader().Slice())
	if len(eth) < header.EthernetMinimumSize {
		return true
	}
	select {
	case u.pings <- struct{}{}:
	default:
		return true // too many in flight: drop, as a rate limit would
	}
	if !u.begin(nil) {
		<-u.pings
		return true
	}
	req := echoRequest{
		src: src, dst: dst, to: to,
		mac:     eth.SourceAddress(),
		ident:   ident,
		seq:     seq,
		payload: pkt.Data().AsRange().ToSlice(),
	}
	go func() {
		defer u.end(nil)
		defer func() { <-u.pings }()
		defer u.contain("echo request", nil)
		payload, err := u.dial.ping(u.ctx, req)
		if err != nil {
			u.log.Debug("uplink: echo request not answered", "dst", req.to, "err", err)
			return
		}
		if tcpipErr := u.s.WritePacketToRemote(u.nic, req.mac, protoOf(req.src), buffer.MakeWithData(echoReply(req, payload))); tcpipErr != nil {
			u.log.Debug("uplink: write echo reply", "dst", req.src, "err", tcpipErr.String())
		}
	}()
	return true
}

// ping sends one echo request to req.to from a socket in the uplink
// namespace and returns the reply's payload. It uses an unprivileged ICMP
// socket where net.ipv4.ping_group_range allows one and a raw socket
// otherwise (root has CAP_NET_RAW; the default range "1 0" excludes even
// root's group).
func (u *uplink) ping(req echoRequest) ([]byte, error) {
	v4 := req.to.Is4()
	family, proto, echo, reply := unix.AF_INET6, unix.IPPROTO_ICMPV6, byte(header.ICMPv6EchoRequest), byte(header.ICMPv6EchoReply)
	if v4 {
		family, proto, echo, reply = unix.AF_INET, unix.IPPROTO_ICMP, byte(header.ICMPv4Echo), byte(header.ICMPv4EchoReply)
	}
	var fd int
	raw := false
	err := u.inNS(func() error {
		var err error
		fd, err = unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, proto)
		if err == nil {
			return nil
		}
		raw = true
		fd, err = unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		return os.NewSyscallError("socket", err)
	})
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)

	// A ping socket sets the identifier itself (it is the socket's
	// "port") and computes the checksum; a raw socket takes ours. The
	// kernel computes ICMPv6 checksums on raw sockets too (RFC 3542 3.1).
	var idBuf [2]byte
	_, _ = rand.Read(idBuf[:])
	ident := binary.BigEndian.Uint16(idBuf[:])
	msg := make([]byte, 8+len(req.payload))
	msg[0] = echo
	binary.BigEndian.PutUint16(msg[4:], ident)
	binary.BigEndian.PutUint16(msg[6:], req.seq)
	copy(msg[8:], req.payload)
	if v4 && raw {
		binary.BigEndian.PutUint16(msg[2:], ^checksum.Checksum(msg, 0))
	}
	var sa unix.Sockaddr
	if v4 {
		sa = &unix.SockaddrInet4{Addr: req.to.As4()}
	} else {
		sa = &unix.SockaddrInet6{Addr: req.to.As16()}
	}
	if err := unix.Sendto(fd, msg, 0, sa); err != nil {
		return nil, os.NewSyscallError("sendto", err)
	}

	deadline := time.Now().Add(pingTimeout)
	buf := make([]byte, 64<<10)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, errors.New("timed out")
		}
		if u.ctx.Err() != nil {
			return nil, u.ctx.Err()
		}
		// Poll in short slices so that closing the uplink does not wait
		// for the whole timeout.
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, int(min(left, 100*time.Millisecond).Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, os.NewSyscallError("poll", err)
		}
		if n == 0 {
			continue
		}
		n, from, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, os.NewSyscallError("recvfrom", err)
		}
		b := buf[:n]
		if v4 && raw {
			// Raw IPv4 sockets deliver the IP header too.
			if len(b) < header.IPv4MinimumSize {
				continue
			}
			b = b[int(b[0]&0xf)*4:]
		}
		if len(b) < 8 || b[0] != reply || binary.BigEndian.Uint16(b[6:]) != req.seq {
			continue
		}
		if raw && (binary.BigEndian.Uint16(b[4:]) != ident || !sameAddr(from, req.to)) {
			continue // someone else's reply: a raw socket sees them all
		}
		return append([]byte(nil), b[8:]...), nil
	}
}

func sameAddr(sa unix.Sockaddr, a netip.Addr) bool {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrFrom4(sa.Addr) == a
	case *unix.SockaddrInet6:
		return netip.AddrFrom16(sa.Addr) == a
	}
	return false
}

// echoReply builds the IP packet answering req with payload, from the
// address the sandbox pinged.
func echoReply(req echoRequest, payload []byte) []byte {
	src := tcpip.AddrFromSlice(req.dst.AsSlice())
	dst := tcpip.AddrFromSlice(req.src.AsSlice())
	if req.src.Is4() {
		b := make([]byte, header.IPv4MinimumSize+header.ICMPv4MinimumSize+len(payload))
		ip := header.IPv4(b)
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(len(b)),
			TTL:         ipv4.DefaultTTL,
			Protocol:    uint8(header.ICMPv4ProtocolNumber),
			SrcAddr:     src,
			DstAddr:     dst,
		})
		ip.SetChecksum(^ip.CalculateChecksum())
		ic := header.ICMPv4(b[header.IPv4MinimumSize:])
		ic.SetType(header.ICMPv4EchoReply)
		ic.SetIdent(req.ident)
		ic.SetSequence(req.seq)
		copy(ic.Payload(), payload)
		ic.SetChecksum(^checksum.Checksum(ic, 0))
		return b
	}
	b := make([]byte, header.IPv6MinimumSize+header.ICMPv6EchoMinimumSize+len(payload))
	ip := header.IPv6(b)
	ip.Encode(&header.IPv6Fields{
		PayloadLength:     uint16(header.ICMPv6EchoMinimumSize + len(payload)),
		TransportProtocol: header.ICMPv6ProtocolNumber,
		HopLimit:          ipv6.DefaultTTL,
		SrcAddr:           src,
		DstAddr:           dst,
	})
	ic := header.ICMPv6(b[header.IPv6MinimumSize:])
	ic.SetType(header.ICMPv6EchoReply)
	ic.SetIdent(req.ident)
	ic.SetSequence(req.seq)
	copy(ic.Payload(), payload)
	ic.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
		Header:      ic[:header.ICMPv6EchoMinimumSize],
		Src:         src,
		Dst:         dst,
		PayloadCsum: checksum.Checksum(payload, 0),
		PayloadLen:  len(payload),
	}))
	return b
}
