package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNeedsDNS is wrapped by the error for a domain rule (--allow NAME)
// without --dns: names are matched against the addresses the sandbox's own
// DNS answered.
var ErrNeedsDNS = errors.New("domain rules need the sandbox DNS")

// Rule is one --allow or --deny value: a destination (all, a CIDR or a
// domain name) with an optional port and protocol.
type Rule struct {
	Allow bool
	// All matches every destination (`--deny all`).
	All bool
	// Prefix is the destination CIDR; invalid for All and domain rules.
	Prefix netip.Prefix
	// Domain is the destination name of a domain rule, lower case,
	// without the trailing dot (and without the "*." of a wildcard).
	Domain string
	// Wildcard makes the domain rule match every name under Domain, at
	// any depth (`*.example.org` matches a.example.org and
	// a.b.example.org), but not Domain itself; a rule without it matches
	// exactly its name. Both also match the names that led to an
	// address through a CNAME chain.
	Wildcard bool
	// Port is the destination port; 0 matches any.
	Port uint16
	// Proto is "tcp" or "udp"; empty matches both.
	Proto string
	// Text is the value as given, for logs and stats.
	Text string
}

// String names the rule as its flag.
func (r Rule) String() string {
	if r.Allow {
		return "--allow " + r.Text
	}
	return "--deny " + r.Text
}

// ParseRule parses a value of --allow (allow true) or --deny:
//
//	all                     every destination (a default, see Policy)
//	CIDR or ADDR            10.0.0.0/8, 192.0.2.1, fd00::/8
//	CIDR:PORT[/PROTO]       10.0.0.0/8:443/tcp, [fd00::/8]:53/udp
//	NAME[:PORT[/PROTO]]     example.org, example.org:443/tcp (that name only)
//	*.NAME[:PORT[/PROTO]]   *.example.org (every name under it, not itself)
//
// An IPv6 CIDR with a port is written in brackets, as an IPv6 address with
// a port is.
func ParseRule(allow bool, s string) (Rule, error) {
	r := Rule{Allow: allow, Text: s}
	if s == "" {
		return r, errors.New("empty rule")
	}
	dest, port, proto := s, "", ""
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]")
		if end < 0 {
			return r, fmt.Errorf("%q: missing ]", s)
		}
		dest = s[1:end]
		rest := s[end+1:]
		if rest != "" {
			if !strings.HasPrefix(rest, ":") {
				return r, fmt.Errorf("%q: want [CIDR]:PORT after the brackets", s)
			}
			port = rest[1:]
			if port == "" {
				return r, fmt.Errorf("%q: empty port", s)
			}
		}
	} else if strings.Count(s, ":") == 1 {
		// One colon: IPv4 or name with a port. More colons without
		// brackets: a bare IPv6 address or CIDR.
		i := strings.Index(s, ":")
		dest, port = s[:i], s[i+1:]
		if port == "" {
			return r, fmt.Errorf("%q: empty port", s)
		}
	}
	if i := strings.Index(port, "/"); i >= 0 {
		port, proto = port[:i], port[i+1:]
		if proto != "tcp" && proto != "udp" {
			return r, fmt.Errorf("%q: protocol %q: want tcp or udp", s, proto)
		}
	}
	if port != "" {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return r, fmt.Errorf("%q: port %q: want 1-65535", s, port)
		}
		r.Port = uint16(n)
	}
	r.Proto = proto
	switch {
	case dest == "":
		return r, fmt.Errorf("%q: no destination", s)
	case dest == "all":
		r.All = true
		if r.Port != 0 {
			return r, fmt.Errorf("%q: all takes no port; give a CIDR (0.0.0.0/0:PORT and [::/0]:PORT)", s)
		}
	case strings.Contains(dest, "/"):
		p, err := netip.ParsePrefix(dest)
		if err != nil {
			return r, fmt.Errorf("%q: %w", s, err)
		}
		r.Prefix = p.Masked()
	default:
		if a, err := netip.ParseAddr(dest); err == nil {
			if a.Zone() != "" {
				return r, fmt.Errorf("%q: a zone has no place in a rule", s)
			}
			r.Prefix = netip.PrefixFrom(a, a.BitLen())
			break
		}
		name := strings.TrimSuffix(strings.ToLower(dest), ".")
		if rest, ok := strings.CutPrefix(name, "*."); ok {
			name, r.Wildcard = rest, true
		}
		if !validName(name) {
			if strings.Contains(name, "*") {
				return r, fmt.Errorf("%q: a wildcard is only allowed as the whole first label (*.example.org)", s)
			}
			return r, fmt.Errorf("%q: %q is neither all, an address, a CIDR nor a domain name", s, dest)
		}
		r.Domain = name
	}
	return r, nil
}

