package dataplane

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/testenv"
)

var allProbeTests = []ProbeTest{ProbePlain, ProbeChecksum, ProbeGSOTCPv4, ProbeGSOTCPv6, ProbeUSO}

// mustProbeSocket opens a packet socket with a virtio_net_hdr (or not) on
// the A side of v.
func mustProbeSocket(t testing.TB, v *testenv.Veth, vnet bool) int {
	t.Helper()
	fd, err := OpenPacketSocket(SocketOptions{NetNS: v.NSA, Interface: v.A, VnetHdr: vnet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func checkAllOK(t *testing.T, res ProbeResult, tests []ProbeTest) {
	t.Helper()
	if res.Skipped != "" {
		t.Fatalf("probe skipped: %s", res.Skipped)
	}
	if len(res.Verdicts) != len(tests) {
		t.Fatalf("%d verdicts for %d tests: %+v", len(res.Verdicts), len(tests), res.Verdicts)
	}
	for i, v := range res.Verdicts {
		if v.Test != tests[i] {
			t.Errorf("verdict %d is for %v, want %v", i, v.Test, tests[i])
		}
		if !v.OK {
			t.Errorf("%v: failed on a healthy kernel: %s", v.Test, v.Reason)
		}
	}
}

// On a healthy kernel every offload checks out on a veth, whether the
// kernel passes super-frames whole (tso on, the default), segments them in
// software (tso off) or completes checksums itself (tx off).
func TestProbeOffloadsVeth(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "ethtool")
	for _, tc := range []struct {
		name    string
		ethtool []string
	}{
		{"default offloads", nil},
		{"tso off", []string{"tso", "off"}},
		{"tx checksum off", []string{"tx", "off"}},
		{"gso and tso off", []string{"tso", "off", "gso", "off", "tx-udp-segmentation", "off"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := quietVeth(t)
			if tc.ethtool != nil {
				testenv.Exec(t, v.NSA, "ethtool", append([]string{"-K", v.A}, tc.ethtool...)...)
			}
			fd := mustProbeSocket(t, v, true)
			res, err := ProbeOffloads(ProbeOptions{FD: fd, EthernetHeader: true, VnetHdr: true, Tests: allProbeTests})
			if err != nil {
				t.Fatal(err)
			}
			if res.Device != v.A || res.Driver != "veth" {
				t.Errorf("device %q driver %q, want %q veth", res.Device, res.Driver, v.A)
			}
			checkAllOK(t, res, allProbeTests)
		})
	}
}

// A kernel that loses or corrupts offloaded frames fails exactly the tests
// it breaks, with a reason that says what was wrong.
func TestProbeOffloadsFault(t *testing.T) {
	testenv.RequireRoot(t)
	v := quietVeth(t)
	fd := mustProbeSocket(t, v, true)
	for _, tc := range []struct {
		name   string
		broken ProbeTest
		fault  func([]ProbeObservation) []ProbeObservation
		reason string
	}{
		{"gso frames dropped", ProbeGSOTCPv4, func([]ProbeObservation) []ProbeObservation { return nil }, "not seen leaving"},
		{"gso payload corrupted", ProbeGSOTCPv6, func(obs []ProbeObservation) []ProbeObservation {
			o := obs[len(obs)-1]
			o.Data = append([]byte(nil), o.Data...)
			o.Data[len(o.Data)-7] ^= 0x40
			return append(obs[:len(obs)-1:len(obs)-1], o)
		}, "payload byte"}, // a partial checksum, completed, cannot tell; the bytes can
		{"checksum left unseeded", ProbeChecksum, func(obs []ProbeObservation) []ProbeObservation {
			// The kernel "completes" a checksum whose pseudo-header
			// seed it ignored: a zero field summed over the segment.
			var out []ProbeObservation
			for _, o := range obs {
				o.Data = append([]byte(nil), o.Data...)
				l4 := 14 + 20
				o.Data[l4+16], o.Data[l4+17] = 0, 0
				o.Vnet.Flags &^= VnetFlagNeedsCsum
				out = append(out, o)
			}
			return out
		}, "TCP checksum"},
		{"last segment lost", ProbeUSO, func(obs []ProbeObservation) []ProbeObservation {
			if len(obs) > 1 {
				return obs[:len(obs)-1]
			}
			// Passed whole: cut the super-datagram short instead.
			return nil
		}, "missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := ProbeOffloads(ProbeOptions{FD: fd, EthernetHeader: true, VnetHdr: true, Tests: allProbeTests,
				Fault: func(test ProbeTest, obs []ProbeObservation) []ProbeObservation {
					if test != tc.broken {
						return obs
					}
					return tc.fault(obs)
				}})
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range res.Verdicts {
				if v.Test != tc.broken {
					if !v.OK {
						t.Errorf("%v failed, only %v is broken: %s", v.Test, tc.broken, v.Reason)
					}
					continue
				}
				if v.OK {
					t.Errorf("%v passed with the fault injected", v.Test)
				} else if !strings.Contains(v.Reason, tc.reason) && !strings.Contains(v.Reason, "not seen") {
					t.Errorf("%v: reason %q does not mention %q", v.Test, v.Reason, tc.reason)
				}
				t.Logf("%v: %s", v.Test, v.Reason)
			}
		})
	}
}

