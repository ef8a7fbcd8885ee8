package fdbased

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
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
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/testenv"
)

// Addresses from the documentation ranges: the netstack owns .1 and ::1 on
// side A (whose veth end has no kernel address), the kernel peer is .2 and
// ::2 on side B.
var (
	stackAddr4 = tcpip.AddrFrom4([4]byte{192, 0, 2, 1})
	peerAddr4  = "192.0.2.2"
	stackAddr6 = tcpip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 1})
	peerAddr6  = "2001:db8::2"
)

type rig struct {
	veth *testenv.Veth
	ep   *Endpoint
	s    *stack.Stack
	fds  []int
}

// newRig puts a netstack on side A of a fresh veth pair, reading va with
// mode over channels sockets, and gives side B the kernel address .2.
func newRig(t *testing.T, mode dataplane.Mode, channels int, opts Options) *rig {
	t.Helper()
	v := testenv.NewVeth(t)
	testenv.IP(t, v.NSB, "addr", "add", peerAddr4+"/24", "dev", v.B)
	// nodad: usable at once, not tentative for a second.
	testenv.IP(t, v.NSB, "addr", "add", peerAddr6+"/64", "dev", v.B, "nodad")
	var mac net.HardwareAddr
	testenv.Do(t, v.NSA, func() error {
		ifc, err := net.InterfaceByName(v.A)
		if err != nil {
			return err
		}
		mac = ifc.HardwareAddr
		return nil
	})
	fds, err := dataplane.OpenPacketSockets(dataplane.SocketOptions{NetNS: v.NSA, Interface: v.A, VnetHdr: opts.VnetHdr}, channels)
	if err != nil {
		t.Fatalf("open packet sockets: %v", err)
	}
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	opts.FDs = fds
	opts.MTU = 1500
	opts.EthernetHeader = true
	opts.Address = tcpip.LinkAddress(mac)
	opts.PacketDispatchMode = mode
	ep, err := NewEndpoint(opts)
	if err != nil {
		t.Fatalf("NewEndpoint: %v", err)
	}
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
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
	if err := s.AddProtocolAddress(1, tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: stackAddr4.WithPrefix(),
	}, stack.AddressProperties{}); err != nil {
		t.Fatalf("AddProtocolAddress: %v", err)
	}
	// ipv6.NewProtocol runs no duplicate address detection: the address
	// is usable at once.
	if err := s.AddProtocolAddress(1, tcpip.ProtocolAddress{
		Protocol:          ipv6.ProtocolNumber,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: stackAddr6, PrefixLen: 64},
	}, stack.AddressProperties{}); err != nil {
		t.Fatalf("AddProtocolAddress: %v", err)
	}
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: 1},
		{Destination: header.IPv6EmptySubnet, NIC: 1},
	})
	return &rig{veth: v, ep: ep, s: s, fds: fds}
}

const transferBytes = 100 << 20

// pattern is a reproducible pseudo-random stream, so that both sides can
// hash what they expect without holding 100 MB.
func pattern(seed uint64) io.Reader { return patternN(seed, transferBytes) }

// patternN is pattern of n bytes.
func patternN(seed uint64, n int64) io.Reader {
	return io.LimitReader(&prngReader{r: rand.NewChaCha8([32]byte{byte(seed)})}, n)
}

type prngReader struct{ r *rand.ChaCha8 }

func (p *prngReader) Read(b []byte) (int, error) { return p.r.Read(b) }

// transfer sends transferBytes each way between a netstack TCP server and a
// kernel client in the peer namespace, over IPv4, and checks the SHA-256 of
// both streams.
func transfer(t *testing.T, r *rig) { transferNS(t, r.s, r.veth.NSB, stackAddr4, transferBytes) }

