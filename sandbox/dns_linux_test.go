package sandbox_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/sluicenet/sluice/internal/testenv"
	"github.com/sluicenet/sluice/sandbox"
)

// answer is the test resolver: svc.test is a CNAME chain to real.test
// (10.99.0.1); other.test is 10.99.0.2; big.test answers over UDP with
// the TC bit and nothing else, so that a client must retry over TCP
// (10.99.0.3); bad.test answers garbage; a.sub.test and x.y.sub.test are
// 10.99.0.1, sub.test 10.99.0.2, and nx.sub.test does not exist;
// v6.test has only an AAAA record, fd99::1.
func answer(q []byte, overTCP bool) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil {
		return nil
	}
	question, err := p.Question()
	if err != nil {
		return nil
	}
	name := strings.ToLower(question.Name.String())
	if name == "bad.test." {
		return []byte{byte(h.ID >> 8), byte(h.ID), 0x81, 0x80, 0, 1, 0, 5, 0xde, 0xad} // claims 5 answers, has none
	}
	rcode := dnsmessage.RCodeSuccess
	if name == "nx.sub.test." {
		rcode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired, RCode: rcode})
	b.EnableCompression()
	_ = b.StartQuestions()
	_ = b.Question(question)
	_ = b.StartAnswers()
	rh := func(n string, t dnsmessage.Type) dnsmessage.ResourceHeader {
		return dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(n), Type: t, Class: dnsmessage.ClassINET, TTL: 300}
	}
	a := func(n, ip string) {
		if question.Type == dnsmessage.TypeA {
			_ = b.AResource(rh(n, dnsmessage.TypeA), dnsmessage.AResource{A: netip.MustParseAddr(ip).As4()})
		}
	}
	switch name {
	case "v6.test.":
		if question.Type == dnsmessage.TypeAAAA {
			_ = b.AAAAResource(rh(name, dnsmessage.TypeAAAA), dnsmessage.AAAAResource{AAAA: netip.MustParseAddr("fd99::1").As16()})
		}
	case "svc.test.":
		_ = b.CNAMEResource(rh("svc.test.", dnsmessage.TypeCNAME), dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName("mid.test.")})
		_ = b.CNAMEResource(rh("mid.test.", dnsmessage.TypeCNAME), dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName("real.test.")})
		a("real.test.", "10.99.0.1")
	case "other.test.":
		a("other.test.", "10.99.0.2")
	case "a.sub.test.", "x.y.sub.test.":
		a(name, "10.99.0.1")
	case "sub.test.":
		a(name, "10.99.0.2")
	case "big.test.":
		if !overTCP {
			msg, _ := b.Finish()
			msg[2] |= 0x02 // TC
			return msg
		}
		a("big.test.", "10.99.0.3")
	}
	msg, _ := b.Finish()
	return msg
}

// dnsServer serves answer on UDP and TCP at addr in ns.
func dnsServer(t *testing.T, ns string, addr string) {
	t.Helper()
	var pc net.PacketConn
	var l net.Listener
	testenv.Do(t, ns, func() error {
		var err error
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			return err
		}
		l, err = net.Listen("tcp", addr)
		return err
	})
	t.Cleanup(func() { pc.Close(); l.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if m := answer(buf[:n], false); m != nil {
				_, _ = pc.WriteTo(m, from)
			}
		}
	}()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for {
					var n [2]byte
					if _, err := io.ReadFull(c, n[:]); err != nil {
						return
					}
					q := make([]byte, binary.BigEndian.Uint16(n[:]))
					if _, err := io.ReadFull(c, q); err != nil {
						return
					}
					m := answer(q, true)
					if m == nil {
						return
					}
					_, _ = c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(m))), m...))
				}
			}()
		}
	}()
}