// The probe never sends where it should not: not on a device that is not a
// veth or a TUN, not without a virtio_net_hdr, not on something that is not
// a device at all.
func TestProbeOffloadsSkips(t *testing.T) {
	testenv.RequireRoot(t)
	v := quietVeth(t)
	lo, err := OpenPacketSocket(SocketOptions{NetNS: v.NSA, Interface: "lo", VnetHdr: true})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(lo)
	a, _ := mustSocketpair(t, unix.SOCK_DGRAM)
	for _, tc := range []struct {
		name string
		o    ProbeOptions
		want string
	}{
		{"loopback", ProbeOptions{FD: lo, EthernetHeader: true, VnetHdr: true}, "only sends on veth and tun"},
		{"no virtio_net_hdr", ProbeOptions{FD: mustProbeSocket(t, v, false), EthernetHeader: true}, "no virtio_net_hdr"},
		{"unix socket", ProbeOptions{FD: a, VnetHdr: true}, "neither an AF_PACKET socket nor a TUN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Tests = allProbeTests
			res, err := ProbeOffloads(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(res.Skipped, tc.want) || len(res.Verdicts) != 0 {
				t.Errorf("Skipped %q with %d verdicts, want a skip mentioning %q", res.Skipped, len(res.Verdicts), tc.want)
			}
		})
	}
	t.Run("device that transmits nothing", func(t *testing.T) {
		// A qdisc that drops every frame stands for a device that does
		// not transmit (just brought up, its qdisc not attached yet; or
		// a veth whose peer went down, once the link watcher has
		// noticed): that says nothing about offloads, so the probe skips
		// instead of failing them all.
		testenv.RequireTool(t, "tc")
		fd := mustProbeSocket(t, v, true)
		testenv.Exec(t, v.NSA, "tc", "qdisc", "add", "dev", v.A, "root", "pfifo", "limit", "0")
		defer testenv.Exec(t, v.NSA, "tc", "qdisc", "del", "dev", v.A, "root")
		res, err := ProbeOffloads(ProbeOptions{FD: fd, EthernetHeader: true, VnetHdr: true, Tests: allProbeTests})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(res.Skipped, "not transmitting") || len(res.Verdicts) != 0 {
			t.Errorf("Skipped %q with %d verdicts, want a skip: the device transmits nothing", res.Skipped, len(res.Verdicts))
		}
	})
	t.Run("device down", func(t *testing.T) {
		fd := mustProbeSocket(t, v, true)
		testenv.IP(t, v.NSA, "link", "set", v.A, "down")
		defer testenv.IP(t, v.NSA, "link", "set", v.A, "up")
		res, err := ProbeOffloads(ProbeOptions{FD: fd, EthernetHeader: true, VnetHdr: true, Tests: allProbeTests})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(res.Skipped, "down") {
			t.Errorf("Skipped %q, want the device down", res.Skipped)
		}
	})
}

