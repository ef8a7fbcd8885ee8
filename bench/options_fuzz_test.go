package bench

import (
	"slices"
	"testing"

	"github.com/sluicenet/sluice/dataplane"
)

// FuzzParseLists feeds arbitrary flag values to every list parser and
// checks the invariants of a successful parse: a non-empty list of valid,
// distinct values.
func FuzzParseLists(f *testing.F) {
	for _, s := range []string{"readv,recvmmsg,mmap", "1,2", "rx_pps,tx_pps,tcp_gbps", "sluice,gvisor", ",,", " mmap , 64", "bogus", "0", "-1", "99999999999999999999",
		"none,host,software", "on,off", "up,down", "4,6", "ipv6", "1,4", "ON, Off"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if modes, err := ParseModes([]string{s}); err == nil {
			if len(modes) == 0 || !distinct(modes) {
				t.Errorf("ParseModes(%q) = %v", s, modes)
			}
			for _, m := range modes {
				if !slices.Contains(dataplane.Modes, m) && m != ModeXDP {
					t.Errorf("ParseModes(%q) returned unknown mode %v", s, m)
				}
			}
		}
		if chans, err := ParseChannels([]string{s}); err == nil {
			if len(chans) == 0 || !distinct(chans) {
				t.Errorf("ParseChannels(%q) = %v", s, chans)
			}
			for _, c := range chans {
				if c < 1 || c > MaxChannels {
					t.Errorf("ParseChannels(%q) returned %d", s, c)
				}
			}
		}
		checkEnum(t, "ParseTCPModes", s, ParseTCPModes, dataplane.Modes)
		checkEnum(t, "ParseGSO", s, ParseGSO, GSOKinds)
		checkEnum(t, "ParseDirections", s, ParseDirections, Directions)
		checkEnum(t, "ParseOnOff", s, func(l []string) ([]bool, error) { return ParseOnOff("--gro", l) }, []bool{true, false})
		checkEnum(t, "ParseIPVersions", s, ParseIPVersions, []int{4, 6})
		if flows, err := ParseFlows([]string{s}); err == nil {
			if len(flows) == 0 || !distinct(flows) {
				t.Errorf("ParseFlows(%q) = %v", s, flows)
			}
			for _, f := range flows {
				if f < 1 || f > MaxFlows {
					t.Errorf("ParseFlows(%q) returned %d", s, f)
				}
			}
		}
		for _, p := range []struct {
			parse func([]string) ([]string, error)
			valid []string
		}{{ParseMetrics, DispatchMetrics}, {ParseImpls, Impls}} {
			names, err := p.parse([]string{s})
			if err != nil {
				continue
			}
			if len(names) == 0 || !distinct(names) {
				t.Errorf("parse(%q) = %v", s, names)
			}
			for _, n := range names {
				if !slices.Contains(p.valid, n) {
					t.Errorf("parse(%q) returned unknown %q", s, n)
				}
			}
		}
	})
}

func distinct[T comparable](xs []T) bool {
	seen := map[T]bool{}
	for _, x := range xs {
		if seen[x] {
			return false
		}
		seen[x] = true
	}
	return true
}

// checkEnum checks the invariants of a successful parse of s: a non-empty
// list of distinct values, all of them valid.
func checkEnum[T comparable](t *testing.T, name, s string, parse func([]string) ([]T, error), valid []T) {
	t.Helper()
	got, err := parse([]string{s})
	if err != nil {
		return
	}
	if len(got) == 0 || !distinct(got) {
		t.Errorf("%s(%q) = %v", name, s, got)
	}
	for _, v := range got {
		if !slices.Contains(valid, v) {
			t.Errorf("%s(%q) returned unknown %v", name, s, v)
		}
	}
}
