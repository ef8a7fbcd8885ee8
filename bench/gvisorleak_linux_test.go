package bench

import (
	"reflect"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/dataplane"
)

func TestParseRange(t *testing.T) {
	for _, tc := range []struct {
		in         string
		start, end uintptr
		ok         bool
	}{
		{in: "7f1044b5f000-7f1044d60000", start: 0x7f1044b5f000, end: 0x7f1044d60000, ok: true},
		{in: "7f1044d60000-7f1044b5f000"},
		{in: "7f1044b5f000"},
		{in: "zz-7f1044d60000"},
	} {
		start, end, ok := parseRange(tc.in)
		if start != tc.start || end != tc.end || ok != tc.ok {
			t.Errorf("parseRange(%q) = %#x, %#x, %v; want %#x, %#x, %v", tc.in, start, end, ok, tc.start, tc.end, tc.ok)
		}
	}
}

func TestNewEventFDs(t *testing.T) {
	before := map[int]string{3: "anon_inode:[eventfd]", 4: "socket:[1]"}
	after := map[int]string{3: "anon_inode:[eventfd]", 4: "socket:[1]", 5: "anon_inode:[eventfd]", 6: "socket:[2]", 7: "anon_inode:[eventfd]"}
	got := newEventFDs(before, after)
	slices.Sort(got)
	if diff := cmp.Diff([]int{5, 7}, got); diff != "" {
		t.Errorf("newEventFDs (-want +got):\n%s", diff)
	}
}

// TestDropDispatchers releases a stopped gVisor endpoint (on a socketpair,
// which its readv dispatcher reads like any socket) and checks that its
// dispatcher list is gone, and that anything else is refused.
func TestDropDispatchers(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer closeFDs(fds[:])
	ep, release, err := newGVisorEndpoint(endpointConfig{fds: fds[:1], mode: dataplane.Readv, mtu: 1500})
	if err != nil {
		t.Fatal(err)
	}
	ep.Attach(&countingDispatcher{})
	stopEndpoint(ep)
	if err := release(); err != nil {
		t.Fatalf("release: %v", err)
	}
	if f := reflect.ValueOf(ep).Elem().FieldByName("inboundDispatchers"); !f.IsNil() {
		t.Errorf("inboundDispatchers still holds %d dispatchers after release", f.Len())
	}

	for _, bad := range []any{nil, struct{ inboundDispatchers []int }{}, &struct{}{}, &struct{ inboundDispatchers int }{}} {
		if err := dropDispatchers(bad); err == nil {
			t.Errorf("dropDispatchers(%#v) succeeded, want an error", bad)
		}
	}
}