// TestDNS resolves through the sandbox's DNS (the gateway, from the
// generated resolv.conf) with dig and getent against a resolver in the
// test's namespace: a CNAME chain, a TCP query, a TCP fallback after a
// truncated UDP answer, and a malformed answer (passed on, counted, no
// crash).
func TestDNS(t *testing.T) {
	testenv.RequireTool(t, "dig")
	testenv.RequireTool(t, "getent")
	ns := serverNS(t)
	dnsServer(t, ns, "10.99.0.1:53")
	stats := filepath.Join(t.TempDir(), "stats.json")
	script := `cat /etc/resolv.conf
echo "svc: $(dig +short +tries=1 +time=5 svc.test A | tr '\n' ' ')"
echo "tcp: $(dig +tcp +short +tries=1 +time=5 other.test A | tr '\n' ' ')"
echo "fallback: $(dig +short +tries=1 +time=5 big.test A | tr '\n' ' ')"
echo "getent: $(getent hosts other.test)"
dig +tries=1 +time=3 bad.test A >/dev/null 2>&1; echo "bad: $?"`
	r := mustRun(t, "run", "--uplink-netns", ns, "--dns-upstream", "10.99.0.1", "--stats-file", stats, "--", "sh", "-c", script)
	t.Logf("sandbox output:\n%s", r.stdout)
	for _, want := range []string{
		"nameserver 10.0.2.2",
		"svc: mid.test. real.test. 10.99.0.1",
		"tcp: 10.99.0.2",
		"fallback: 10.99.0.3",
		"getent: 10.99.0.2",
		"bad: ", // dig fails on the garbage; sluice does not
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s\nstderr: %s", want, r.stdout, r.stderr)
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
	if d := rep.DNS; d == nil || d.QueriesUDP == 0 || d.QueriesTCP < 2 || d.Truncated == 0 || d.Malformed == 0 {
		t.Errorf("DNS stats %+v: want UDP queries, two TCP flows, a truncated and a malformed answer", d)
	}
	if got, _ := os.ReadFile("/etc/resolv.conf"); strings.Contains(string(got), "written by sluice") {
		t.Errorf("the host's /etc/resolv.conf was changed")
	}
}

// TestDomainPolicy runs `--deny all --allow svc.test`: curl reaches the
// server by that name (whose address came through a CNAME chain), while
// the other server, resolved or not, is refused with a RST.
func TestDomainPolicy(t *testing.T) {
	testenv.RequireTool(t, "curl")
	ns := serverNS(t)
	testenv.IP(t, ns, "addr", "add", "10.99.0.2/32", "dev", "lo")
	dnsServer(t, ns, "10.99.0.1:53")
	serveData(t, listen(t, ns, netip.MustParseAddrPort("10.99.0.1:8085")), 1000)
	serveData(t, listen(t, ns, netip.MustParseAddrPort("10.99.0.2:8085")), 1000)
	script := `curl -sS --max-time 10 -o /dev/null -w 'svc %{size_download}\n' http://svc.test:8085/data; echo "svc exit $?"
curl -sS --max-time 10 -o /dev/null http://other.test:8085/data; echo "other exit $?"
curl -sS --max-time 10 -o /dev/null http://10.99.0.2:8085/data; echo "addr exit $?"`
	r := mustRun(t, "run", "--uplink-netns", ns, "--dns-upstream", "10.99.0.1:53", "--deny", "all", "--allow", "svc.test", "--log-policy", "--", "sh", "-c", script)
	for _, want := range []string{"svc 1000\nsvc exit 0", "other exit 7", "addr exit 7"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s\nstderr: %s", want, r.stdout, r.stderr)
		}
	}
	if !strings.Contains(r.stderr, "-> 10.99.0.1:8085 (--allow svc.test)") || !strings.Contains(r.stderr, "deny tcp 10.0.2.100:") {
		t.Errorf("policy log:\n%s", r.stderr)
	}
}

