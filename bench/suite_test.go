package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeScenario is a Scenario whose steps report canned rows, for testing
// the suite without namespaces.
type fakeScenario struct {
	name  string
	skip  string
	steps []Step
	// run is called for each step; nil reports one row per step.
	run func(ctx context.Context, step Step, out *StepOutput) error
	ran *[]string // "name/label#repeat", appended by Run
}

func (f fakeScenario) Name() string        { return f.name }
func (f fakeScenario) Description() string { return "a fake scenario named " + f.name }
func (f fakeScenario) Plan(SuiteOptions) ([]Step, string) {
	return f.steps, f.skip
}

func (f fakeScenario) Run(ctx context.Context, _ SuiteOptions, step Step, out *StepOutput) error {
	*f.ran = append(*f.ran, fmt.Sprintf("%s/%s#%d", f.name, step.Label, out.repeat))
	if f.run != nil {
		return f.run(ctx, step, out)
	}
	out.Row(Row{Impl: ImplSluice, Config: step.Config, Metric: MetricRXPPS, Value: 1, Unit: UnitFramesPerSec})
	return nil
}

// fakeClock advances by a second at every reading, so that elapsed times
// and estimates are deterministic.
func fakeClock() func() time.Time {
	t := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	return func() time.Time {
		t = t.Add(time.Second)
		return t
	}
}

func TestRunSuiteOrderRepeatsAndSkips(t *testing.T) {
	var ran []string
	scs := []Scenario{
		fakeScenario{name: "a", ran: &ran, steps: []Step{
			{Label: "a1", Config: "k=1", Estimate: time.Second},
			{Label: "a2", Config: "k=2", Skip: "no widget here"},
			{Label: "a3", Config: "k=3", Estimate: time.Second},
		}},
		fakeScenario{name: "b", ran: &ran, skip: "needs a tool that is not installed"},
		fakeScenario{name: "c", ran: &ran, steps: []Step{{Label: "c1", Config: "k=1", Estimate: time.Second}},
			run: func(context.Context, Step, *StepOutput) error { return errors.New("boom") }},
	}
	var (
		events  []Event
		records []Record
		started *SuiteResult
	)
	res, err := RunSuite(context.Background(), Machine{Kernel: "6.18"}, SuiteOptions{
		Duration:  time.Second,
		Repeat:    2,
		Scenarios: scs,
		Progress:  func(e Event) { events = append(events, e) },
		Record:    func(r Record) { records = append(records, r) },
		Start:     func(r *SuiteResult) { started = r },
		Now:       fakeClock(),
	})
	if err != nil {
		t.Fatalf("RunSuite: %v", err)
	}
	// Repeats are interleaved: all of run 1, then all of run 2.
	want := []string{"a/a1#1", "a/a3#1", "c/c1#1", "a/a1#2", "a/a3#2", "c/c1#2"}
	if d := cmp.Diff(want, ran); d != "" {
		t.Errorf("steps run (-want +got):\n%s", d)
	}
	if started == nil || started.Machine.Kernel != "6.18" || started.Run.Repeats != 2 {
		t.Errorf("Start got %+v, want the machine and the run's facts", started)
	}
	if d := cmp.Diff(res.Records, records); d != "" {
		t.Errorf("Record callback and result differ (-result +callback):\n%s", d)
	}
	var kinds []string
	for _, r := range res.Records {
		kinds = append(kinds, fmt.Sprintf("%s %s %s #%d", r.Kind, r.Scenario, r.Config, r.Repeat))
	}
	wantKinds := []string{
		// Skips first, once, not per repeat.
		"skip a k=2 #0", "skip b  #0",
		"row a k=1 #1", "row a k=3 #1", "error c k=1 #1",
		"row a k=1 #2", "row a k=3 #2", "error c k=1 #2",
	}
	if d := cmp.Diff(wantKinds, kinds); d != "" {
		t.Errorf("records (-want +got):\n%s", d)
	}
	if res.Records[len(res.Records)-1].Error != "boom" {
		t.Errorf("error record %+v, want the step's error", res.Records[len(res.Records)-1])
	}

	var starts, dones, skips int
	for _, e := range events {
		switch e.Kind {
		case EventStepStart:
			starts++
		case EventStepDone:
			dones++
			if e.Total != 6 {
				t.Errorf("Total = %d, want 6 (3 steps run twice)", e.Total)
			}
			if e.Scenario == "c" && e.Err == nil {
				t.Errorf("done event of c has no error")
			}
			if e.Scenario == "a" && (len(e.Rows) != 1 || e.Last == nil) {
				t.Errorf("done event of a: Rows %v Last %v, want the step's row", e.Rows, e.Last)
			}
		case EventSkip:
			skips++
			if e.Reason == "" {
				t.Errorf("skip event without a reason: %+v", e)
			}
		}
	}
	if starts != 6 || dones != 6 || skips != 2 {
		t.Errorf("events: %d starts, %d dones, %d skips; want 6, 6, 2", starts, dones, skips)
	}
	last := events[len(events)-1]
	if last.Done != 6 || last.Remaining != 0 {
		t.Errorf("last event Done %d Remaining %v, want 6 and 0", last.Done, last.Remaining)
	}
	if res.Run.Interrupted || res.Run.ElapsedSec <= 0 {
		t.Errorf("Run = %+v, want finished with an elapsed time", res.Run)
	}
}

