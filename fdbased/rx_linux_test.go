package fdbased

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/offloadtest"
)

// pairStack is a netstack on a socketpair endpoint, with a UDP socket on
// port 2000 of each address, fed frames by the test through peer.
type pairStack struct {
	ep     *Endpoint
	peer   int
	s      *stack.Stack
	u4, u6 *gonet.UDPConn
	vnet   bool
}

func newPairStack(t testing.TB, opts Options) *pairStack {
	t.Helper()
	opts.EthernetHeader = true
	opts.ProcessorsPerChannel = 1 // one goroutine: frames are handled in the order written
	ep, peer := pairEndpoint(t, opts)
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	t.Cleanup(func() {
		// Stop the endpoint before the stack waits: gVisor's Stack.Wait
		// holds the stack lock while it waits for link endpoints, and a
		// reader delivering a packet may need that lock.
		ep.Close()
		ep.Wait()
		s.Close()
		s.Wait()
	})
	if err := s.CreateNIC(1, ep); err != nil {
		t.Fatalf("CreateNIC: %v", err)
	}
	for _, a := range []tcpip.ProtocolAddress{
		{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: tcpip.AddressWithPrefix{Address: stackAddr4, PrefixLen: 24}},
		{Protocol: ipv6.ProtocolNumber, AddressWithPrefix: tcpip.AddressWithPrefix{Address: stackAddr6, PrefixLen: 64}},
	} {
		if err := s.AddProtocolAddress(1, a, stack.AddressProperties{}); err != nil {
			t.Fatal(err)
		}
	}
	s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: 1}, {Destination: header.IPv6EmptySubnet, NIC: 1}})
	s.AddStaticNeighbor(1, ipv4.ProtocolNumber, farAddr4, farMAC)
	s.AddStaticNeighbor(1, ipv6.ProtocolNumber, farAddr6, farMAC)
	p := &pairStack{ep: ep, peer: peer, s: s, vnet: ep.vnetHdr}
	var err error
	if p.u4, err = gonet.DialUDP(s, &tcpip.FullAddress{NIC: 1, Addr: stackAddr4, Port: 2000}, nil, ipv4.ProtocolNumber); err != nil {
		t.Fatal(err)
	}
	if p.u6, err = gonet.DialUDP(s, &tcpip.FullAddress{NIC: 1, Addr: stackAddr6, Port: 2000}, nil, ipv6.ProtocolNumber); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.u4.Close(); p.u6.Close() })
	return p
}

// inbound describes a frame from the far end to the stack.
func inbound(p offloadtest.Packet) offloadtest.Packet {
	p.Ethernet = true
	src4, dst4 := [4]byte{192, 0, 2, 2}, [4]byte{192, 0, 2, 1}
	src6, dst6 := [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 2}, [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 1}
	p.Src4, p.Dst4, p.Src6, p.Dst6 = &src4, &dst4, &src6, &dst6
	return p
}

// send writes a frame (behind h when the endpoint reads virtio_net_hdrs).
func (p *pairStack) send(t *testing.T, h dataplane.VnetHdr, frame []byte) {
	t.Helper()
	b := frame
	if p.vnet {
		b = make([]byte, dataplane.VnetHdrLen+len(frame))
		h.Encode(b)
		copy(b[dataplane.VnetHdrLen:], frame)
	}
	if _, err := unix.Write(p.peer, b); err != nil {
		t.Fatal(err)
	}
}

// recv reads the next datagram on the v4 or v6 socket.
func (p *pairStack) recv(t *testing.T, v6 bool) []byte {
	t.Helper()
	c := p.u4
	if v6 {
		c = p.u6
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 65536)
	n, _, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no datagram: %v (stats %+v)", err, p.ep.Stats())
	}
	return buf[:n]
}