// TestDNSNoUpstream runs sluice with the DNS service on by default on a
// host whose /etc/resolv.conf names no nameserver (an empty file
// bind-mounted over it in a mount namespace of the test's): the run
// succeeds, the command's queries over UDP and TCP get SERVFAIL at once,
// and the stats count them. With --dns=false the command keeps the host's
// resolv.conf.
func TestDNSNoUpstream(t *testing.T) {
	testenv.RequireTool(t, "dig")
	testenv.RequireTool(t, "unshare")
	ns := serverNS(t)
	dir := t.TempDir()
	empty := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(empty, []byte("# no nameserver\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	stats := filepath.Join(dir, "stats.json")
	script := `cat /etc/resolv.conf
dig +tries=1 +time=5 svc.test A | grep -o 'status: [A-Z]*' | sed 's/^/udp /'
dig +tcp +tries=1 +time=5 svc.test A | grep -o 'status: [A-Z]*' | sed 's/^/tcp /'`
	run := func(args ...string) result {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "unshare", append([]string{"-m", "sh", "-c", `mount --bind "$0" /etc/resolv.conf && exec "$@"`, empty, sluiceBin}, args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if ctx.Err() != nil {
			t.Fatalf("sluice %q timed out\nstdout: %s\nstderr: %s", args, stdout.String(), stderr.String())
		}
		if err != nil {
			t.Fatalf("sluice %q: %v\nstdout: %s\nstderr: %s", args, err, stdout.String(), stderr.String())
		}
		return result{stdout: stdout.String(), stderr: stderr.String()}
	}
	r := run("run", "--uplink-netns", ns, "--stats", "--stats-file", stats, "--", "sh", "-c", script)
	t.Logf("sandbox output:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	for _, want := range []string{"nameserver 10.0.2.2", "udp status: SERVFAIL", "tcp status: SERVFAIL"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s\nstderr: %s", want, r.stdout, r.stderr)
		}
	}
	if !strings.Contains(r.stderr, "no upstream resolver") {
		t.Errorf("stderr does not say why DNS fails:\n%s", r.stderr)
	}
	if re := `(?m)^dns: [1-9]\d* UDP and [1-9]\d* TCP queries, .* [2-9] answered SERVFAIL by sluice \(0 for a failed upstream\), 0 bad queries$`; !regexp.MustCompile(re).MatchString(r.stderr) {
		t.Errorf("--stats: stderr does not match %s:\n%s", re, r.stderr)
	}
	b, err := os.ReadFile(stats)
	if err != nil {
		t.Fatal(err)
	}
	var rep sandbox.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if d := rep.DNS; d == nil || d.ServFail < 2 || d.QueriesUDP == 0 || d.QueriesTCP == 0 {
		t.Errorf("DNS stats %+v: want a UDP and a TCP query answered SERVFAIL", d)
	}

	r = run("run", "--uplink-netns", ns, "--dns=false", "--", "cat", "/etc/resolv.conf")
	if strings.TrimSpace(r.stdout) != "# no nameserver" {
		t.Errorf("--dns=false: the command's resolv.conf is %q, want the host's", r.stdout)
	}

	// An upstream that refuses (nothing on its port: ICMP port
	// unreachable) gets the query answered SERVFAIL at once.
	r = mustRun(t, "run", "--uplink-netns", ns, "--dns-upstream", "10.99.0.1:5399", "--stats-file", stats, "--",
		"sh", "-c", `dig +tries=1 +time=5 svc.test A | grep -o 'status: [A-Z]*' | sed 's/^/udp /'`)
	if !strings.Contains(r.stdout, "udp status: SERVFAIL") {
		t.Errorf("refusing upstream: stdout %q, want a SERVFAIL\nstderr: %s", r.stdout, r.stderr)
	}
	if b, err = os.ReadFile(stats); err != nil {
		t.Fatal(err)
	}
	rep = sandbox.Report{}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if d := rep.DNS; d == nil || d.UpstreamFailed == 0 || d.ServFail != d.UpstreamFailed {
		t.Errorf("refusing upstream: DNS stats %+v, want SERVFAIL answers counted as upstream failures", d)
	}
}

// TestWildcardDomainPolicy runs `--deny all --allow '*.sub.test'`: names
// under sub.test, at any depth, are reached; sub.test itself is refused
// (RST), as is a bare address never resolved, each logged with what its
// address was resolved as; a name that does not resolve never makes a
// flow.
func TestWildcardDomainPolicy(t *testing.T) {
	testenv.RequireTool(t, "curl")
	ns := serverNS(t)
	testenv.IP(t, ns, "addr", "add", "10.99.0.2/32", "dev", "lo")
	testenv.IP(t, ns, "addr", "add", "10.99.0.3/32", "dev", "lo")
	dnsServer(t, ns, "10.99.0.1:53")
	for _, a := range []string{"10.99.0.1:8086", "10.99.0.2:8086", "10.99.0.3:8086"} {
		serveData(t, listen(t, ns, netip.MustParseAddrPort(a)), 1000)
	}
	script := `for h in a.sub.test x.y.sub.test sub.test nx.sub.test 10.99.0.3; do
curl -sS --max-time 10 -o /dev/null http://$h:8086/data 2>/dev/null; echo "$h exit $?"
done`
	r := mustRun(t, "run", "--uplink-netns", ns, "--dns-upstream", "10.99.0.1", "--deny", "all", "--allow", "*.sub.test", "--log-policy", "--", "sh", "-c", script)
	t.Logf("stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	for _, want := range []string{
		"a.sub.test exit 0", "x.y.sub.test exit 0",
		"sub.test exit 7",    // refused: the wildcard does not cover the domain itself
		"nx.sub.test exit 6", // curl: could not resolve
		"10.99.0.3 exit 7",
	} {
		if !strings.Contains(r.stdout, "\n"+want) && !strings.HasPrefix(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
		}
	}
	for _, want := range []string{
		"-> 10.99.0.1:8086 (--allow *.sub.test)",
		"-> 10.99.0.2:8086 (--deny all; 10.99.0.2 was resolved for sub.test)",
		"-> 10.99.0.3:8086 (--deny all; 10.99.0.3 was not resolved by the sandbox's DNS)",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("policy log lacks %q:\n%s", want, r.stderr)
		}
	}
}

