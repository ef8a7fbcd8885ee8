package sandbox_test

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sluicenet/sluice/internal/testenv"
	"github.com/sluicenet/sluice/sandbox"
)

// TestEgressPolicy runs curl in the sandbox against two servers of the
// test's namespace: under `--deny all --allow SERVER1` the first is reached
// and the second refused with a RST (curl's "couldn't connect", exit 7, at
// once rather than after a timeout); under a CIDR deny the reverse. The
// decisions are logged and counted in the stats file.
func TestEgressPolicy(t *testing.T) {
	testenv.RequireTool(t, "curl")
	ns := serverNS(t)
	second := netip.MustParseAddr("10.99.0.2")
	testenv.IP(t, ns, "addr", "add", second.String()+"/32", "dev", "lo")
	serveData(t, listen(t, ns, netip.MustParseAddrPort("10.99.0.1:8084")), 1000)
	serveData(t, listen(t, ns, netip.AddrPortFrom(second, 8084)), 1000)
	script := `curl -sS --max-time 10 -o /dev/null -w 'first %{size_download}\n' http://10.99.0.1:8084/data; echo "first exit $?"
curl -sS --max-time 10 -o /dev/null -w 'second %{size_download}\n' http://10.99.0.2:8084/data; echo "second exit $?"`

	stats := filepath.Join(t.TempDir(), "stats.json")
	r := mustRun(t, "run", "--uplink-netns", ns, "--deny", "all", "--allow", "10.99.0.1:8084/tcp", "--log-policy",
		"--stats", "--stats-file", stats, "--", "sh", "-c", script)
	// --stats prints the per-rule counters.
	for _, re := range []string{`(?m)^policy rule\s+verdict\s+flows`, `(?m)^--allow 10\.99\.0\.1:8084/tcp\s+allow\s+1\s*$`, `(?m)^--deny all\s+deny\s+1\s*$`} {
		if !regexp.MustCompile(re).MatchString(r.stderr) {
			t.Errorf("--stats: stderr does not match %s:\n%s", re, r.stderr)
		}
	}
	if !strings.Contains(r.stdout, "first 1000\nfirst exit 0") || !strings.Contains(r.stdout, "second exit 7") {
		t.Errorf("--deny all --allow 10.99.0.1:8084/tcp: stdout %q, want the first downloaded and the second refused (exit 7)\nstderr: %s", r.stdout, r.stderr)
	}
	for _, want := range []string{
		"sluice: policy: allow tcp 10.0.2.100:", "-> 10.99.0.1:8084 (--allow 10.99.0.1:8084/tcp)",
		"sluice: policy: deny tcp 10.0.2.100:", "-> 10.99.0.2:8084 (--deny all)",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("--log-policy: stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	b, err := os.ReadFile(stats)
	if err != nil {
		t.Fatal(err)
	}
	var rep sandbox.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	want := []sandbox.PolicyStats{{Rule: "--allow 10.99.0.1:8084/tcp", Verdict: "allow", Flows: 1}, {Rule: "--deny all", Verdict: "deny", Flows: 1}}
	if len(rep.Policy) != 2 || rep.Policy[0] != want[0] || rep.Policy[1] != want[1] {
		t.Errorf("stats policy %+v, want %+v", rep.Policy, want)
	}

	// A CIDR deny, JSON decisions.
	r = mustRun(t, "run", "--uplink-netns", ns, "--deny", "10.99.0.2/31", "--allow", "10.99.0.1", "--log-policy-json", "--", "sh", "-c", script)
	if !strings.Contains(r.stdout, "first exit 0") || !strings.Contains(r.stdout, "second exit 7") {
		t.Errorf("--deny 10.99.0.2/31: stdout %q, want the first downloaded and the second refused\nstderr: %s", r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, `"verdict":"deny","proto":"tcp"`) || !strings.Contains(r.stderr, `"rule":"--deny 10.99.0.2/31"`) {
		t.Errorf("--log-policy-json: stderr lacks the deny record:\n%s", r.stderr)
	}

	// Bad values fail before the command starts, naming the flag.
	for _, bad := range [][]string{{"--allow", "10.99.0.1:http"}, {"--deny", "10.99.0.0/40"}, {"--dns=false", "--allow", "example.org"}} {
		r := runSluice(t, append(append([]string{"run", "--uplink-netns", ns}, bad...), "--", "true")...)
		if r.code == 0 || !strings.Contains(r.stderr, bad[0]) {
			t.Errorf("%q: exit %d, stderr %q; want a failure naming %s", bad, r.code, r.stderr, bad[0])
		}
	}
}
