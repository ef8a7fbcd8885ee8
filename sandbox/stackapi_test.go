package sandbox

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

type nopStack struct{}

func (nopStack) PreInit(*StackEnv) (string, []int, error) { return "", nil, nil }
func (nopStack) Init(string, []int) error                 { return nil }
func (nopStack) CreateLinksAndRoutes() error              { return nil }
func (nopStack) Stats() []LinkStats                       { return nil }
func (nopStack) ServiceStats() map[string]uint64          { return nil }
func (nopStack) Close() error                             { return nil }

func TestRegisterStack(t *testing.T) {
	nop := func() (Stack, error) { return nopStack{}, nil }
	const name = "registry-test.stack_1"
	if err := RegisterStack(name, nop); err != nil {
		t.Fatalf("RegisterStack(%q): %v", name, err)
	}
	t.Cleanup(func() { unregisterStack(name) })
	if !slices.Contains(Stacks(), name) || !slices.Contains(Stacks(), NetstackName) {
		t.Errorf("Stacks() = %q, want %q and %q in it", Stacks(), name, NetstackName)
	}
	if !slices.IsSorted(Stacks()) {
		t.Errorf("Stacks() = %q is not sorted", Stacks())
	}
	if f, err := LookupStack(name); err != nil || f == nil {
		t.Errorf("LookupStack(%q) = %v, %v", name, f, err)
	}

	for _, tc := range []struct {
		name string
		f    StackFactory
		want string
	}{
		{name, nop, "already registered"},
		{NetstackName, nop, "already registered"},
		{"", nop, "empty name"},
		{"two words", nop, "letters, digits"},
		{"a,b", nop, "letters, digits"},
		{"nil-factory", nil, "nil factory"},
	} {
		err := RegisterStack(tc.name, tc.f)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("RegisterStack(%q) = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	if slices.Contains(Stacks(), "nil-factory") {
		t.Error("a refused registration is listed")
	}

	_, err := LookupStack("no-such-stack")
	if err == nil {
		t.Fatal("LookupStack of an unknown name succeeded")
	}
	for _, w := range []string{"--plugin no-such-stack", "no such stack", NetstackName, name} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("LookupStack error %q lacks %q", err, w)
		}
	}
}

func TestStackName(t *testing.T) {
	c := DefaultConfig()
	if got := c.StackName(); got != NetstackName {
		t.Errorf("--network sandbox: StackName() = %q, want %q", got, NetstackName)
	}
	c.Network, c.Plugin = NetworkPlugin, "bridge"
	if got := c.StackName(); got != "bridge" {
		t.Errorf("--network plugin --plugin bridge: StackName() = %q", got)
	}
	c.Network, c.Plugin = NetworkHost, ""
	if got := c.StackName(); got != "" {
		t.Errorf("--network host: StackName() = %q, want none", got)
	}
}

func TestStackEnvDecide(t *testing.T) {
	var log strings.Builder
	c := DefaultConfig()
	c.Deny = []string{"10.0.0.0/8:443/tcp"}
	c.Allow = []string{"10.1.0.0/16"}
	p, err := NewPolicy(c, &log, false)
	if err != nil {
		t.Fatal(err)
	}
	env := &StackEnv{policy: p}
	src := netip.MustParseAddrPort("10.0.2.100:40000")
	for _, tc := range []struct {
		f    Flow
		want Verdict
	}{
		{Flow{"tcp", src, netip.MustParseAddrPort("10.1.2.3:443")}, Verdict{false, "--deny 10.0.0.0/8:443/tcp"}},
		{Flow{"udp", src, netip.MustParseAddrPort("10.1.2.3:443")}, Verdict{true, "--allow 10.1.0.0/16"}},
		{Flow{"udp", src, netip.MustParseAddrPort("192.0.2.1:53")}, Verdict{true, "default"}},
	} {
		if got := env.Decide(tc.f); got != tc.want {
			t.Errorf("Decide(%+v) = %+v, want %+v", tc.f, got, tc.want)
		}
	}
	var flows uint64
	for _, s := range p.Stats() {
		flows += s.Flows
	}
	if flows != 3 {
		t.Errorf("policy stats %+v count %d flows, want 3", p.Stats(), flows)
	}
	if n := strings.Count(log.String(), "\n"); n != 3 || !strings.Contains(log.String(), "deny tcp 10.0.2.100:40000 -> 10.1.2.3:443") {
		t.Errorf("policy log %q: want 3 lines with the denied flow", log.String())
	}
	if got := (&StackEnv{}).Decide(Flow{"tcp", src, netip.MustParseAddrPort("192.0.2.1:80")}); got != (Verdict{true, "default"}) {
		t.Errorf("without a policy Decide = %+v, want allowed by default", got)
	}
}

func TestFrameTapRecord(t *testing.T) {
	c := DefaultConfig()
	c.PCAPLog = filepath.Join(t.TempDir(), "x.pcap")
	c.LogPackets = true
	var lines strings.Builder
	tp, err := newTap(c, &lines, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var ft FrameTap = tp
	frame := make([]byte, 60) // an Ethernet header and zeros: ethertype 0
	ft.Record(FromSandbox, frame)
	ft.Record(ToSandbox, frame)
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(c.PCAPLog)
	if err != nil {
		t.Fatal(err)
	}
	if want := 24 + 2*(16+len(frame)); len(b) != want {
		t.Errorf("pcap file has %d bytes, want %d (header and two records)", len(b), want)
	}
	ls := strings.Split(strings.TrimSpace(lines.String()), "\n")
	if len(ls) != 2 || !strings.Contains(ls[0], " in ") || !strings.Contains(ls[1], " out ") {
		t.Errorf("packet log %q: want an in line and an out line", lines.String())
	}
}