// expect sends frame and checks whether the stack got its payload: when
// delivered is false it sends a good marker datagram of the same flow after
// it and checks that the marker comes first, which needs no timeout.
func (p *pairStack) expect(t *testing.T, v6 bool, h dataplane.VnetHdr, frame, payload []byte, delivered bool) {
	t.Helper()
	p.send(t, h, frame)
	if !delivered {
		marker := []byte(fmt.Sprintf("marker-%d", time.Now().UnixNano()))
		p.send(t, dataplane.VnetHdr{}, offloadtest.Build(inbound(offloadtest.Packet{UDP: true, V6: v6, Payload: marker})))
		payload = marker
	}
	if got := p.recv(t, v6); !bytes.Equal(got, payload) {
		if delivered {
			t.Errorf("got %q, want the frame's payload", got[:min(len(got), 20)])
		} else {
			t.Errorf("got %q before the marker: a frame that should have been dropped was delivered", got[:min(len(got), 20)])
		}
	}
}

// In VerifyHere mode (a virtio_net_hdr, no RXChecksumOffload) what the
// kernel vouches for passes as it is, what it does not is verified once by
// the endpoint, and a bad checksum is dropped and counted.
func TestRXChecksumVerifyHere(t *testing.T) {
	p := newPairStack(t, Options{VnetHdr: true})
	if p.ep.Capabilities()&stack.CapabilityRXChecksumOffload == 0 {
		t.Fatal("the endpoint verifies checksums itself but does not tell the stack")
	}
	pay := []byte("payload of a datagram")
	needs4 := dataplane.VnetHdr{Flags: dataplane.VnetFlagNeedsCsum, CsumStart: 34, CsumOffset: 6}
	needs6 := dataplane.VnetHdr{Flags: dataplane.VnetFlagNeedsCsum, CsumStart: 54, CsumOffset: 6}
	valid := dataplane.VnetHdr{Flags: dataplane.VnetFlagDataValid}
	badIPHdr := offloadtest.Build(inbound(offloadtest.Packet{UDP: true, Payload: pay}))
	badIPHdr[14+10] ^= 0x55
	for _, tc := range []struct {
		name      string
		v6        bool
		h         dataplane.VnetHdr
		frame     []byte
		delivered bool
		errors    uint64
	}{
		{"good, no flags", false, dataplane.VnetHdr{}, offloadtest.Build(inbound(offloadtest.Packet{UDP: true, Payload: pay})), true, 0},
		{"bad, no flags", false, dataplane.VnetHdr{}, offloadtest.Build(inbound(offloadtest.Packet{UDP: true, Payload: pay, BadL4Csum: true})), false, 1},
		{"bad, DATA_VALID", false, valid, offloadtest.Build(inbound(offloadtest.Packet{UDP: true, Payload: pay, BadL4Csum: true})), true, 0},
		{"partial, NEEDS_CSUM", false, needs4, offloadtest.Build(inbound(offloadtest.Packet{UDP: true, Payload: pay, PartialL4Csum: true})), true, 0},
		{"bad IPv4 header checksum", false, dataplane.VnetHdr{}, badIPHdr, false, 1},
		{"IPv4 zero UDP checksum", false, dataplane.VnetHdr{}, offloadtest.Build(inbound(offloadtest.Packet{UDP: true, Payload: pay, NoL4Csum: true})), true, 0},
		{"v6 good, no flags", true, dataplane.VnetHdr{}, offloadtest.Build(inbound(offloadtest.Packet{UDP: true, V6: true, Payload: pay})), true, 0},
		{"v6 bad, no flags", true, dataplane.VnetHdr{}, offloadtest.Build(inbound(offloadtest.Packet{UDP: true, V6: true, Payload: pay, BadL4Csum: true})), false, 1},
		{"v6 zero UDP checksum", true, dataplane.VnetHdr{}, offloadtest.Build(inbound(offloadtest.Packet{UDP: true, V6: true, Payload: pay, NoL4Csum: true})), false, 1},
		{"v6 partial, NEEDS_CSUM", true, needs6, offloadtest.Build(inbound(offloadtest.Packet{UDP: true, V6: true, Payload: pay, PartialL4Csum: true})), true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := p.ep.Stats().RxErrors
			p.expect(t, tc.v6, tc.h, tc.frame, pay, tc.delivered)
			if got := p.ep.Stats().RxErrors - before; got != tc.errors {
				t.Errorf("RxErrors +%d, want +%d", got, tc.errors)
			}
		})
	}
}