func TestRunSuiteCancelStopsAfterTheStep(t *testing.T) {
	var ran []string
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cleaned := 0
	sc := fakeScenario{name: "a", ran: &ran, steps: []Step{{Label: "1"}, {Label: "2"}, {Label: "3"}},
		run: func(ctx context.Context, step Step, out *StepOutput) error {
			defer func() { cleaned++ }()
			if step.Label == "2" {
				cancel() // as SIGINT would, mid-step
				<-ctx.Done()
				return ctx.Err()
			}
			out.Row(Row{Impl: ImplSluice, Metric: MetricRXPPS, Value: 1})
			return nil
		}}
	res, err := RunSuite(ctx, Machine{}, SuiteOptions{Scenarios: []Scenario{sc}, Now: fakeClock()})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("RunSuite error %v, want context.Canceled", err)
	}
	if d := cmp.Diff([]string{"a/1#1", "a/2#1"}, ran); d != "" {
		t.Errorf("steps run (-want +got):\n%s", d)
	}
	if cleaned != 2 {
		t.Errorf("%d steps returned, want 2", cleaned)
	}
	if !res.Run.Interrupted {
		t.Errorf("Run.Interrupted not set")
	}
	for _, r := range res.Records {
		if r.Kind == KindError {
			t.Errorf("cancellation recorded as a step error: %+v", r)
		}
	}
}

func TestRunSuiteOnly(t *testing.T) {
	var ran []string
	steps := []Step{
		{Label: "rx 1", Config: "metric=rx_pps,mode=mmap,channels=1"},
		{Label: "rx 2", Config: "metric=rx_pps,mode=mmap,channels=2"},
		{Label: "tx 1", Config: "metric=tx_pps,mode=readv,channels=1"},
		{Label: "tcp 1", Config: "metric=tcp_gbps,mode=mmap,channels=1"},
	}
	scs := []Scenario{
		fakeScenario{name: "dispatch", ran: &ran, steps: steps},
		fakeScenario{name: "tcp", ran: &ran, steps: []Step{{Label: "t"}}},
	}
	for _, tc := range []struct {
		name string
		only []string
		want []string
	}{
		{name: "all", want: []string{"dispatch/rx 1#1", "dispatch/rx 2#1", "dispatch/tx 1#1", "dispatch/tcp 1#1", "tcp/t#1"}},
		{name: "one scenario", only: []string{"tcp"}, want: []string{"tcp/t#1"}},
		{name: "one key", only: []string{"dispatch:channels=1"}, want: []string{"dispatch/rx 1#1", "dispatch/tx 1#1", "dispatch/tcp 1#1"}},
		{name: "keys and alternatives", only: []string{"dispatch:metric=rx_pps/tcp_gbps:channels=1"}, want: []string{"dispatch/rx 1#1", "dispatch/tcp 1#1"}},
		{name: "two filters", only: []string{"dispatch:metric=tx_pps", "tcp"}, want: []string{"dispatch/tx 1#1", "tcp/t#1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ran = nil
			f, err := ParseFilters(tc.only)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := RunSuite(context.Background(), Machine{}, SuiteOptions{Scenarios: scs, Only: f, Now: fakeClock()}); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, ran); d != "" {
				t.Errorf("steps run (-want +got):\n%s", d)
			}
		})
	}

	t.Run("no step matches", func(t *testing.T) {
		ran = nil
		f, _ := ParseFilters([]string{"dispatch:channels=9"})
		res, err := RunSuite(context.Background(), Machine{}, SuiteOptions{Scenarios: scs, Only: f, Now: fakeClock()})
		if err != nil {
			t.Fatal(err)
		}
		if len(ran) != 0 || len(res.Records) != 1 || res.Records[0].Kind != KindSkip || !strings.Contains(res.Records[0].Reason, "--only") {
			t.Errorf("ran %v, records %+v; want nothing run and a skip that names --only", ran, res.Records)
		}
	})
}

func TestSuiteOptionsErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		only []string
		opts SuiteOptions
		want string
	}{
		{name: "unknown scenario", only: []string{"bogus"}, want: `unknown scenario "bogus" (want some of dispatch, tcp`},
		{name: "bad condition", only: []string{"dispatch:channels"}, want: `condition "channels": want key=value`},
		{name: "no name", only: []string{":channels=1"}, want: "missing the scenario name"},
		{name: "repeat", opts: SuiteOptions{Repeat: -1}, want: "SuiteOptions.Repeat -1: must be 1..100"},
		{name: "duration", opts: SuiteOptions{Duration: time.Millisecond}, want: "SuiteOptions.Duration 1ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := ParseFilters(tc.only)
			if err == nil {
				o := tc.opts
				o.Only = f
				err = o.Validate()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestEstimatorScalesByTheStepsSoFar(t *testing.T) {
	e := estimator{total: 10 * time.Second, steps: 10}
	if got := e.remaining(); got != 10*time.Second {
		t.Errorf("before any step: %v, want the plan's 10s", got)
	}
	e.finished(time.Second, 2*time.Second) // twice as slow as planned
	if got := e.remaining(); got != 18*time.Second {
		t.Errorf("after a slow step: %v, want 9s x 2 = 18s", got)
	}
	e.finished(time.Second, 100*time.Second) // one odd step is clamped at 4x
	if got := e.remaining(); got != 32*time.Second {
		t.Errorf("after an odd step: %v, want 8s x 4 = 32s", got)
	}
}

func TestResultsRoundTrip(t *testing.T) {
	res := &SuiteResult{
		Machine: Machine{OS: "linux", Kernel: "6.18.0", CPUModel: "AMD EPYC", Cores: 2, GoVersion: "go1.26.8", SluiceVersion: "dev", SluiceCommit: "abc"},
		Run:     RunInfo{Started: time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC), DurationSec: 1, Repeats: 2, Only: []string{"dispatch"}, ElapsedSec: 12.5},
		Records: []Record{
			{Kind: KindSkip, Row: Row{Scenario: "xdp"}, Reason: "no AF_XDP"},
			{Kind: KindRow, Repeat: 1, Row: Row{Scenario: "dispatch", Impl: "sluice", Config: "mode=mmap,channels=1", Metric: "rx_pps", Value: 0, Unit: "frames/s"}},
			{Kind: KindRow, Repeat: 1, Row: Row{Scenario: "dispatch", Impl: "sluice", Config: "mode=mmap,channels=1", Metric: "rss_mib", Value: 21.5, Unit: "MiB", During: "rx_pps"}},
			{Kind: KindSample, Repeat: 2, Row: Row{Scenario: "tcp", Impl: "gvisor", Config: "flows=1", Metric: "tcp_gbps", Value: 4.5, Unit: "Gbit/s"}, TimeSec: 0.1},
			{Kind: KindError, Repeat: 2, Row: Row{Scenario: "dispatch", Config: "metric=tx_pps"}, Error: "bench: it broke"},
		},
	}
	var buf bytes.Buffer
	if err := res.WriteJSONL(&buf); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if !strings.HasPrefix(lines[0], `{"kind":"machine","os":"linux"`) || !strings.HasPrefix(lines[len(lines)-1], `{"kind":"end","elapsed_s":12.5`) {
		t.Errorf("first and last lines:\n%s\n%s", lines[0], lines[len(lines)-1])
	}
	// A zero value is a value: it must be written.
	if !strings.Contains(lines[2], `"value":0,`) {
		t.Errorf("row with value 0 written as %s", lines[2])
	}
	if strings.Contains(lines[1], `"value"`) || strings.Contains(lines[1], `"repeat"`) {
		t.Errorf("skip line carries row fields: %s", lines[1])
	}
	got, err := ReadResults(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(res, got); d != "" {
		t.Errorf("round trip (-want +got):\n%s", d)
	}
}

func TestReadResultsPlainRowsAndErrors(t *testing.T) {
	plain := `{"scenario":"dispatch","impl":"sluice","config":"mode=mmap,channels=2","metric":"rx_pps","value":412345,"unit":"frames/s"}

{"scenario":"dispatch","impl":"sluice","config":"mode=mmap,channels=2","metric":"rss_mib","value":21.4,"unit":"MiB","during":"rx_pps"}
`
	res, err := ReadResults(strings.NewReader(plain))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Records) != 2 || res.Records[0].Kind != KindRow || res.Records[0].Repeat != 1 || res.Records[1].During != "rx_pps" {
		t.Errorf("records %+v, want two rows of repeat 1", res.Records)
	}
	for _, tc := range []struct{ in, want string }{
		{"{\"kind\":\"row\"}\nnot json\n", "results line 2"},
		{`{"kind":"weird"}`, `unknown kind "weird"`},
		{`{"hello":1}`, "neither a record"},
	} {
		if _, err := ReadResults(strings.NewReader(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ReadResults(%q) error %v, want %q", tc.in, err, tc.want)
		}
	}
}

func TestNotMeasured(t *testing.T) {
	for _, tc := range []struct {
		line, impl, reason string
		ok                 bool
	}{
		{"bench: dispatch rx_pps mode=xdp,channels=2 impl=gvisor: gVisor's xdp endpoint reads a single rx queue (its Options.QueueID): not measured",
			"gvisor", "gVisor's xdp endpoint reads a single rx queue (its Options.QueueID)", true},
		{"bench: dispatch rx_pps mode=xdp,channels=1 impl=sluice: bench: it broke", "", "", false},
		{"bench: dispatch rx_pps mode=mmap,channels=1 impl=sluice: 412345 frames/s (peak rss 21.4 MiB)", "", "", false},
		{"not measured", "", "", false},
	} {
		impl, reason, ok := notMeasured(tc.line)
		if impl != tc.impl || reason != tc.reason || ok != tc.ok {
			t.Errorf("notMeasured(%q) = %q, %q, %v; want %q, %q, %v", tc.line, impl, reason, ok, tc.impl, tc.reason, tc.ok)
		}
	}
}