// transferNS sends n bytes each way between a netstack TCP server on addr
// and a kernel client in namespace ns and checks the SHA-256 of both
// streams.
func transferNS(t *testing.T, s *stack.Stack, ns string, addr tcpip.Address, n int64) {
	t.Helper()
	proto := ipv4.ProtocolNumber
	if addr.Len() == 16 {
		proto = ipv6.ProtocolNumber
	}
	ln, err := gonet.ListenTCP(s, tcpip.FullAddress{NIC: 1, Addr: addr, Port: 5001}, proto)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()

	type result struct {
		up  [32]byte // what the server received
		err error
	}
	srv := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srv <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Minute))
		h := sha256.New()
		if _, err := io.CopyN(h, c, n); err != nil {
			srv <- result{err: fmt.Errorf("server read: %w", err)}
			return
		}
		var res result
		copy(res.up[:], h.Sum(nil))
		if _, err := io.Copy(c, patternN(2, n)); err != nil {
			res.err = fmt.Errorf("server write: %w", err)
		}
		srv <- res
	}()

	var conn net.Conn
	testenv.Do(t, ns, func() error {
		var err error
		conn, err = net.DialTimeout("tcp", net.JoinHostPort(addr.String(), "5001"), 10*time.Second)
		return err
	})
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Minute))
	wantUp := sha256.New()
	if _, err := io.Copy(io.MultiWriter(conn, wantUp), patternN(1, n)); err != nil {
		t.Fatalf("client write: %v", err)
	}
	gotDown := sha256.New()
	if _, err := io.CopyN(gotDown, conn, n); err != nil {
		t.Fatalf("client read: %v", err)
	}
	wantDown := sha256.New()
	io.Copy(wantDown, patternN(2, n))

	res := <-srv
	if res.err != nil {
		t.Fatal(res.err)
	}
	if !bytes.Equal(res.up[:], wantUp.Sum(nil)) {
		t.Errorf("upload: server's SHA-256 %x, sent %x", res.up, wantUp.Sum(nil))
	}
	if !bytes.Equal(gotDown.Sum(nil), wantDown.Sum(nil)) {
		t.Errorf("download: client's SHA-256 %x, sent %x", gotDown.Sum(nil), wantDown.Sum(nil))
	}
}

func TestTCPTransferSHA256(t *testing.T) {
	testenv.RequireRoot(t)
	for _, mode := range dataplane.Modes {
		for _, channels := range []int{1, 2} {
			t.Run(fmt.Sprintf("mode=%v/channels=%d", mode, channels), func(t *testing.T) {
				// RXChecksumOffload as in runsc's default: the veth
				// keeps TSO on, so super-frames with partial checksums
				// arrive whole.
				r := newRig(t, mode, channels, Options{RXChecksumOffload: true})
				transfer(t, r)
				for i, m := range r.ep.Modes() {
					if m != mode {
						t.Errorf("channel %d runs %v, asked for %v", i, m, mode)
					}
				}
				st := r.ep.Stats()
				if st.RxPackets == 0 || st.TxPackets == 0 || st.RxBytes < transferBytes || st.TxBytes < transferBytes {
					t.Errorf("stats do not account for the transfer: %+v", st)
				}
			})
		}
	}
}

func TestICMPEcho(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "ping")
	r := newRig(t, dataplane.RecvMMsg, 2, Options{})
	out := testenv.Exec(t, r.veth.NSB, "ping", "-c", "3", "-i", "0.2", "-W", "2", stackAddr4.String())
	if !strings.Contains(out, "3 received") {
		t.Errorf("ping: want 3 replies:\n%s", out)
	}
}