// validName reports whether s is a DNS name of letters, digits, hyphens
// and underscores in dot-separated labels of 1 to 63 bytes, with at least
// one letter (so that a mistyped address such as 10.0.0.300 is not taken
// for a name).
func validName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	letter := false
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range l {
			switch {
			case c >= 'a' && c <= 'z', c == '_':
				letter = true
			case c >= '0' && c <= '9', c == '-':
			default:
				return false
			}
		}
	}
	return letter
}

// ruleList is the flag value of --allow or --deny: repeatable, and
// comma-separated values are split, so that the list round-trips through
// one --allow=a,b (ToFlags). Values are checked by Validate, which names
// the flag.
type ruleList struct{ v *[]string }

func (l ruleList) String() string { return strings.Join(*l.v, ",") }
func (l ruleList) Type() string   { return "rule" }
func (l ruleList) Set(s string) error {
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			*l.v = append(*l.v, f)
		}
	}
	return nil
}

// PolicyStats are one rule's counters: the flows it decided.
type PolicyStats struct {
	Rule    string `json:"rule"`
	Verdict string `json:"verdict"`
	Flows   uint64 `json:"flows"`
}

// Policy decides each new flow of the sandbox. A flow is denied when a
// --deny rule other than `all` matches it; otherwise allowed when an --allow
// rule matches; otherwise denied under `--deny all` and allowed without it.
// So the more specific deny wins over an allow, and the order of the flags
// does not matter.
type Policy struct {
	rules       []Rule
	counts      []atomic.Uint64 // per rule
	defaultDeny bool
	defaultN    atomic.Uint64 // flows decided by the default
	names       *nameTable    // what the sandbox's DNS answered; nil without it
	domains     bool          // some rule is a domain rule

	mu   sync.Mutex // serialises log lines
	log  io.Writer  // nil: decisions are not logged
	json bool
}

// NewPolicy returns the policy of c's rules, which must have passed
// Validate. Decisions are logged to log (one line each, or JSON with
// asJSON) when it is not nil.
func NewPolicy(c Config, log io.Writer, asJSON bool) (*Policy, error) {
	return newPolicy(c, log, asJSON, nil)
}

func newPolicy(c Config, log io.Writer, asJSON bool, names *nameTable) (*Policy, error) {
	p := &Policy{log: log, json: asJSON, names: names}
	for _, set := range []struct {
		allow bool
		vals  []string
	}{{false, c.Deny}, {true, c.Allow}} {
		for _, v := range set.vals {
			r, err := ParseRule(set.allow, v)
			if err != nil {
				return nil, err
			}
			if r.Domain != "" && names == nil {
				return nil, fmt.Errorf("%v: %w", r, ErrNeedsDNS)
			}
			p.domains = p.domains || r.Domain != ""
			if r.All && !r.Allow {
				p.defaultDeny = true
				continue
			}
			p.rules = append(p.rules, r)
		}
	}
	p.counts = make([]atomic.Uint64, len(p.rules))
	return p, nil
}

func (r Rule) matches(proto string, dst netip.Addr, port uint16, names *nameTable) bool {
	if r.Proto != "" && r.Proto != proto {
		return false
	}
	if r.Port != 0 && r.Port != port {
		return false
	}
	if r.All {
		return true
	}
	if r.Domain != "" {
		// A name the sandbox never resolved (or whose answer
		// expired) matches nothing: the flow falls to the other
		// rules, and under --deny all is refused and logged.
		if r.Wildcard {
			return names.hasUnder(dst, r.Domain)
		}
		return names.has(dst, r.Domain)
	}
	return r.Prefix.IsValid() && r.Prefix.Contains(dst.Unmap())
}

