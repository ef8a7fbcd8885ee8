package sandbox

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Publish is one --publish value: a host address and port forwarded to a
// port of the sandbox.
type Publish struct {
	// Host is where sluice listens (in the uplink namespace). The
	// default, [::], listens on every address of both families (a
	// dual-stack socket); 0.0.0.0 on every IPv4 address only.
	Host        netip.AddrPort
	SandboxPort uint16
	Proto       string // "tcp" or "udp"
}

// ParsePublish parses [HOSTADDR:]HOSTPORT:SANDBOXPORT[/tcp|/udp]; an IPv6
// HOSTADDR is written in brackets.
func ParsePublish(s string) (Publish, error) {
	p := Publish{Proto: "tcp"}
	rest := s
	if i := strings.LastIndex(rest, "/"); i >= 0 {
		p.Proto = rest[i+1:]
		rest = rest[:i]
		if p.Proto != "tcp" && p.Proto != "udp" {
			return p, fmt.Errorf("%q: protocol %q: want tcp or udp", s, p.Proto)
		}
	}
	host, hostSet := netip.IPv6Unspecified(), false
	if strings.HasPrefix(rest, "[") {
		end := strings.Index(rest, "]")
		if end < 0 || len(rest) <= end+1 || rest[end+1] != ':' {
			return p, fmt.Errorf("%q: want [HOSTADDR6]:HOSTPORT:SANDBOXPORT", s)
		}
		a, err := netip.ParseAddr(rest[1:end])
		if err != nil || !a.Is6() {
			return p, fmt.Errorf("%q: %q is not an IPv6 address", s, rest[1:end])
		}
		host, hostSet, rest = a, true, rest[end+2:]
	}
	parts := strings.Split(rest, ":")
	switch len(parts) {
	case 2:
	case 3:
		if hostSet {
			return p, fmt.Errorf("%q: want [HOSTADDR:]HOSTPORT:SANDBOXPORT[/tcp|/udp]", s)
		}
		a, err := netip.ParseAddr(parts[0])
		if err != nil || !a.Is4() {
			return p, fmt.Errorf("%q: %q is not an IPv4 address (an IPv6 one goes in brackets)", s, parts[0])
		}
		host, parts = a, parts[1:]
	default:
		return p, fmt.Errorf("%q: want [HOSTADDR:]HOSTPORT:SANDBOXPORT[/tcp|/udp]", s)
	}
	var ports [2]uint16
	for i, f := range parts {
		n, err := strconv.ParseUint(f, 10, 16)
		if err != nil || n == 0 {
			return p, fmt.Errorf("%q: port %q: want 1-65535", s, f)
		}
		ports[i] = uint16(n)
	}
	p.Host = netip.AddrPortFrom(host, ports[0])
	p.SandboxPort = ports[1]
	return p, nil
}

func (p Publish) String() string {
	return fmt.Sprintf("%v:%d/%s", p.Host, p.SandboxPort, p.Proto)
}