// TestMalformedFrames writes broken frames at the endpoint from the peer and
// checks that each is counted as an error, by the endpoint or by the stack,
// and that the endpoint still answers afterwards.
func TestMalformedFrames(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "ping")
	for _, mode := range dataplane.Modes {
		t.Run(mode.String(), func(t *testing.T) {
			r := newRig(t, mode, 1, Options{})
			var dst net.HardwareAddr = net.HardwareAddr(r.ep.LinkAddress())
			eth := func(typ uint16, payload []byte) []byte {
				f := make([]byte, 14, 14+len(payload))
				copy(f, dst)
				copy(f[6:], []byte{0x02, 0, 0, 0, 0, 1})
				f[12], f[13] = byte(typ>>8), byte(typ)
				return append(f, payload...)
			}
			ipv4Hdr := func(totalLen uint16, ihl byte) []byte {
				h := make([]byte, 20)
				h[0] = 0x40 | ihl
				h[2], h[3] = byte(totalLen>>8), byte(totalLen)
				h[8], h[9] = 64, 17
				copy(h[12:], []byte{192, 0, 2, 2})
				copy(h[16:], []byte{192, 0, 2, 1})
				return h
			}
			frames := map[string][]byte{
				"ethernet header only":         eth(0x0800, nil),
				"truncated ipv4 header":        eth(0x0800, []byte{0x45, 0, 0}),
				"ipv4 total length too large":  eth(0x0800, ipv4Hdr(9000, 5)),
				"ipv4 ihl below minimum":       eth(0x0800, ipv4Hdr(20, 2)),
				"ipv6 truncated":               eth(0x86dd, []byte{0x60, 0, 0}),
				"short frame, runt (10 bytes)": eth(0x0800, nil)[:10],
			}
			// Link-level damage is counted by the endpoint, network-level
			// damage by the stack's IP layer.
			errorsCounted := func() uint64 {
				return r.ep.Stats().RxErrors + r.s.Stats().IP.MalformedPacketsReceived.Value()
			}
			before := errorsCounted()
			send := 0
			testenv.Do(t, r.veth.NSB, func() error {
				fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					return err
				}
				defer unix.Close(fd)
				ifc, err := net.InterfaceByName(r.veth.B)
				if err != nil {
					return err
				}
				sa := &unix.SockaddrLinklayer{Ifindex: ifc.Index, Halen: 6}
				copy(sa.Addr[:], dst)
				for name, f := range frames {
					if err := unix.Sendto(fd, f, 0, sa); err != nil {
						t.Logf("%s: kernel refused to send it (%v); not counted", name, err)
						continue
					}
					send++
				}
				return nil
			})
			// Then a good exchange: the endpoint is still up.
			out := testenv.Exec(t, r.veth.NSB, "ping", "-c", "1", "-W", "3", stackAddr4.String())
			if !strings.Contains(out, "1 received") {
				t.Fatalf("endpoint stopped answering after malformed frames:\n%s", out)
			}
			after := errorsCounted()
			if got := after - before; got < uint64(send) {
				t.Errorf("%d malformed frames sent, %d counted as errors (endpoint %+v)", send, got, r.ep.Stats())
			}
		})
	}
}

func TestOptionsValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"no fds", Options{MTU: 1500}, "FDs is empty"},
		{"negative header bytes", Options{FDs: []int{0}, MTU: 1500, MaxSyscallHeaderBytes: -1}, "MaxSyscallHeaderBytes"},
		{"zero mtu", Options{FDs: []int{0}}, "MTU"},
		{"bad mac", Options{FDs: []int{0}, MTU: 1500, EthernetHeader: true, Address: "abc"}, "MAC"},
		{"gso too large", Options{FDs: []int{0}, MTU: 1500, GSOMaxSize: 1 << 20}, "GSOMaxSize"},
		{"negative gro flush timeout", Options{FDs: []int{0}, MTU: 1500, GRO: true, GROFlushTimeout: -1}, "GROFlushTimeout"},
		{"unknown qdisc", Options{FDs: []int{0}, MTU: 1500, Qdisc: 7}, "Qdisc"},
		{"negative qdisc queue", Options{FDs: []int{0}, MTU: 1500, QdiscQueueLen: -1}, "QdiscQueueLen"},
		{"unknown probe mode", Options{FDs: []int{0}, MTU: 1500, OffloadProbe: 9}, "OffloadProbe"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(&tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}