// Decide returns whether a new flow from src to dst:port over proto ("tcp"
// or "udp") may go out, counts and logs the decision.
func (p *Policy) Decide(proto string, src, dst netip.AddrPort) bool {
	allow, _ := p.DecideRule(proto, src, dst)
	return allow
}

// DecideRule is Decide that also names the rule that decided: a rule as its
// flag (--allow 10.0.0.0/8), "--deny all" or "default". Without a policy
// every flow is allowed by "default", uncounted.
func (p *Policy) DecideRule(proto string, src, dst netip.AddrPort) (allow bool, rule string) {
	if p == nil {
		return true, "default"
	}
	idx := -1
	allow = !p.defaultDeny
	for i, r := range p.rules {
		if !r.Allow && r.matches(proto, dst.Addr(), dst.Port(), p.names) {
			idx, allow = i, false
			break
		}
	}
	if idx < 0 {
		for i, r := range p.rules {
			if r.Allow && r.matches(proto, dst.Addr(), dst.Port(), p.names) {
				idx, allow = i, true
				break
			}
		}
	}
	rule = "default"
	if idx >= 0 {
		p.counts[idx].Add(1)
		rule = p.rules[idx].String()
	} else {
		p.defaultN.Add(1)
		if p.defaultDeny {
			rule = "--deny all"
		}
	}
	if p.log != nil {
		// With domain rules, a flow that none matched says what its
		// address was resolved as, if anything: a name the sandbox
		// could not resolve (or whose answer expired) shows as none.
		var names []string
		if idx < 0 && p.domains {
			names = p.names.namesOf(dst.Addr())
			if names == nil {
				names = []string{}
			}
		}
		p.logDecision(proto, src, dst, allow, rule, names)
	}
	return allow, rule
}

func verdict(allow bool) string {
	if allow {
		return "allow"
	}
	return "deny"
}

// logDecision logs one decision. names, when not nil, are the names the
// sandbox's DNS answered dst with (empty: none, or expired).
func (p *Policy) logDecision(proto string, src, dst netip.AddrPort, allow bool, rule string, names []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.json {
		b, _ := json.Marshal(struct {
			Time    string   `json:"time"`
			Verdict string   `json:"verdict"`
			Proto   string   `json:"proto"`
			Src     string   `json:"src"`
			Dst     string   `json:"dst"`
			Rule    string   `json:"rule"`
			Names   []string `json:"names,omitempty"`
			// Unresolved: dst was not answered by the sandbox's DNS
			// (or the answer expired), so no domain rule could match.
			Unresolved bool `json:"unresolved,omitempty"`
		}{time.Now().UTC().Format(time.RFC3339Nano), verdict(allow), proto, src.String(), dst.String(), rule, names, names != nil && len(names) == 0})
		fmt.Fprintf(p.log, "%s\n", b)
		return
	}
	why := rule
	switch {
	case names == nil:
	case len(names) == 0:
		why += fmt.Sprintf("; %v was not resolved by the sandbox's DNS", dst.Addr())
	default:
		why += fmt.Sprintf("; %v was resolved for %s", dst.Addr(), strings.Join(names, ", "))
	}
	fmt.Fprintf(p.log, "sluice: policy: %s %s %v -> %v (%s)\n", verdict(allow), proto, src, dst, why)
}

// Stats returns the flows each rule decided, the default last.
func (p *Policy) Stats() []PolicyStats {
	if p == nil {
		return nil
	}
	var out []PolicyStats
	for i, r := range p.rules {
		out = append(out, PolicyStats{Rule: r.String(), Verdict: verdict(r.Allow), Flows: p.counts[i].Load()})
	}
	def := PolicyStats{Rule: "default", Verdict: "allow", Flows: p.defaultN.Load()}
	if p.defaultDeny {
		def = PolicyStats{Rule: "--deny all", Verdict: "deny", Flows: p.defaultN.Load()}
	}
	return append(out, def)
}
