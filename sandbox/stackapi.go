package sandbox

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"sync"
)

// NetstackName is the registered name of the gVisor netstack, the stack of
// --network sandbox.
const NetstackName = "netstack"

// Stack is a network stack behind the sandbox's eth0: everything the command
// sends reaches it, and it decides what leaves and how. The netstack
// (NetstackName, --network sandbox) terminates every flow in gVisor and
// re-originates it from host sockets; another stack is chosen with
// --network plugin --plugin NAME once registered with RegisterStack.
//
// Start drives a Stack in sluice's process, before the command has run
// anything, calling each method once, in this order, from one goroutine:
//
//  1. PreInit(env) prepares namespaces and devices. It runs on an ordinary
//     goroutine in sluice's own network namespace: it reaches the others
//     through env's descriptors (run code in one with
//     internal/netns.DoFD, or open a netlink handle on it), and must leave
//     its thread where it found it. When it is called, the command's
//     namespace (env.CommandNS) holds only lo, up, and the private stack
//     namespace (env.StackNS) is empty. PreInit must create the sandbox's
//     link: the veth from the stack namespace (env.Args.StackLink) to eth0
//     in the command's, with eth0's addresses and default routes as
//     env.Args.Sandbox says; env.SetUpSandboxLink does exactly that. It
//     also creates whatever devices of its own it needs, and refuses what
//     it cannot serve (env.Publish, env.DNSService, a bad env.PluginConfig)
//     with an error naming the flag. It returns an init string and
//     descriptors for Init: what the stack learnt while preparing and needs
//     once running (the netstack passes eth0's MAC address). The env
//     pointer stays valid until Close returns.
//  2. Init(initStr, fds) starts the stack itself with what PreInit
//     returned. The descriptors are the stack's from then on, whether Init
//     succeeds or not: it closes them in Close.
//  3. CreateLinksAndRoutes creates the links, addresses, routes and
//     neighbours of env.Args over sluice's endpoints (the stack side of
//     the veth is env.Args.StackLink) and starts moving frames. When it
//     returns, the command may send.
//
// Then the command runs. Stats and ServiceStats may be called at any time
// from any goroutine, also before step 3 (they return nil then).
//
// Close is called once, after the command has exited (processes it left in
// the background are killed after Close), and also when any step above
// failed, in which case the command never runs: Close must then undo
// whatever part of the steps was done. It stops every goroutine the stack
// started and waits for them, stopping frame readers before closing what
// they deliver to (a reader blocked delivering into a closing stack can
// deadlock it; see Links.Stop); it stops calling env.Tap and env.Decide;
// it releases every descriptor it holds. It does not close env's namespace
// descriptors: Start owns them and closes them after Close, and closing the
// stack namespace's last descriptor destroys it with the veth and every
// device in it. An error from PreInit, Init or CreateLinksAndRoutes ends
// Start with that error, naming the stack and the step; one from Close is
// logged.
type Stack interface {
	PreInit(env *StackEnv) (initStr string, fds []int, err error)
	Init(initStr string, fds []int) error
	CreateLinksAndRoutes() error
	// Stats returns the counters of the stack's side of each link, from
	// the stack's view (rx is what the sandbox sent).
	Stats() []LinkStats
	// ServiceStats returns counters of the stack's own services (name ->
	// value, for --stats and --stats-file); nil when it has none.
	ServiceStats() map[string]uint64
	Close() error
}

// StackFactory returns a new, unstarted Stack for one sandbox.
type StackFactory func() (Stack, error)

