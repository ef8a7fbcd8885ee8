package sandbox

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsSeeds are answers for the fuzz targets' corpora: a CNAME chain to an
// A record, an AAAA record, a truncated answer, one claiming answers it
// lacks, and a CNAME loop.
func dnsSeeds(t testing.TB) [][]byte {
	rh := func(n string, typ dnsmessage.Type) dnsmessage.ResourceHeader {
		return dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(n), Type: typ, Class: dnsmessage.ClassINET, TTL: 30}
	}
	build := func(h dnsmessage.Header, add func(b *dnsmessage.Builder)) []byte {
		b := dnsmessage.NewBuilder(nil, h)
		b.EnableCompression()
		_ = b.StartQuestions()
		_ = b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName("svc.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
		_ = b.StartAnswers()
		add(&b)
		m, err := b.Finish()
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	return [][]byte{
		build(dnsmessage.Header{ID: 1, Response: true}, func(b *dnsmessage.Builder) {
			_ = b.CNAMEResource(rh("svc.test.", dnsmessage.TypeCNAME), dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName("real.test.")})
			_ = b.AResource(rh("real.test.", dnsmessage.TypeA), dnsmessage.AResource{A: [4]byte{10, 99, 0, 1}})
		}),
		build(dnsmessage.Header{ID: 2, Response: true}, func(b *dnsmessage.Builder) {
			_ = b.AAAAResource(rh("v6.test.", dnsmessage.TypeAAAA), dnsmessage.AAAAResource{AAAA: netip.MustParseAddr("fd99::1").As16()})
			_ = b.MXResource(rh("v6.test.", dnsmessage.TypeMX), dnsmessage.MXResource{Pref: 1, MX: dnsmessage.MustNewName("mx.test.")})
		}),
		build(dnsmessage.Header{ID: 3, Response: true, Truncated: true}, func(*dnsmessage.Builder) {}),
		{0, 4, 0x81, 0x80, 0, 1, 0, 5, 0xde, 0xad},
		build(dnsmessage.Header{ID: 5, Response: true}, func(b *dnsmessage.Builder) {
			_ = b.CNAMEResource(rh("a.test.", dnsmessage.TypeCNAME), dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName("b.test.")})
			_ = b.CNAMEResource(rh("b.test.", dnsmessage.TypeCNAME), dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName("a.test.")})
			_ = b.AResource(rh("a.test.", dnsmessage.TypeA), dnsmessage.AResource{A: [4]byte{10, 99, 0, 2}})
		}),
	}
}

// FuzzDNSAnswer feeds any bytes from the upstream to what the DNS service
// does with them: learn (one UDP answer), the TCP stream parser (framed,
// cut at any point) and the SERVFAIL answerer. None may panic; an answer
// whose header, questions and answers parse is never counted malformed and
// one whose header or questions do not always is; every address learnt was
// in an A or AAAA record of the answer; a SERVFAIL answer is a well-formed
// response to its query.
func FuzzDNSAnswer(f *testing.F) {
	for _, m := range dnsSeeds(f) {
		f.Add(m, uint16(len(m)/2))
	}
	f.Add([]byte{}, uint16(0))
	f.Fuzz(func(t *testing.T, msg []byte, cut uint16) {
		names := newNameTable()
		names.learn(msg)
		st := names.stats()
		if st.Answers != 1 {
			t.Fatalf("answers = %d, want 1", st.Answers)
		}
		var p dnsmessage.Parser
		h, err := p.Start(msg)
		var inAnswer map[netip.Addr]bool
		if err == nil {
			if _, err = p.AllQuestions(); err == nil {
				var rs []dnsmessage.Resource
				if rs, err = p.AllAnswers(); err == nil {
					inAnswer = map[netip.Addr]bool{}
					for _, r := range rs {
						switch b := r.Body.(type) {
						case *dnsmessage.AResource:
							inAnswer[netip.AddrFrom4(b.A)] = true
						case *dnsmessage.AAAAResource:
							inAnswer[netip.AddrFrom16(b.AAAA)] = true
						}
					}
					// AllAnswers alone is lenient: a body parser
					// that reads less than the record's declared
					// length (an MX whose length runs past the
					// message) passes. Skipping checks the lengths.
					var skip dnsmessage.Parser
					_, _ = skip.Start(msg)
					_ = skip.SkipAllQuestions()
					if skip.SkipAllAnswers() == nil && st.Malformed != 0 {
						t.Fatalf("a well-formed answer counted malformed: %+v", st)
					}
				}
			} else if st.Malformed == 0 {
				t.Fatalf("questions do not parse (%v), not counted malformed", err)
			}
			if h.Truncated != (st.Truncated == 1) {
				t.Fatalf("TC bit %v, truncated counter %d", h.Truncated, st.Truncated)
			}
		} else if st.Malformed != 1 {
			t.Fatalf("header does not parse (%v), malformed counter %d", err, st.Malformed)
		}
		names.mu.Lock()
		for a := range names.names {
			if inAnswer != nil && !inAnswer[a] {
				t.Fatalf("learnt %v, which is in no A or AAAA record", a)
			}
		}
		names.mu.Unlock()

		// The same message over TCP, written in two pieces.
		if len(msg) <= 0xffff {
			framed := append(binary.BigEndian.AppendUint16(nil, uint16(len(msg))), msg...)
			c := min(int(cut), len(framed))
			s := &dnsStream{t: newNameTable()}
			_, _ = s.Write(framed[:c])
			_, _ = s.Write(framed[c:])
			if got := s.t.stats(); got.Answers != 1 || got.Malformed != st.Malformed || got.Addresses != st.Addresses {
				t.Fatalf("over TCP: %+v, over UDP: %+v", got, st)
			}
		}

		// The bytes as a query to a service without an upstream.
		if a := names.servFail(msg); a != nil {
			var q, r dnsmessage.Parser
			qh, err := q.Start(msg)
			if err != nil {
				t.Fatalf("answered a query that does not parse: %v", err)
			}
			rh, err := r.Start(a)
			if err != nil || !rh.Response || rh.ID != qh.ID || rh.RCode != dnsmessage.RCodeServerFailure {
				t.Fatalf("SERVFAIL answer %+v, %v to query %+v", rh, err, qh)
			}
			if _, err := r.AllQuestions(); err != nil {
				t.Fatalf("SERVFAIL answer's questions: %v", err)
			}
		}
	})
}
