package sandbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

func TestParseRule(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Rule
	}{
		{"all", Rule{All: true}},
		{"10.0.0.0/8", Rule{Prefix: netip.MustParsePrefix("10.0.0.0/8")}},
		{"10.1.2.3/8", Rule{Prefix: netip.MustParsePrefix("10.0.0.0/8")}},
		{"192.0.2.1", Rule{Prefix: netip.MustParsePrefix("192.0.2.1/32")}},
		{"192.0.2.1:443", Rule{Prefix: netip.MustParsePrefix("192.0.2.1/32"), Port: 443}},
		{"10.0.0.0/8:53/udp", Rule{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Port: 53, Proto: "udp"}},
		{"fd00::/8", Rule{Prefix: netip.MustParsePrefix("fd00::/8")}},
		{"[fd00::/8]:443/tcp", Rule{Prefix: netip.MustParsePrefix("fd00::/8"), Port: 443, Proto: "tcp"}},
		{"Example.ORG.", Rule{Domain: "example.org"}},
		{"example.org:443/tcp", Rule{Domain: "example.org", Port: 443, Proto: "tcp"}},
		{"*.Example.org", Rule{Domain: "example.org", Wildcard: true}},
		{"*.example.org:443/tcp", Rule{Domain: "example.org", Wildcard: true, Port: 443, Proto: "tcp"}},
	} {
		got, err := ParseRule(true, tc.in)
		if err != nil {
			t.Errorf("ParseRule(%q): %v", tc.in, err)
			continue
		}
		tc.want.Allow, tc.want.Text = true, tc.in
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseRule(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
	for _, in := range []string{"", ":80", "10.0.0.0/33", "10.0.0.1:0", "10.0.0.1:70000", "10.0.0.1:80/sctp",
		"10.0.0.1:", "[fd00::/8", "[fd00::1]x", "10.0.0.300", "exa mple.org", "-bad.org", "all:80", "1.2.3.4:http",
		"*", "*.", "a.*.org", "*example.org", "**.example.org", "*.*.example.org"} {
		if r, err := ParseRule(false, in); err == nil {
			t.Errorf("ParseRule(%q) = %+v, want an error", in, r)
		}
	}
}

func TestPolicyDecide(t *testing.T) {
	c := DefaultConfig()
	c.Deny = []string{"all", "10.1.0.0/16"}
	c.Allow = []string{"10.0.0.0/8", "192.0.2.1:53/udp"}
	var log bytes.Buffer
	p, err := NewPolicy(c, &log, false)
	if err != nil {
		t.Fatal(err)
	}
	src := netip.MustParseAddrPort("10.0.2.100:40000")
	for _, tc := range []struct {
		proto, dst string
		want       bool
	}{
		{"tcp", "10.9.9.9:80", true},
		{"tcp", "10.1.2.3:80", false}, // the deny is more specific
		{"udp", "192.0.2.1:53", true},
		{"tcp", "192.0.2.1:53", false},
		{"udp", "192.0.2.1:54", false},
		{"tcp", "198.51.100.1:443", false}, // --deny all
	} {
		if got := p.Decide(tc.proto, src, netip.MustParseAddrPort(tc.dst)); got != tc.want {
			t.Errorf("Decide(%s %s) = %v, want %v", tc.proto, tc.dst, got, tc.want)
		}
	}
	if n := strings.Count(log.String(), "\n"); n != 6 {
		t.Errorf("logged %d lines, want 6:\n%s", n, log.String())
	}
	if !strings.Contains(log.String(), "sluice: policy: deny tcp 10.0.2.100:40000 -> 10.1.2.3:80 (--deny 10.1.0.0/16)") {
		t.Errorf("log lacks the CIDR deny:\n%s", log.String())
	}
	want := []PolicyStats{
		{"--deny 10.1.0.0/16", "deny", 1},
		{"--allow 10.0.0.0/8", "allow", 1},
		{"--allow 192.0.2.1:53/udp", "allow", 1},
		{"--deny all", "deny", 3},
	}
	if got := p.Stats(); !reflect.DeepEqual(got, want) {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}

	// JSON lines.
	log.Reset()
	p, _ = NewPolicy(c, &log, true)
	p.Decide("tcp", src, netip.MustParseAddrPort("10.1.2.3:80"))
	var rec map[string]string
	if err := json.Unmarshal(log.Bytes(), &rec); err != nil || rec["verdict"] != "deny" || rec["dst"] != "10.1.2.3:80" {
		t.Errorf("JSON log %q: %v %v", log.String(), rec, err)
	}
}

func TestPolicyFlags(t *testing.T) {
	c, err := ParseFlags([]string{"--deny", "all", "--allow", "10.0.0.0/8:80/tcp", "--allow=[fd00::/8]:443,192.0.2.1", "--log-policy"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.0.0.0/8:80/tcp", "[fd00::/8]:443", "192.0.2.1"}; !reflect.DeepEqual(c.Allow, want) {
		t.Errorf("Allow = %q, want %q", c.Allow, want)
	}
	back, err := ParseFlags(c.ToFlags())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, c) {
		t.Errorf("round trip: %+v, want %+v", back, c)
	}
	for _, tc := range []struct{ flag, want string }{
		{"--allow=10.0.0.0/8:99999", "--allow"},
		{"--deny=300.1.1.1", "--deny"},
		{"--allow=all", "--allow all"},
		{"--deny=10.0.0.1:80/icmp", `protocol "icmp"`},
	} {
		if _, err := ParseFlags([]string{tc.flag}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %s", tc.flag, err, tc.want)
		}
	}
	c, err = ParseFlags([]string{"--dns=false", "--allow", "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CheckImplemented(); !errors.Is(err, ErrNeedsDNS) {
		t.Errorf("domain rule: CheckImplemented() = %v, want ErrNeedsDNS", err)
	}
}

// TestDomainRules decides flows against names the DNS service learnt from
// built answers: an exact rule matches its name (and the names of a CNAME
// chain to it) only, a wildcard every name under its domain but not the
// domain itself, and an address never answered is logged as unresolved.
func TestDomainRules(t *testing.T) {
	names := newNameTable()
	answer := func(name string, a string, cnames ...string) {
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{Response: true})
		_ = b.StartAnswers()
		owner := name
		for _, c := range cnames {
			_ = b.CNAMEResource(dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(owner + "."), Class: dnsmessage.ClassINET, TTL: 300},
				dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName(c + ".")})
			owner = c
		}
		_ = b.AResource(dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(owner + "."), Class: dnsmessage.ClassINET, TTL: 300},
			dnsmessage.AResource{A: netip.MustParseAddr(a).As4()})
		msg, err := b.Finish()
		if err != nil {
			t.Fatal(err)
		}
		names.learn(msg)
	}
	answer("example.org", "192.0.2.1")
	answer("a.example.org", "192.0.2.2")
	answer("x.y.example.org", "192.0.2.3")
	answer("badexample.org", "192.0.2.4")
	answer("alias.test", "192.0.2.5", "cdn.example.org") // a name outside, led under it by a CNAME
	c := DefaultConfig()
	c.Deny = []string{"all"}
	c.Allow = []string{"*.example.org:443/tcp", "example.org:80"}
	var log bytes.Buffer
	p, err := newPolicy(c, &log, false, names)
	if err != nil {
		t.Fatal(err)
	}
	src := netip.MustParseAddrPort("10.0.2.100:40000")
	for _, tc := range []struct {
		dst  string
		want bool
	}{
		{"192.0.2.1:80", true},   // example.org, exact
		{"192.0.2.1:443", false}, // example.org is not under *.example.org
		{"192.0.2.2:443", true},  // a.example.org
		{"192.0.2.2:80", false},  // not example.org itself
		{"192.0.2.3:443", true},  // any depth
		{"192.0.2.4:443", false}, // badexample.org is not under example.org
		{"192.0.2.5:443", true},  // CNAME target cdn.example.org
		{"192.0.2.9:443", false}, // never resolved
	} {
		if got := p.Decide("tcp", src, netip.MustParseAddrPort(tc.dst)); got != tc.want {
			t.Errorf("Decide(%s) = %v, want %v\nlog:\n%s", tc.dst, got, tc.want, log.String())
		}
	}
	for _, want := range []string{
		"deny tcp 10.0.2.100:40000 -> 192.0.2.9:443 (--deny all; 192.0.2.9 was not resolved by the sandbox's DNS)",
		"deny tcp 10.0.2.100:40000 -> 192.0.2.4:443 (--deny all; 192.0.2.4 was resolved for badexample.org)",
		"allow tcp 10.0.2.100:40000 -> 192.0.2.3:443 (--allow *.example.org:443/tcp)",
	} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, log.String())
		}
	}
}

