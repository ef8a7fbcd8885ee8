package sandbox_test

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sluicenet/sluice/internal/testenv"
	"github.com/sluicenet/sluice/sandbox"
)

// xdpTransferSize is what each --xdp download moves.
const xdpTransferSize = 100 << 20

// readReport reads a --stats-file.
func readReport(t *testing.T, path string) sandbox.Report {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rep sandbox.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("stats file %s: %v", b, err)
	}
	return rep
}

// linkStats returns the counters of the link called name in rep.
func linkStats(t *testing.T, rep sandbox.Report, name string) sandbox.LinkStats {
	t.Helper()
	for _, l := range rep.Interfaces {
		if l.Name == name {
			return l
		}
	}
	t.Fatalf("no link %s in the stats: %+v", name, rep.Interfaces)
	return sandbox.LinkStats{}
}

// checkXDPLink checks that a link ran AF_XDP in copy mode (veth has no
// zero-copy) with queues sockets, and carried at least minTx bytes to the
// sandbox or the LAN.
func checkXDPLink(t *testing.T, st sandbox.LinkStats, queues int, minTx uint64) {
	t.Helper()
	if st.XDP == nil {
		t.Fatalf("%s: no AF_XDP counters in the stats: %+v", st.Name, st)
	}
	if st.XDP.Mode != "copy" || st.XDP.Queues != queues {
		t.Errorf("%s: %d queues in %s mode, want %d in copy mode", st.Name, st.XDP.Queues, st.XDP.Mode, queues)
	}
	if len(st.Modes) != queues {
		t.Errorf("%s: modes %v, want one per queue (%d)", st.Name, st.Modes, queues)
	}
	for _, m := range st.Modes {
		if m != "xdp-copy" {
			t.Errorf("%s: a queue ran %q, want xdp-copy", st.Name, m)
		}
	}
	if st.TxBytes < minTx || st.RxPackets == 0 {
		t.Errorf("%s: counters %+v: want tx bytes >= %d and some rx packets", st.Name, st.Stats, minTx)
	}
	if st.RxErrors != 0 {
		t.Errorf("%s: %d receive errors", st.Name, st.RxErrors)
	}
}

// TestXDPNSDownload: with --xdp ns the stack reads the sandbox's veth with
// AF_XDP. curl in the sandbox downloads 100 MB over IPv4 and IPv6 from a
// server in the uplink namespace and the SHA-256 matches; --stats says
// AF_XDP in copy mode, one socket per --num-network-channels; eth0 gets the
// largest MTU AF_XDP allows on a veth; ping reaches the gateway and the
// server.
func TestXDPNSDownload(t *testing.T) {
	testenv.RequireTool(t, "curl", "sha256sum", "ping", "ip")
	ns := serverNS(t)
	sum := serveData(t, listen(t, ns, netip.AddrPortFrom(server4, 8090)), xdpTransferSize)
	serveData(t, listen(t, ns, netip.AddrPortFrom(server6, 8090)), xdpTransferSize)
	for _, tc := range []struct {
		name   string
		url    string
		queues int
		more   []string
	}{
		{"ipv4", "http://10.99.0.1:8090/data", 1, nil},
		{"ipv6", "http://[fd99::1]:8090/data", 1, nil},
		{"two queues", "http://10.99.0.1:8090/data", 2, []string{"--num-network-channels=2"}},
		{"gro, no need_wakeup", "http://[fd99::1]:8090/data", 1, []string{"--gvisor-gro", "--xdp-need-wakeup=false"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			statsFile := filepath.Join(t.TempDir(), "stats.json")
			args := append([]string{"run", "--uplink-netns", ns, "--xdp", "ns", "--stats", "--stats-file", statsFile}, tc.more...)
			args = append(args, "--", "sh", "-c", "ip -o link show eth0; curl -sS -g --max-time 90 "+tc.url+" | sha256sum")
			r := mustRun(t, args...)
			if !strings.Contains(r.stdout, sum) {
				t.Fatalf("sha256 inside the sandbox: %q, want %s\nstderr: %s", r.stdout, sum, r.stderr)
			}
			if want := "mtu " + strconv.Itoa(sandbox.XDPVethMaxMTU) + " "; !strings.Contains(r.stdout, want) {
				t.Errorf("eth0 inside the sandbox: %q, want %q (the automatic MTU with --xdp ns)", r.stdout, want)
			}
			if !strings.Contains(r.stderr, "AF_XDP: "+strconv.Itoa(tc.queues)+" queues in copy mode") {
				t.Errorf("--stats does not say AF_XDP in copy mode:\n%s", r.stderr)
			}
			rep := readReport(t, statsFile)
			if len(rep.Interfaces) != 1 {
				t.Fatalf("%d interfaces in the stats, want 1: %+v", len(rep.Interfaces), rep.Interfaces)
			}
			checkXDPLink(t, linkStats(t, rep, sandbox.StackLinkName), tc.queues, xdpTransferSize)
		})
	}
	t.Run("ping", func(t *testing.T) {
		for _, addr := range []string{"10.0.2.2", "fd00:51ce::2", server4.String(), server6.String()} {
			r := runSluice(t, "run", "--uplink-netns", ns, "--xdp", "ns", "--", "ping", "-c", "2", "-i", "0.2", "-W", "2", addr)
			if r.code != 0 || !strings.Contains(r.stdout, " 0% packet loss") {
				t.Errorf("ping %s with --xdp ns: exit %d\n%s%s", addr, r.code, r.stdout, r.stderr)
			}
		}
	})
}

