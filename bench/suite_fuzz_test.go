package bench

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzParseFilters feeds arbitrary --only values to ParseFilters and checks
// the invariants of a successful parse: a scenario name, conditions with
// keys and values, the text kept; and that matching never panics.
func FuzzParseFilters(f *testing.F) {
	for _, s := range []string{"dispatch", "dispatch:channels=1", "dispatch:metric=rx_pps/tx_pps:mode=mmap", ":x=1", "tcp:", "a:b", "a:=1", "a:b=", "a:b=1/", " tcp ", "x:y=1:y=2"} {
		f.Add(s, "metric=rx_pps,mode=mmap,channels=1")
	}
	f.Fuzz(func(t *testing.T, s, config string) {
		fs, err := ParseFilters([]string{s})
		if err != nil {
			return
		}
		for _, flt := range fs {
			if flt.Scenario == "" || strings.Contains(flt.Scenario, ":") {
				t.Errorf("ParseFilters(%q): scenario %q", s, flt.Scenario)
			}
			if flt.String() != strings.TrimSpace(s) {
				t.Errorf("ParseFilters(%q): String() = %q", s, flt.String())
			}
			for k, vs := range flt.Conds {
				if k == "" || len(vs) == 0 {
					t.Errorf("ParseFilters(%q): condition %q = %q", s, k, vs)
				}
			}
			// A filter selects its scenario as a whole, never another.
			if !selected(fs, flt.Scenario, "") || selected(fs, flt.Scenario+"\x00", config) {
				t.Errorf("ParseFilters(%q): selection of scenario %q is wrong", s, flt.Scenario)
			}
			_ = selected(fs, flt.Scenario, config)
		}
	})
}

// FuzzReadResults feeds arbitrary files to ReadResults: it must not panic,
// and what it reads must write back and read again unchanged.
func FuzzReadResults(f *testing.F) {
	var seed bytes.Buffer
	if err := sandboxLike().WriteJSONL(&seed); err != nil {
		f.Fatal(err)
	}
	f.Add(seed.String())
	f.Add(`{"scenario":"dispatch","impl":"sluice","config":"mode=mmap","metric":"rx_pps","value":1,"unit":"frames/s"}`)
	f.Add(`{"kind":"skip","scenario":"x","metric":"rx_pps","value":3,"reason":"r"}`)
	f.Add("{\"kind\":\"end\"}\n{\"kind\":\"machine\",\"cores\":-1}")
	f.Fuzz(func(t *testing.T, in string) {
		res, err := ReadResults(strings.NewReader(in))
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := res.WriteJSONL(&out); err != nil {
			t.Fatalf("WriteJSONL of what ReadResults read: %v", err)
		}
		again, err := ReadResults(&out)
		if err != nil {
			t.Fatalf("ReadResults of what WriteJSONL wrote: %v\n%s", err, out.String())
		}
		if d := cmp.Diff(res, again); d != "" {
			t.Errorf("round trip (-read +again):\n%s", d)
		}
	})
}