// The other trust modes: with RXChecksumOffload nothing is verified; with
// neither a virtio_net_hdr nor GRO the stack verifies, and counts.
func TestRXChecksumTrustModes(t *testing.T) {
	pay := []byte("a datagram with a wrong checksum")
	bad := offloadtest.Build(inbound(offloadtest.Packet{UDP: true, Payload: pay, BadL4Csum: true}))
	t.Run("trust all", func(t *testing.T) {
		p := newPairStack(t, Options{RXChecksumOffload: true})
		p.expect(t, false, dataplane.VnetHdr{}, bad, pay, true)
	})
	t.Run("stack verifies", func(t *testing.T) {
		p := newPairStack(t, Options{})
		if p.ep.Capabilities()&stack.CapabilityRXChecksumOffload != 0 {
			t.Fatal("RX checksum offload advertised with nobody verifying")
		}
		p.expect(t, false, dataplane.VnetHdr{}, bad, pay, false)
		if n := p.s.Stats().UDP.ChecksumErrors.Value(); n != 1 {
			t.Errorf("stack counted %d UDP checksum errors, want 1", n)
		}
		if n := p.ep.Stats().RxErrors; n != 0 {
			t.Errorf("endpoint counted %d errors; the stack's to count", n)
		}
	})
	t.Run("gro verifies tcp", func(t *testing.T) {
		p := newPairStack(t, Options{GRO: true})
		ln, err := gonet.ListenTCP(p.s, tcpip.FullAddress{NIC: 1, Addr: stackAddr4, Port: 2000}, ipv4.ProtocolNumber)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		syn := func(bad bool) []byte {
			return offloadtest.Build(inbound(offloadtest.Packet{Flags: offloadtest.SYN, Seq: 1000, SrcPort: 3333, BadL4Csum: bad,
				TCPOpts: []byte{2, 4, 0x05, 0xb4}}))
		}
		p.send(t, dataplane.VnetHdr{}, syn(true))
		p.send(t, dataplane.VnetHdr{}, syn(false))
		// Only the good SYN is answered: the first frame out is its
		// SYN-ACK, and the bad one was counted.
		_, fs := readFrames(t, p.peer, 1, false)
		th := header.TCP(fs[0][34:])
		if !th.Flags().Contains(header.TCPFlagSyn|header.TCPFlagAck) || th.AckNumber() != 1001 {
			t.Errorf("first frame out is not the SYN-ACK of the good SYN: flags %v ack %d", th.Flags(), th.AckNumber())
		}
		if n := p.ep.Stats().RxErrors; n != 1 {
			t.Errorf("RxErrors %d, want 1 for the bad SYN", n)
		}
		if gs := p.ep.GROStats(); gs.Frames[6] != 1 {
			t.Errorf("GRO saw %d bad checksums, want 1: %+v", gs.Frames[6], gs)
		}
	})
}

