package sandbox

import (
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
