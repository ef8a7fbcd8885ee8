package sandbox

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsMinTTL is the shortest time an answered address stays bound to its
// names for the domain policy: TTLs are respected loosely, as a client's
// cache may keep an answer past a TTL of a few seconds and connect later.
const dnsMinTTL = 60 * time.Second

// DNSStats are the counters of the sandbox's DNS service.
type DNSStats struct {
	QueriesUDP uint64 `json:"queries_udp"`
	QueriesTCP uint64 `json:"queries_tcp"`
	Answers    uint64 `json:"answers"`
	// Malformed counts answers that could not be parsed (passed on to the
	// sandbox unchanged all the same); Truncated those with the TC bit.
	Malformed uint64 `json:"malformed"`
	Truncated uint64 `json:"truncated"`
	// Addresses is the number of (address, name) bindings learnt.
	Addresses uint64 `json:"addresses"`
	// ServFail counts the queries the service answered itself with
	// SERVFAIL: because it has no upstream resolver (the host's
	// resolv.conf names none and --dns-upstream was not given), or, for
	// UpstreamFailed of them, because the upstream refused the query
	// (ICMP unreachable) or could not be sent it.
	ServFail       uint64 `json:"servfail"`
	UpstreamFailed uint64 `json:"upstream_failed"`
	// BadQueries counts queries it could not parse to answer them so;
	// they get no answer.
	BadQueries uint64 `json:"bad_queries"`
}

// nameTable binds the addresses the sandbox's DNS answered to the names
// they answered for, including every name of a CNAME chain that led to
// them: the domain rules of the policy match against it.
type nameTable struct {
	mu    sync.Mutex
	names map[netip.Addr]map[string]time.Time // address -> name -> expiry

	queriesUDP, queriesTCP, answers, malformed, truncated, bindings, servFails, badQueries, upstreamFailed atomic.Uint64
}

func newNameTable() *nameTable {
	return &nameTable{names: map[netip.Addr]map[string]time.Time{}}
}

// has reports whether addr was answered for name and has not expired.
func (t *nameTable) has(addr netip.Addr, name string) bool {
	if t == nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	exp, ok := t.names[addr.Unmap()][name]
	return ok && time.Now().Before(exp)
}

// hasUnder reports whether addr was answered for a name under domain (a
// strict subdomain, at any depth) that has not expired.
func (t *nameTable) hasUnder(addr netip.Addr, domain string) bool {
	if t == nil {
		return false
	}
	suffix := "." + domain
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	for name, exp := range t.names[addr.Unmap()] {
		if strings.HasSuffix(name, suffix) && now.Before(exp) {
			return true
		}
	}
	return false
}

// namesOf returns the unexpired names addr was answered for, sorted; nil
// when there are none.
func (t *nameTable) namesOf(addr netip.Addr) []string {
	if t == nil {
		return nil
	}
	now := time.Now()
	t.mu.Lock()
	var out []string
	for name, exp := range t.names[addr.Unmap()] {
		if now.Before(exp) {
			out = append(out, name)
		}
	}
	t.mu.Unlock()
	slices.Sort(out)
	return out
}

// learn parses a DNS answer and binds its addresses to their names. A
// message it cannot parse is counted and otherwise ignored: the sandbox
// gets it unchanged either way, and never a crash.
func (t *nameTable) learn(msg []byte) {
	t.answers.Add(1)
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil {
		t.malformed.Add(1)
		return
	}
	if h.Truncated {
		t.truncated.Add(1)
	}
	// The questions are parsed, not skipped: skipping does not follow a
	// name's compression pointer, and a pointer out of the message is as
	// malformed as anything in the answers.
	if _, err := p.AllQuestions(); err != nil {
		t.malformed.Add(1)
		return
	}
	aliases := map[string][]string{} // CNAME target -> owners
	type rec struct {
		name string
		addr netip.Addr
		ttl  uint32
	}
	var addrs []rec
	for {
		rh, err := p.AnswerHeader()
		if err == dnsmessage.ErrSectionDone {
			break
		}
		if err != nil {
			t.malformed.Add(1)
			break
		}
		name := canonical(rh.Name.String())
		switch rh.Type {
		case dnsmessage.TypeA:
			r, err := p.AResource()
			if err != nil {
				t.malformed.Add(1)
				return
			}
			addrs = append(addrs, rec{name, netip.AddrFrom4(r.A), rh.TTL})
		case dnsmessage.TypeAAAA:
			r, err := p.AAAAResource()
			if err != nil {
				t.malformed.Add(1)
				return
			}
			addrs = append(addrs, rec{name, netip.AddrFrom16(r.AAAA), rh.TTL})
		case dnsmessage.TypeCNAME:
			r, err := p.CNAMEResource()
			if err != nil {
				t.malformed.Add(1)
				return
			}
			target := canonical(r.CNAME.String())
			aliases[target] = append(aliases[target], name)
		default:
			if err := p.SkipAnswer(); err != nil {
				t.malformed.Add(1)
				return
			}
		}
	}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, r := range addrs {
		ttl := time.Duration(r.ttl) * time.Second
		if ttl < dnsMinTTL {
			ttl = dnsMinTTL
		}
		m := t.names[r.addr]
		if m == nil {
			m = map[string]time.Time{}
			t.names[r.addr] = m
		}
		// The owner and every name that led to it through CNAMEs;
		// seen bounds a chain that loops.
		seen := map[string]bool{}
		todo := []string{r.name}
		for len(todo) > 0 && len(seen) < 64 {
			n := todo[len(todo)-1]
			todo = todo[:len(todo)-1]
			if seen[n] {
				continue
			}
			seen[n] = true
			if _, ok := m[n]; !ok {
				t.bindings.Add(1)
			}
			m[n] = now.Add(ttl)
			todo = append(todo, aliases[n]...)
		}
	}
}

