package fdbased

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/testenv"
	"github.com/sluicenet/sluice/qdisc"
)

// gsoConfig is one GSO setting of the offload matrix.
type gsoConfig struct {
	name string
	opts Options
}

var gsoConfigs = []gsoConfig{
	// No GSO: without a virtio_net_hdr nothing tells partial checksums
	// apart, and the peer's veth passes TSO super-frames whole with
	// theirs partial, so inbound checksums are trusted, as runsc does.
	{"gso=none", Options{RXChecksumOffload: true}},
	// Host GSO: inbound trust comes from the virtio_net_hdr flags; what
	// nothing vouches for is verified by the endpoint.
	{"gso=host", Options{GSOMaxSize: 65536}},
	// Software GSO over a plain socket: full checksums both ways.
	{"gso=software", Options{GSOMaxSize: 65536, GVisorGSOEnabled: true, RXChecksumOffload: true}},
}

// TestOffloadMatrixSHA256 moves 100 MB each way, IPv4 and IPv6, through
// every GSO setting with GRO off and on, and checks that each offload did
// what it says: host GSO sends super-frames, software GSO only MTU-sized
// frames, GRO coalesces when the peer sends MTU-sized segments.
func TestOffloadMatrixSHA256(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "ethtool")
	for _, g := range gsoConfigs {
		for _, groOn := range []bool{false, true} {
			for _, v6 := range []bool{false, true} {
				name := fmt.Sprintf("%s/gro=%t/ipv%d", g.name, groOn, map[bool]int{false: 4, true: 6}[v6])
				t.Run(name, func(t *testing.T) {
					opts := g.opts
					mode := dataplane.RecvMMsg
					if groOn {
						opts.GRO = true
						if v6 {
							// Hold flows across batches too, to
							// exercise the flush timer.
							opts.GROFlushTimeout = time.Millisecond
						}
						// Batches of a ring block give GRO more to
						// work with than recvmmsg's eight.
						mode = dataplane.PacketMMap
					}
					if g.name == "gso=none" && v6 {
						// The reference's FIFO, with backpressure.
						opts.Qdisc = qdisc.FIFO
					}
					r := newRig(t, mode, 1, opts)
					if groOn {
						// GRO matters when the peer sends MTU-sized
						// segments: with TSO the kernel sends 64 KiB
						// super-frames that need no coalescing.
						testenv.Exec(t, r.veth.NSB, "ethtool", "-K", r.veth.B, "tso", "off", "gso", "off")
					}
					addr := stackAddr4
					if v6 {
						addr = stackAddr6
					}
					transferNS(t, r.s, r.veth.NSB, addr, transferBytes)
					checkOffloadEffects(t, r, opts)
				})
			}
		}
	}
}

// checkOffloadEffects checks the endpoint's report and counters against
// the offloads its options asked for.
func checkOffloadEffects(t *testing.T, r *rig, opts Options) {
	t.Helper()
	st := r.ep.Stats()
	if st.Offloads == nil {
		t.Fatal("Stats carries no offload report")
	}
	rep := r.ep.Offloads()
	t.Logf("offloads: %s", rep)
	t.Logf("stats: rx %d pkts %d B, tx %d pkts %d B, rx errors %d dropped %d, tx errors %d dropped %d; GRO %+v; qdisc %+v",
		st.RxPackets, st.RxBytes, st.TxPackets, st.TxBytes, st.RxErrors, st.RxDropped, st.TxErrors, st.TxDropped, r.ep.GROStats(), r.ep.QdiscStats())
	host := opts.GSOMaxSize > 0 && !opts.GVisorGSOEnabled
	soft := opts.GSOMaxSize > 0 && opts.GVisorGSOEnabled
	for _, c := range []struct {
		name string
		want bool
	}{
		{dataplane.OffloadVnetHdr, host},
		{dataplane.OffloadHostGSOTCPv4, host},
		{dataplane.OffloadHostGSOTCPv6, host},
		{dataplane.OffloadSoftwareGSO, soft},
		{dataplane.OffloadGRO, opts.GRO},
		{dataplane.OffloadRxChecksum, opts.RXChecksumOffload || host || opts.GRO},
	} {
		s, ok := rep.Get(c.name)
		if !ok {
			t.Errorf("report lacks %s", c.name)
			continue
		}
		if s.Effective != c.want {
			t.Errorf("%s effective %t, want %t (%s)", c.name, s.Effective, c.want, s.Reason)
		}
	}
	if host {
		if !rep.Probed {
			t.Errorf("host GSO on a veth was not probed: %s", rep.ProbeSkipped)
		}
		for _, n := range []string{dataplane.OffloadVnetHdr, dataplane.OffloadHostGSOTCPv4, dataplane.OffloadHostGSOTCPv6} {
			if s, _ := rep.Get(n); s.Probe != dataplane.ProbeOK {
				t.Errorf("%s: probe %q (%s), want ok on a healthy kernel", n, s.Probe, s.Reason)
			}
		}
	}
	// 100 MB down through an MSS of 1448 is 72k segments; with host GSO
	// far fewer, larger frames leave, without it none above the MTU.
	avg := st.TxBytes / max(st.TxPackets, 1)
	switch {
	case host && avg < 4000:
		t.Errorf("host GSO: %d frames of %d bytes on average; super-frames did not go out whole", st.TxPackets, avg)
	case !host && avg > 1514:
		t.Errorf("%d-byte frames on average without host GSO", avg)
	}
	if rxAvg := st.RxBytes / max(st.RxPackets, 1); !opts.GRO && rxAvg < 4000 {
		// The peer's veth keeps TSO on (GRO configurations turn it
		// off), so the upload arrives in super-frames, each one packet.
		t.Errorf("%d frames of %d bytes on average received; super-frames did not arrive whole", st.RxPackets, rxAvg)
	}
	if opts.GRO {
		if gs := r.ep.GROStats(); gs.Coalesced == 0 {
			t.Errorf("GRO coalesced nothing from a peer sending MTU-sized segments: %+v", gs)
		}
	}
	if st.RxErrors != 0 {
		t.Errorf("%d receive errors on a clean link", st.RxErrors)
	}
}