// TestDNSIPv6 runs an IPv6-only sandbox (--subnet none) whose DNS service
// forwards to a resolver at an IPv6 address of the test's namespace: dig
// asks the IPv6 gateway (the only nameserver of the generated resolv.conf)
// for AAAA records over UDP and TCP, and curl reaches a server by a name
// that only has one, under `--deny all --allow v6.test`.
func TestDNSIPv6(t *testing.T) {
	testenv.RequireTool(t, "dig")
	testenv.RequireTool(t, "curl")
	ns := serverNS(t)
	dnsServer(t, ns, "[fd99::1]:53")
	serveData(t, listen(t, ns, netip.MustParseAddrPort("[fd99::1]:8087")), 1000)
	script := `cat /etc/resolv.conf
echo "udp: $(dig +short +tries=1 +time=5 v6.test AAAA)"
echo "tcp: $(dig +tcp +short +tries=1 +time=5 v6.test AAAA)"
curl -sS --max-time 10 -o /dev/null -w 'curl %{size_download} %{remote_ip}\n' http://v6.test:8087/data`
	r := mustRun(t, "run", "--uplink-netns", ns, "--subnet", "none", "--dns-upstream", "[fd99::1]:53",
		"--deny", "all", "--allow", "v6.test", "--log-policy", "--", "sh", "-c", script)
	t.Logf("stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	for _, want := range []string{"nameserver fd00:51ce::2\n", "udp: fd99::1\n", "tcp: fd99::1\n", "curl 1000 fd99::1\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s\nstderr: %s", want, r.stdout, r.stderr)
		}
	}
	if strings.Contains(r.stdout, "nameserver 10.") {
		t.Errorf("resolv.conf names an IPv4 gateway in an IPv6-only sandbox:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "allow tcp [fd00:51ce::100]:") || !strings.Contains(r.stderr, "-> [fd99::1]:8087 (--allow v6.test)") {
		t.Errorf("policy log:\n%s", r.stderr)
	}
}
