package bench

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
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
