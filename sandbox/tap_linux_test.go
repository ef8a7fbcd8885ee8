package sandbox_test

import (
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicenet/sluice/internal/testenv"
)

// TestPCAPLogAndLogPackets downloads with curl in the sandbox under
// --pcap-log and --log-packets: tcpdump reads the capture and finds the
// flow both ways (and the ARP exchange, which an Ethernet capture holds),
// and the packet log has a decoded line for the SYN.
func TestPCAPLogAndLogPackets(t *testing.T) {
	testenv.RequireTool(t, "curl")
	testenv.RequireTool(t, "tcpdump")
	ns := serverNS(t)
	serveData(t, listen(t, ns, netip.MustParseAddrPort("10.99.0.1:8083")), 100000)
	pcap := filepath.Join(t.TempDir(), "eth0.pcap")
	r := mustRun(t, "run", "--uplink-netns", ns, "--pcap-log", pcap, "--log-packets", "--",
		"curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{size_download}", "http://10.99.0.1:8083/data")
	if r.stdout != "100000" {
		t.Fatalf("downloaded %q bytes, want 100000", r.stdout)
	}
	out, err := exec.Command("tcpdump", "-nr", pcap).CombinedOutput()
	if err != nil {
		t.Fatalf("tcpdump -r: %v\n%s", err, out)
	}
	dump := string(out)
	for _, want := range []string{
		"link-type EN10MB",
		"ARP, Request who-has 10.0.2.2 tell 10.0.2.100",
		"IP 10.0.2.100.",                  // the sandbox's packets
		"> 10.99.0.1.8083: Flags [S]",     // its SYN
		"IP 10.99.0.1.8083 > 10.0.2.100.", // the server's answers
		"10.99.0.1.8083 > 10.0.2.100.",
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("tcpdump -r output lacks %q:\n%s", want, truncate(dump, 4000))
		}
	}
	if strings.Contains(dump, "invalid") || strings.Contains(dump, "[|") {
		t.Errorf("tcpdump found malformed frames:\n%s", truncate(dump, 4000))
	}
	if !strings.Contains(r.stderr, "in ") || !strings.Contains(r.stderr, "> 10.99.0.1.8083: Flags [S]") {
		t.Errorf("--log-packets: no decoded SYN line in stderr:\n%s", truncate(r.stderr, 4000))
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