// FuzzParseRule checks that any --allow/--deny value is either refused
// with an error or parsed into a rule of exactly one kind (all, CIDR or
// domain) that parses the same again from its text, and that matching it
// against any flow does not panic.
func FuzzParseRule(f *testing.F) {
	for _, s := range []string{"all", "10.0.0.0/8", "192.0.2.1:443", "10.0.0.0/8:53/udp", "fd00::/8", "[fd00::/8]:443/tcp",
		"Example.ORG.", "example.org:443/tcp", "*.example.org", "*.example.org:443/udp", "*", "a.*.org", "[fd00::1%eth0]",
		"10.0.0.300", "all:80", "[::]:0", "x:80/tcp/udp", "_srv.example.org"} {
		f.Add(s, true)
	}
	names := newNameTable()
	f.Fuzz(func(t *testing.T, s string, allow bool) {
		r, err := ParseRule(allow, s)
		if err != nil {
			return
		}
		kinds := 0
		for _, k := range []bool{r.All, r.Prefix.IsValid(), r.Domain != ""} {
			if k {
				kinds++
			}
		}
		if kinds != 1 || r.Allow != allow || (r.Wildcard && r.Domain == "") || (r.Domain != "" && !validName(r.Domain)) ||
			(r.Proto != "" && r.Proto != "tcp" && r.Proto != "udp") || (r.All && r.Port != 0) {
			t.Fatalf("ParseRule(%q) = %+v: not one well-formed kind of rule", s, r)
		}
		again, err := ParseRule(allow, r.Text)
		if err != nil || !reflect.DeepEqual(again, r) {
			t.Fatalf("ParseRule(%q) = %+v, again %+v, %v", s, r, again, err)
		}
		for _, dst := range []string{"192.0.2.1", "fd00::1", "::ffff:10.0.0.1"} {
			r.matches("tcp", netip.MustParseAddr(dst), r.Port, names)
		}
	})
}