// On a TUN the probe frames enter the kernel, and the same watcher sees them
// arrive with their offload metadata.
func TestProbeOffloadsTUN(t *testing.T) {
	testenv.RequireRoot(t)
	ns := testenv.NewNS(t)
	fds, err := OpenTUN(TUNOptions{NetNS: ns, Name: "sltun0", VnetHdr: true,
		Offloads: TUNOffloadCsum | TUNOffloadTSO4 | TUNOffloadTSO6 | TUNOffloadUSO4 | TUNOffloadUSO6})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	testenv.IP(t, ns, "link", "set", "sltun0", "up")
	res, err := ProbeOffloads(ProbeOptions{FD: fds[0], VnetHdr: true, Tests: allProbeTests})
	if err != nil {
		t.Fatal(err)
	}
	if res.Device != "sltun0" || res.Driver != "tun" {
		t.Errorf("device %q driver %q, want sltun0 tun", res.Device, res.Driver)
	}
	checkAllOK(t, res, allProbeTests)
}

func TestOpenTUN(t *testing.T) {
	testenv.RequireRoot(t)
	ns := testenv.NewNS(t)
	t.Run("multi-queue", func(t *testing.T) {
		fds, err := OpenTUN(TUNOptions{NetNS: ns, Name: "slmq0", VnetHdr: true, MultiQueue: true, Queues: 3,
			Offloads: TUNOffloadCsum | TUNOffloadTSO4})
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}()
		if len(fds) != 3 {
			t.Fatalf("%d descriptors, want 3", len(fds))
		}
		for _, fd := range fds {
			info, err := TUNInfoOf(fd)
			if err != nil {
				t.Fatal(err)
			}
			if info != (TUNInfo{Name: "slmq0", VnetHdr: true, Multi: true}) {
				t.Errorf("TUNInfoOf = %+v", info)
			}
		}
		out := testenv.IP(t, ns, "-d", "link", "show", "slmq0")
		if !strings.Contains(out, "multi_queue") && !strings.Contains(out, "numtxqueues") {
			t.Logf("ip link output does not show the queues:\n%s", out)
		}
	})
	t.Run("kernel-chosen name, no vnet header", func(t *testing.T) {
		fds, err := OpenTUN(TUNOptions{NetNS: ns})
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fds[0])
		info, err := TUNInfoOf(fds[0])
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(info.Name, "tun") || info.VnetHdr {
			t.Errorf("TUNInfoOf = %+v, want a tunN device without IFF_VNET_HDR", info)
		}
	})
	for _, tc := range []struct {
		name string
		o    TUNOptions
		want string
	}{
		{"uso4 without uso6", TUNOptions{VnetHdr: true, Offloads: TUNOffloadCsum | TUNOffloadUSO4}, "USO4 and USO6"},
		{"offloads without vnet", TUNOptions{Offloads: TUNOffloadCsum}, "without VnetHdr"},
		{"tso without csum", TUNOptions{VnetHdr: true, Offloads: TUNOffloadTSO4}, "need TUNOffloadCsum"},
		{"queues without multi-queue", TUNOptions{Queues: 2}, "without MultiQueue"},
		{"long name", TUNOptions{Name: "abcdefghijklmnop"}, "IFNAMSIZ"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.NetNS = ns
			fds, err := OpenTUN(tc.o)
			for _, fd := range fds {
				unix.Close(fd)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("OpenTUN = %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
	t.Run("kernel refuses uso4 alone", func(t *testing.T) {
		// The rule OpenTUN enforces is the kernel's (KERNEL-NOTES item
		// 9): ask the kernel directly.
		fds, err := OpenTUN(TUNOptions{NetNS: ns, VnetHdr: true})
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fds[0])
		err = unix.IoctlSetInt(fds[0], unix.TUNSETOFFLOAD, int(TUNOffloadCsum|TUNOffloadUSO4))
		if !errors.Is(err, unix.EINVAL) {
			t.Errorf("TUNSETOFFLOAD csum|uso4 = %v, want EINVAL", err)
		}
	})
	t.Run("not a tun", func(t *testing.T) {
		a, _ := mustSocketpair(t, unix.SOCK_DGRAM)
		if _, err := TUNInfoOf(a); !errors.Is(err, ErrNotSupported) {
			t.Errorf("TUNInfoOf(unix socket) = %v, want ErrNotSupported", err)
		}
	})
}