// StackEnv is what the boot layer gives a stack: the plan, the namespaces,
// and sluice's services (logging, egress policy, frame tap). The namespace
// descriptors are borrowed: the stack must not close them.
type StackEnv struct {
	// Name is the stack's registered name.
	Name string
	// Args is the plan. The stack may complete it (the netstack adds
	// eth0's MAC address as a neighbour); Sandbox.Args reports it so.
	Args *Args
	// CommandNS is the command's network namespace, holding lo (up) and,
	// once PreInit made it, eth0.
	CommandNS int
	// StackNS is a private, anonymous namespace for the stack's devices;
	// nothing else is in it, and it dies when Start closes it.
	StackNS int
	// UplinkNS is the namespace traffic leaves in (--uplink-netns), or -1
	// for sluice's own.
	UplinkNS int
	// Logger receives warnings and debug details; never nil.
	Logger *slog.Logger
	// Tap records frames of the sandbox link for --pcap-log and
	// --log-packets; nil when neither is on.
	Tap FrameTap
	// PluginConfig is the --plugin-config string, the stack's to parse.
	PluginConfig string
	// FaultCorpus is the --fault-corpus directory: where a stack that
	// contains a panic while handling a frame writes that frame
	// (dataplane.FaultOptions.CorpusDir); empty for nowhere.
	FaultCorpus string
	// Publish are the host ports to forward into the sandbox (--publish).
	Publish []Publish
	// DNSService says the sandbox's DNS service is on: the stack serves
	// DNS on its gateway addresses (port 53) or refuses the run. It is on
	// by default for --network sandbox; a plugin stack gets it only with
	// --dns-upstream. DNS is where the queries are forwarded; invalid when
	// there is no upstream (the host's resolv.conf names no nameserver),
	// and the service then answers SERVFAIL.
	DNSService bool
	DNS        netip.AddrPort

	policy *Policy
	names  *nameTable
	tap    *tap
}

// Flow is the 5-tuple of a new flow of the sandbox.
type Flow struct {
	// Proto is "tcp" or "udp".
	Proto    string
	Src, Dst netip.AddrPort
}

// Verdict is the egress policy's decision on a flow.
type Verdict struct {
	Allow bool
	// Rule is the rule that decided, as its flag (--deny 10.0.0.0/8),
	// "--deny all" or "default".
	Rule string
}

// Decide applies the egress policy (--allow, --deny) to a new flow; call it
// once per flow, at its first packet, from any goroutine. It counts the
// decision in the policy's stats and logs it with --log-policy, as for the
// netstack's flows. Without a policy every flow is allowed.
func (e *StackEnv) Decide(f Flow) Verdict {
	allow, rule := e.policy.DecideRule(f.Proto, f.Src, f.Dst)
	return Verdict{Allow: allow, Rule: rule}
}

// FrameDirection is the direction of a frame on the sandbox link.
type FrameDirection int

const (
	// FromSandbox is a frame the sandbox sent (the stack receives it).
	FromSandbox FrameDirection = iota
	// ToSandbox is a frame the stack sends to the sandbox.
	ToSandbox
)

// FrameTap records whole Ethernet frames of the sandbox link, as they cross
// the stack side of the veth. It is safe for concurrent use, never fails
// (a capture that cannot be written stops, logged once) and is done with
// frame when it returns, so the caller may reuse the buffer.
type FrameTap interface {
	Record(dir FrameDirection, frame []byte)
}

// Record implements FrameTap.
func (t *tap) Record(dir FrameDirection, frame []byte) {
	if dir == FromSandbox {
		t.record("in", frame)
		return
	}
	t.record("out", frame)
}

var registry = struct {
	sync.Mutex
	m map[string]StackFactory
}{m: map[string]StackFactory{}}

// RegisterStack makes a stack available as --network plugin --plugin name.
// Names are non-empty and made of letters, digits, '-', '_' and '.', and
// each is registered once.
func RegisterStack(name string, f StackFactory) error {
	if name == "" {
		return errors.New("sandbox: register stack: empty name")
	}
	if strings.IndexFunc(name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	}) >= 0 {
		return fmt.Errorf("sandbox: register stack %q: a name is letters, digits, '-', '_' and '.'", name)
	}
	if f == nil {
		return fmt.Errorf("sandbox: register stack %q: nil factory", name)
	}
	registry.Lock()
	defer registry.Unlock()
	if _, ok := registry.m[name]; ok {
		return fmt.Errorf("sandbox: register stack %q: already registered", name)
	}
	registry.m[name] = f
	return nil
}

// unregisterStack removes a stack; tests use it to clean up.
func unregisterStack(name string) {
	registry.Lock()
	defer registry.Unlock()
	delete(registry.m, name)
}

// LookupStack returns the factory of the stack called name, or an error that
// lists the registered ones.
func LookupStack(name string) (StackFactory, error) {
	registry.Lock()
	f, ok := registry.m[name]
	registry.Unlock()
	if !ok {
		return nil, fmt.Errorf("--plugin %s: no such stack (registered: %s)", name, strings.Join(Stacks(), ", "))
	}
	return f, nil
}

// Stacks returns the names of the registered stacks, sorted.
func Stacks() []string {
	registry.Lock()
	defer registry.Unlock()
	out := make([]string, 0, len(registry.m))
	for n := range registry.m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
