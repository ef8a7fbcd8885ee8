package fdbased

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/testenv"
)

// logBuffer collects a logger's output for a test to read.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestTUNTransferSHA256 runs kernel TCP through a TUN device to a netstack
// address, 100 MB each way, with host GSO on (IFF_VNET_HDR, TSO offloads:
// the kernel reads and writes super-frames, csum_start relative to the IP
// header) and off. mmap dispatch is asked for and must fall back, saying so.
func TestTUNTransferSHA256(t *testing.T) {
	testenv.RequireRoot(t)
	for _, host := range []bool{false, true} {
		t.Run(fmt.Sprintf("host-gso=%t", host), func(t *testing.T) {
			ns := testenv.NewNS(t)
			to := dataplane.TUNOptions{NetNS: ns, Name: "sltun0"}
			if host {
				to.VnetHdr = true
				to.Offloads = dataplane.TUNOffloadCsum | dataplane.TUNOffloadTSO4 | dataplane.TUNOffloadTSO6
			}
			fds, err := dataplane.OpenTUN(to)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Close(fds[0]) })
			testenv.IP(t, ns, "addr", "add", peerAddr4+"/24", "dev", "sltun0")
			testenv.IP(t, ns, "link", "set", "sltun0", "up")

			var logs logBuffer
			opts := Options{
				FDs:                fds,
				MTU:                1500,
				PacketDispatchMode: dataplane.PacketMMap,
				Logger:             slog.New(slog.NewTextHandler(&logs, nil)),
			}
			if host {
				opts.GSOMaxSize = 65536
			}
			ep, err := NewEndpoint(opts)
			if err != nil {
				t.Fatal(err)
			}
			s := stack.New(stack.Options{
				NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
				TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
			})
			t.Cleanup(func() {
				// Endpoint first: see newRig.
				ep.Close()
				ep.Wait()
				s.Close()
				s.Wait()
			})
			if err := s.CreateNIC(1, ep); err != nil {
				t.Fatalf("CreateNIC: %v", err)
			}
			if err := s.AddProtocolAddress(1, tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: stackAddr4.WithPrefix()}, stack.AddressProperties{}); err != nil {
				t.Fatal(err)
			}
			s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: 1}})

			if m := ep.Modes(); len(m) != 1 || m[0] != dataplane.Readv {
				t.Errorf("a TUN descriptor runs %v, want readv after falling back", m)
			}
			if l := logs.String(); !strings.Contains(l, "falls back") || !strings.Contains(l, `requested=mmap`) || !strings.Contains(l, "dispatch=readv") {
				t.Errorf("the fallback and the chosen mode are not logged:\n%s", l)
			}

			transferNS(t, s, ns, stackAddr4, transferBytes)

			st := ep.Stats()
			rep := ep.Offloads()
			t.Logf("offloads: %s (probed %t on %s/%s)", rep, rep.Probed, rep.Device, rep.Driver)
			t.Logf("stats: rx %d pkts %d B, tx %d pkts %d B, errors rx %d tx %d", st.RxPackets, st.RxBytes, st.TxPackets, st.TxBytes, st.RxErrors, st.TxErrors)
			rxAvg, txAvg := st.RxBytes/max(st.RxPackets, 1), st.TxBytes/max(st.TxPackets, 1)
			if host {
				if !rep.Probed || rep.Driver != "tun" || !rep.Effective(dataplane.OffloadHostGSOTCPv4) {
					t.Errorf("host GSO on a TUN: probed %t driver %q: %s", rep.Probed, rep.Driver, rep)
				}
				if rxAvg < 4000 || txAvg < 4000 {
					t.Errorf("super-frames did not cross the TUN whole: %d-byte reads, %d-byte writes on average", rxAvg, txAvg)
				}
			} else if rxAvg > 1500 || txAvg > 1500 {
				t.Errorf("frames above the MTU without offloads: %d-byte reads, %d-byte writes", rxAvg, txAvg)
			}
			if st.RxErrors != 0 || st.TxErrors != 0 {
				t.Errorf("errors: %+v", st)
			}
		})
	}
}