// TestXDPBadInput: XDP settings that cannot work fail before the command
// starts, naming the flag.
func TestXDPBadInput(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"unknown mode", []string{"--xdp=bogus"}, []string{`"bogus"`, "ns, redirect:IFACE or tunnel:IFACE"}},
		{"redirect without an interface", []string{"--xdp=redirect"}, []string{"redirect:IFACE"}},
		{"uplink-addr garbage", []string{"--xdp=redirect:lo", "--uplink-addr=garbage"}, []string{`--uplink-addr "garbage"`, "not an address with its prefix length"}},
		{"uplink-addr without a prefix", []string{"--xdp=redirect:lo", "--uplink-addr=192.0.2.7"}, []string{`--uplink-addr "192.0.2.7"`}},
		{"uplink-addr twice for a family", []string{"--xdp=redirect:lo", "--uplink-addr=192.0.2.7/24,192.0.2.8/24"}, []string{"one per family"}},
		{"uplink-addr without xdp", []string{"--uplink-addr=192.0.2.7/24"}, []string{"--uplink-addr needs --xdp redirect:IFACE or tunnel:IFACE"}},
		{"uplink-gateway garbage", []string{"--xdp=redirect:lo", "--uplink-gateway=nope"}, []string{`--uplink-gateway "nope"`}},
		{"ns mtu too large", []string{"--xdp=ns", "--mtu=4000"}, []string{"--mtu 4000", "3506"}},
		{"ns without rx checksum trust", []string{"--xdp=ns", "--rx-checksum-offload=false"}, []string{"--rx-checksum-offload=false with --xdp ns"}},
		{"xdp with network host", []string{"--xdp=ns", "--network=host"}, []string{"--xdp ns needs --network sandbox"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			marker := filepath.Join(t.TempDir(), "ran")
			args := append([]string{"run"}, tc.args...)
			args = append(args, "--", "touch", marker)
			r := runSluice(t, args...)
			if r.code == 0 {
				t.Fatalf("sluice %q succeeded", args)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr %q lacks %q", r.stderr, w)
				}
			}
			if strings.Contains(r.stderr, "panic") {
				t.Errorf("sluice panicked:\n%s", r.stderr)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Error("the command ran")
			}
		})
	}
}