// Malformed virtio_net_hdrs are rejected and counted, never acted on, and
// the endpoint goes on working.
func TestMalformedVnetHeaders(t *testing.T) {
	p := newPairStack(t, Options{VnetHdr: true})
	pay := offloadtest.Payload(0, 1000)
	tcp4 := offloadtest.Build(inbound(offloadtest.Packet{Payload: pay, PartialL4Csum: true}))
	udp6 := offloadtest.Build(inbound(offloadtest.Packet{UDP: true, V6: true, Payload: pay, PartialL4Csum: true}))
	small := offloadtest.Build(inbound(offloadtest.Packet{Payload: make([]byte, 46)}))
	for _, tc := range []struct {
		name  string
		h     dataplane.VnetHdr
		frame []byte
	}{
		{"gso_size 0", dataplane.VnetHdr{Flags: 1, GSOType: dataplane.VnetGSOTCPv4, HdrLen: 54, CsumStart: 34, CsumOffset: 16}, tcp4},
		{"hdr_len beyond the frame", dataplane.VnetHdr{Flags: 1, GSOType: dataplane.VnetGSOTCPv4, HdrLen: 5000, GSOSize: 500, CsumStart: 34, CsumOffset: 16}, tcp4},
		{"csum_start beyond the frame", dataplane.VnetHdr{Flags: 1, CsumStart: 2000, CsumOffset: 16}, tcp4},
		{"csum_start in the IP header", dataplane.VnetHdr{Flags: 1, CsumStart: 20, CsumOffset: 16}, tcp4},
		{"64 KiB segments in a 100-byte frame", dataplane.VnetHdr{Flags: 1, GSOType: dataplane.VnetGSOTCPv4, HdrLen: 54, GSOSize: 65535, CsumStart: 34, CsumOffset: 16}, small},
		{"tcpv4 gso on an ipv6 frame", dataplane.VnetHdr{Flags: 1, GSOType: dataplane.VnetGSOTCPv4, HdrLen: 62, GSOSize: 500, CsumStart: 54, CsumOffset: 6}, udp6},
		{"udp_l4 gso on tcp", dataplane.VnetHdr{Flags: 1, GSOType: dataplane.VnetGSOUDPL4, HdrLen: 42, GSOSize: 500, CsumStart: 34, CsumOffset: 16}, tcp4},
		{"unknown gso type", dataplane.VnetHdr{GSOType: 2, GSOSize: 500}, tcp4},
		{"shorter than a virtio_net_hdr", dataplane.VnetHdr{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := p.ep.Stats().RxErrors
			if tc.frame == nil {
				if _, err := unix.Write(p.peer, []byte{0, 0, 0, 0, 0}); err != nil {
					t.Fatal(err)
				}
				p.expect(t, false, dataplane.VnetHdr{}, offloadtest.Build(inbound(offloadtest.Packet{UDP: true, Payload: []byte("after")})), []byte("after"), true)
			} else {
				// Same flow as the marker, so order is kept: the
				// marker arriving first means the frame was dropped.
				p.expect(t, false, tc.h, tc.frame, nil, false)
			}
			if got := p.ep.Stats().RxErrors - before; got != 1 {
				t.Errorf("RxErrors +%d, want +1", got)
			}
		})
	}
}

// A UDP_L4 super-datagram (what a veth or a USO TUN hands over from a
// socket using UDP_SEGMENT) reaches the stack as its datagrams.
func TestRXSplitsUSO(t *testing.T) {
	for _, gro := range []bool{false, true} {
		for _, v6 := range []bool{false, true} {
			t.Run(fmt.Sprintf("gro=%t/ipv6=%t", gro, v6), func(t *testing.T) {
				p := newPairStack(t, Options{VnetHdr: true, GRO: gro})
				const seg = 500
				pay := offloadtest.Payload(0, 3*seg+123)
				f := offloadtest.Build(inbound(offloadtest.Packet{UDP: true, V6: v6, Payload: pay, PartialL4Csum: true}))
				l4 := 34
				if v6 {
					l4 = 54
				}
				p.send(t, dataplane.VnetHdr{Flags: 1, GSOType: dataplane.VnetGSOUDPL4, HdrLen: uint16(l4 + 8), GSOSize: seg,
					CsumStart: uint16(l4), CsumOffset: 6}, f)
				for i := 0; i*seg < len(pay); i++ {
					want := pay[i*seg : min((i+1)*seg, len(pay))]
					if got := p.recv(t, v6); !bytes.Equal(got, want) {
						t.Fatalf("datagram %d: %d bytes, want %d of the super-datagram's", i, len(got), len(want))
					}
				}
				if n := p.ep.Stats().RxErrors; n != 0 {
					t.Errorf("RxErrors %d", n)
				}
			})
		}
	}
}
