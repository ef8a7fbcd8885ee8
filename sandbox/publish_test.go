package sandbox

import (
	"net/netip"
	"testing"
)

func TestParsePublish(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Publish
	}{
		{"8080:80", Publish{netip.MustParseAddrPort("[::]:8080"), 80, "tcp"}},
		{"0.0.0.0:8080:80", Publish{netip.MustParseAddrPort("0.0.0.0:8080"), 80, "tcp"}},
		{"127.0.0.1:8080:80/tcp", Publish{netip.MustParseAddrPort("127.0.0.1:8080"), 80, "tcp"}},
		{"5353:53/udp", Publish{netip.MustParseAddrPort("[::]:5353"), 53, "udp"}},
		{"[::1]:8080:80", Publish{netip.MustParseAddrPort("[::1]:8080"), 80, "tcp"}},
	} {
		got, err := ParsePublish(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParsePublish(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "80", "8080:80/sctp", "0:80", "8080:0", "8080:70000", "x:8080:80", "::1:8080:80",
		"[::1]8080:80", "[10.0.0.1]:8080:80", "[::1]:1.2.3.4:8080:80", "1.2.3.4:5:6:7", "8080:80/"} {
		if p, err := ParsePublish(in); err == nil {
			t.Errorf("ParsePublish(%q) = %+v, want an error", in, p)
		}
	}
}

// FuzzParsePublish checks that any --publish value is either refused with
// an error or parsed into a value whose String parses back to it.
func FuzzParsePublish(f *testing.F) {
	for _, s := range []string{"8080:80", "127.0.0.1:8080:80/tcp", "5353:53/udp", "[::1]:8080:80", "[::]:1:65535/udp",
		"0.0.0.0:8080:80", "[fe80::1%eth0]:1:2", "1.2.3.4:5:6:7", "8080:80/", "[", "]:1:2", "::1:8080:80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePublish(s)
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("ParsePublish(%q): empty error", s)
			}
			return
		}
		if p.Host.Port() == 0 || p.SandboxPort == 0 || (p.Proto != "tcp" && p.Proto != "udp") || !p.Host.Addr().IsValid() {
			t.Fatalf("ParsePublish(%q) = %+v: a port 0, no host address or an unknown protocol", s, p)
		}
		back, err := ParsePublish(p.String())
		if err != nil || back != p {
			t.Fatalf("ParsePublish(%q) = %+v, whose String %q parses to %+v, %v", s, p, p.String(), back, err)
		}
	})
}