// learnStream feeds learn from a TCP DNS stream (RFC 7766: each message
// preceded by its 2-byte length). It is an io.Writer for a TeeReader; it
// never fails, so the stream is never disturbed by what it finds.
type dnsStream struct {
	t   *nameTable
	buf []byte
}

func (s *dnsStream) Write(b []byte) (int, error) {
	s.buf = append(s.buf, b...)
	for len(s.buf) >= 2 {
		n := int(binary.BigEndian.Uint16(s.buf))
		if len(s.buf) < 2+n {
			break
		}
		s.t.learn(s.buf[2 : 2+n])
		s.buf = s.buf[2+n:]
	}
	return len(b), nil
}

func (t *nameTable) stats() *DNSStats {
	if t == nil {
		return nil
	}
	return &DNSStats{
		QueriesUDP: t.queriesUDP.Load(), QueriesTCP: t.queriesTCP.Load(), Answers: t.answers.Load(),
		Malformed: t.malformed.Load(), Truncated: t.truncated.Load(), Addresses: t.bindings.Load(),
		ServFail: t.servFails.Load(), UpstreamFailed: t.upstreamFailed.Load(), BadQueries: t.badQueries.Load(),
	}
}

func canonical(name string) string { return strings.TrimSuffix(strings.ToLower(name), ".") }

// ParseDNSUpstream parses --dns-upstream: ADDR, ADDR:PORT or [ADDR6]:PORT;
// the port defaults to 53.
func ParseDNSUpstream(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if ap.Port() == 0 {
			return netip.AddrPort{}, fmt.Errorf("%q: port 0", s)
		}
		return ap, nil
	}
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: want ADDR, ADDR:PORT or [ADDR6]:PORT", s)
	}
	return netip.AddrPortFrom(a, 53), nil
}

// hostResolver returns the first nameserver of the host's resolv.conf.
func hostResolver(path string) (netip.AddrPort, error) {
	f, err := os.Open(path)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("sandbox: DNS upstream: %w (give --dns-upstream)", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 2 && fs[0] == "nameserver" {
			if a, err := netip.ParseAddr(fs[1]); err == nil {
				return netip.AddrPortFrom(a.WithZone(""), 53), nil
			}
		}
	}
	return netip.AddrPort{}, fmt.Errorf("sandbox: DNS upstream: no nameserver in %s (give --dns-upstream)", path)
}

// servFail returns the SERVFAIL answer to the query q, with q's ID, flags
// and question, or nil when q is not a query it can answer (malformed, or
// itself a response). The service answers so when it has no upstream: the
// sandbox's resolver then fails at once, as glibc does with a dead
// nameserver after its timeout, instead of waiting.
func (t *nameTable) servFail(q []byte) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil || h.Response {
		t.badQueries.Add(1)
		return nil
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) > 1 {
		t.badQueries.Add(1)
		return nil
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{
		ID: h.ID, Response: true, OpCode: h.OpCode, RecursionDesired: h.RecursionDesired,
		RecursionAvailable: true, RCode: dnsmessage.RCodeServerFailure,
	})
	if err := b.StartQuestions(); err != nil {
		t.badQueries.Add(1)
		return nil
	}
	for _, question := range qs {
		if err := b.Question(question); err != nil {
			t.badQueries.Add(1)
			return nil
		}
	}
	msg, err := b.Finish()
	if err != nil {
		t.badQueries.Add(1)
		return nil
	}
	t.servFails.Add(1)
	return msg
}

// serveServFailTCP answers each query of a DNS-over-TCP stream (RFC 7766
// framing) with SERVFAIL until the client closes it, sends a query it
// cannot answer, or stays idle for idle.
func (t *nameTable) serveServFailTCP(c net.Conn, idle time.Duration) {
	defer c.Close()
	var n [2]byte
	for {
		_ = c.SetDeadline(time.Now().Add(idle))
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return
		}
		q := make([]byte, binary.BigEndian.Uint16(n[:]))
		if _, err := io.ReadFull(c, q); err != nil {
			return
		}
		a := t.servFail(q)
		if a == nil {
			return
		}
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(a))), a...)); err != nil {
			return
		}
	}
}

// serveServFailUDP answers each datagram of a UDP flow with SERVFAIL until
// the flow is idle for idle or its socket is closed.
func (t *nameTable) serveServFailUDP(c net.Conn, idle time.Duration) {
	defer c.Close()
	buf := make([]byte, 64<<10)
	for {
		_ = c.SetReadDeadline(time.Now().Add(idle))
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		t.queriesUDP.Add(1)
		if a := t.servFail(buf[:n]); a != nil {
			if _, err := c.Write(a); err != nil {
				return
			}
		}
	}
}
