package bpf

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/sluicenet/sluice/internal/testenv"
)

// XDP action codes, <linux/bpf.h> enum xdp_action.
const (
	xdpAborted  = 0
	xdpDrop     = 1
	xdpPass     = 2
	xdpRedirect = 4
)

func mustLoad(t testing.TB, p Program, opts LoadOptions) *Objects {
	t.Helper()
	o, err := Load(p, opts)
	if err != nil {
		t.Fatalf("load %s: %v", p, err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

func mustRun(t testing.TB, p *ebpf.Program, frame []byte) uint32 {
	t.Helper()
	ret, err := p.Run(&ebpf.RunOptions{Data: frame})
	if errors.Is(err, ebpf.ErrNotSupported) {
		testenv.Skip(t, "BPF_PROG_TEST_RUN for XDP is not supported by this kernel (needs 4.12)")
	}
	if err != nil {
		t.Fatalf("run %s: %v", p, err)
	}
	return ret
}

func mustCounters(t testing.TB, m *ebpf.Map) Counters {
	t.Helper()
	c, err := ReadCounters(m)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPassDropRun(t *testing.T) {
	testenv.RequireRoot(t)
	frame := ipv4Frame(17, netip.MustParseAddr("192.0.2.2"), 0, udpHdr(53, 10))
	for _, tc := range []struct {
		name string
		p    Program
		want uint32
		slot func(*Counters) Count
	}{
		{"pass", Pass, xdpPass, func(c *Counters) Count { return c.Passed }},
		{"drop", Drop, xdpDrop, func(c *Counters) Count { return c.Dropped }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := mustLoad(t, tc.p, LoadOptions{})
			for i := 0; i < 7; i++ {
				if got := mustRun(t, o.Program, frame); got != tc.want {
					t.Fatalf("run %d: action %d, want %d", i, got, tc.want)
				}
			}
			c := mustCounters(t, o.Stats)
			want := Count{Packets: 7, Bytes: 7 * uint64(len(frame))}
			if got := tc.slot(&c); got != want {
				t.Errorf("counter = %+v, want %+v (all: %v)", got, want, c)
			}
		})
	}
}

func TestTunnelHostRun(t *testing.T) {
	ns := testenv.NewNS(t)
	o := mustLoad(t, TunnelHost, LoadOptions{PassPorts: []uint16{22, 5353}})
	// Entry 0 must name a device of the namespace doing the update: lo
	// (ifindex 1) of a namespace made for this test. Test runs are not
	// live, so nothing is actually sent there.
	testenv.Do(t, ns, func() error { return o.SetTxPort(1) })
	v4 := netip.MustParseAddr("192.0.2.2")
	v6 := netip.MustParseAddr("2001:db8::2")
	for _, tc := range []struct {
		name  string
		frame []byte
		want  uint32
	}{
		{"ipv4 tcp 22 is control", ipv4Frame(6, v4, 0, tcpHdr(22)), xdpPass},
		{"ipv4 udp 5353 is control", ipv4Frame(17, v4, 0, udpHdr(5353, 4)), xdpPass},
		{"ipv4 tcp 80 is redirected", ipv4Frame(6, v4, 0, tcpHdr(80)), xdpRedirect},
		{"ipv4 udp 22 is control", ipv4Frame(17, v4, 0, udpHdr(22, 0)), xdpPass},
		{"ipv4 icmp is redirected", ipv4Frame(1, v4, 0, make([]byte, 8)), xdpRedirect},
		{"ipv4 non-first fragment has no port", ipv4Frame(6, v4, 100, tcpHdr(22)), xdpRedirect},
		{"ipv4 truncated tcp is redirected", ipv4Frame(6, v4, 0, tcpHdr(22)[:10]), xdpRedirect},
		{"ipv6 tcp 22 is control", ipv6Frame(6, v6, nil, tcpHdr(22)), xdpPass},
		{"ipv6 udp 443 is redirected", ipv6Frame(17, v6, nil, udpHdr(443, 4)), xdpRedirect},
		{"ipv6 hop-by-hop then tcp 22 is control", ipv6Frame(0, v6, hopByHop(6), tcpHdr(22)), xdpPass},
		{"ipv6 first fragment tcp 22 is control", ipv6Frame(44, v6, fragHdr(6, 0), tcpHdr(22)), xdpPass},
		{"ipv6 later fragment is redirected", ipv6Frame(44, v6, fragHdr(6, 10), tcpHdr(22)), xdpRedirect},
		{"arp goes to the stack", arpFrame(), xdpRedirect},
		{"unknown ethertype goes to the stack", ethFrame(0x88b5, make([]byte, 46)), xdpRedirect},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := mustRun(t, o.Program, tc.frame); got != tc.want {
				t.Errorf("action %d, want %d", got, tc.want)
			}
		})
	}
}

func TestTunnelVethRun(t *testing.T) {
	ns := testenv.NewNS(t)
	o := mustLoad(t, TunnelVeth, LoadOptions{})
	frame := ipv4Frame(6, netip.MustParseAddr("192.0.2.1"), 0, tcpHdr(22))
	// No tx port yet: the frame is passed rather than lost.
	if got := mustRun(t, o.Program, frame); got != xdpPass {
		t.Errorf("without tx_port: action %d, want pass (%d)", got, xdpPass)
	}
	testenv.Do(t, ns, func() error { return o.SetTxPort(1) })
	if got := mustRun(t, o.Program, frame); got != xdpRedirect {
		t.Errorf("with tx_port: action %d, want redirect (%d)", got, xdpRedirect)
	}
	c := mustCounters(t, o.Stats)
	if c.Passed.Packets != 1 || c.Redirected.Packets != 1 {
		t.Errorf("counters %v, want passed=1 redirected=1", c)
	}
}

func TestCaptureRun(t *testing.T) {
	testenv.RequireRoot(t)
	o := mustLoad(t, Capture, LoadOptions{Snaplen: 64})
	rd, err := ringbuf.NewReader(o.Events)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	short := ipv4Frame(17, netip.MustParseAddr("192.0.2.2"), 0, udpHdr(53, 4))
	long := ipv4Frame(17, netip.MustParseAddr("192.0.2.2"), 0, udpHdr(53, 1000))
	for _, f := range [][]byte{short, long} {
		if got := mustRun(t, o.Program, f); got != xdpPass {
			t.Fatalf("action %d, want pass", got)
		}
	}
	for i, f := range [][]byte{short, long} {
		rd.SetDeadline(time.Now().Add(time.Second))
		rec, err := rd.Read()
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		fr, ok := parseCaptureEvent(rec.RawSample, 0)
		if !ok {
			t.Fatalf("record %d: malformed", i)
		}
		wantCap := min(len(f), 64)
		if fr.Length != len(f) || len(fr.Data) != wantCap || string(fr.Data) != string(f[:wantCap]) {
			t.Errorf("record %d: len %d caplen %d, want len %d caplen %d with the frame's first bytes", i, fr.Length, len(fr.Data), len(f), wantCap)
		}
		if fr.Time.IsZero() {
			t.Errorf("record %d: no timestamp", i)
		}
	}
	if c := mustCounters(t, o.Stats); c.Passed.Packets != 2 || c.Lost.Packets != 0 {
		t.Errorf("counters %v, want passed=2 lost=0", c)
	}
}

func TestParseCaptureEventBounds(t *testing.T) {
	// A caplen larger than the record must not read past it.
	b := make([]byte, captureHeader+10)
	b[20] = 200
	f, ok := parseCaptureEvent(b, 0)
	if !ok || len(f.Data) != 10 {
		t.Fatalf("got ok=%v len=%d, want the 10 bytes present", ok, len(f.Data))
	}
	if _, ok := parseCaptureEvent(b[:5], 0); ok {
		t.Fatal("short record accepted")
	}
}