// The probe turns off exactly the offload a (simulated) kernel mishandles,
// reports why, and the endpoint still moves data correctly without it.
func TestOffloadProbeFaults(t *testing.T) {
	testenv.RequireRoot(t)
	drop := func(which dataplane.ProbeTest) func(dataplane.ProbeTest, []dataplane.ProbeObservation) []dataplane.ProbeObservation {
		return func(test dataplane.ProbeTest, obs []dataplane.ProbeObservation) []dataplane.ProbeObservation {
			if test == which {
				return nil
			}
			return obs
		}
	}
	corrupt := func(which dataplane.ProbeTest) func(dataplane.ProbeTest, []dataplane.ProbeObservation) []dataplane.ProbeObservation {
		return func(test dataplane.ProbeTest, obs []dataplane.ProbeObservation) []dataplane.ProbeObservation {
			if test != which {
				return obs
			}
			var out []dataplane.ProbeObservation
			for _, o := range obs {
				o.Data = append([]byte(nil), o.Data...)
				o.Data[len(o.Data)-1] ^= 0xff
				o.Vnet.Flags &^= dataplane.VnetFlagNeedsCsum
				out = append(out, o)
			}
			return out
		}
	}
	for _, tc := range []struct {
		name   string
		opts   Options
		fault  func(dataplane.ProbeTest, []dataplane.ProbeObservation) []dataplane.ProbeObservation
		failed string          // the offload whose probe fails
		on     map[string]bool // effective states to check
		vnet   bool            // PACKET_VNET_HDR left on the socket
	}{
		{"tcpv6 gso frames dropped", Options{GSOMaxSize: 65536}, drop(dataplane.ProbeGSOTCPv6), dataplane.OffloadHostGSOTCPv6,
			map[string]bool{dataplane.OffloadHostGSOTCPv4: true, dataplane.OffloadHostGSOTCPv6: false, dataplane.OffloadSoftwareGSO: true, dataplane.OffloadVnetHdr: true}, true},
		{"tcpv4 gso frames corrupted", Options{GSOMaxSize: 65536}, corrupt(dataplane.ProbeGSOTCPv4), dataplane.OffloadHostGSOTCPv4,
			map[string]bool{dataplane.OffloadHostGSOTCPv4: false, dataplane.OffloadHostGSOTCPv6: true, dataplane.OffloadSoftwareGSO: true}, true},
		{"partial checksums not completed", Options{GSOMaxSize: 65536, TXChecksumOffload: true}, corrupt(dataplane.ProbeChecksum), dataplane.OffloadTxChecksum,
			map[string]bool{dataplane.OffloadTxChecksum: false, dataplane.OffloadHostGSOTCPv4: false, dataplane.OffloadHostGSOTCPv6: false, dataplane.OffloadSoftwareGSO: true, dataplane.OffloadVnetHdr: true}, true},
		{"virtio_net_hdr frames mangled", Options{GSOMaxSize: 65536, RXChecksumOffload: true}, corrupt(dataplane.ProbePlain), dataplane.OffloadVnetHdr,
			map[string]bool{dataplane.OffloadVnetHdr: false, dataplane.OffloadHostGSOTCPv4: false, dataplane.OffloadSoftwareGSO: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			opts.probeFault = tc.fault
			var logs logBuffer
			opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			r := newRig(t, dataplane.RecvMMsg, 1, opts)
			rep := r.ep.Offloads()
			t.Logf("offloads: %s", rep)
			s, _ := rep.Get(tc.failed)
			if s.Probe != dataplane.ProbeFailed || !strings.HasPrefix(s.Reason, "probe: ") {
				t.Errorf("%s: probe %q reason %q, want a failed probe with its reason", tc.failed, s.Probe, s.Reason)
			}
			for name, want := range tc.on {
				if got, _ := rep.Get(name); got.Effective != want {
					t.Errorf("%s effective %t, want %t (%s)", name, got.Effective, want, got.Reason)
				}
			}
			for _, o := range rep.Offloads {
				if o.Name != tc.failed && o.Probe == dataplane.ProbeFailed {
					t.Errorf("%s failed too; only %s is broken", o.Name, tc.failed)
				}
			}
			if !strings.Contains(logs.String(), "offload off") {
				t.Errorf("the decision is not logged:\n%s", logs.String())
			}
			v, err := unix.GetsockoptInt(r.fds[0], unix.SOL_PACKET, unix.PACKET_VNET_HDR)
			if err != nil || (v != 0) != tc.vnet {
				t.Errorf("PACKET_VNET_HDR = %d, %v; want on=%t", v, err, tc.vnet)
			}
			transferNS(t, r.s, r.veth.NSB, stackAddr4, 20<<20)
			transferNS(t, r.s, r.veth.NSB, stackAddr6, 20<<20)
		})
	}
}
