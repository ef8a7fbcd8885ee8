package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// The suite is what `sluice bench all` runs: every registered Scenario, in
// a fixed order, each split into Steps so that progress, estimates and
// --only filters work the same way for all of them. A scenario plugs in
// with one line in Scenarios; everything else (repeats, skips, results
// file, summary, report, compare) is shared.
//
// A step is the unit a scenario can run on its own and clean up after: it
// builds its topology, measures every implementation side by side, and
// removes the topology before it returns, also when ctx is cancelled. The
// suite never holds resources of its own between steps, so an interrupted
// run leaves only what the interrupted step failed to remove.

// Scenario is one benchmark scenario as the suite runs it.
type Scenario interface {
	// Name is the scenario's name, as in Row.Scenario and in --only.
	Name() string
	// Description is one sentence for the summary and the report: what
	// is measured, against what.
	Description() string
	// Plan returns the steps Run will be called with under opts, in the
	// order they run. skip, when not empty, says why the scenario cannot
	// run on this machine at all (no root, no AF_XDP, a missing tool); a
	// step that cannot run while its siblings can carries its own
	// Step.Skip instead. Plan must be cheap and have no side effects: it
	// is called once per suite run, before anything runs.
	Plan(opts SuiteOptions) (steps []Step, skip string)
	// Run measures one step of the plan and reports through out. It
	// removes everything it created before returning, also when ctx is
	// cancelled (it then returns ctx's error). An error ends the step,
	// not the suite: rows already reported are kept.
	Run(ctx context.Context, opts SuiteOptions, step Step, out *StepOutput) error
}

// Step is one unit of a scenario's plan.
type Step struct {
	// Label names the step in progress lines and errors, for example
	// "rx_pps mode=mmap,channels=2".
	Label string
	// Config is the step's configuration as comma-separated key=value
	// pairs; --only filters match against it.
	Config string
	// Estimate is the expected wall time of the step, setup included;
	// progress derives the time left from it.
	Estimate time.Duration
	// Skip, when set, is why this step cannot run here; Run is not called
	// and the reason is recorded.
	Skip string
	// Arg is the scenario's own description of the step, handed back to
	// Run unchanged.
	Arg any
}

// StepOutput receives what a step measures. Its methods may be called from
// any goroutine until Run returns.
type StepOutput struct {
	scenario string
	repeat   int
	record   func(Record)
}

// Row reports a measured value. An empty Scenario is filled in.
func (o *StepOutput) Row(r Row) {
	if r.Scenario == "" {
		r.Scenario = o.scenario
	}
	o.record(Record{Kind: KindRow, Repeat: o.repeat, Row: r})
}

// Sample reports one point of a figure over time, for example a TCP
// flow's throughput over each 100 ms of the window. Optional: the report
// draws a line per (impl, config, metric) from the samples a scenario
// gives, and nothing when it gives none.
func (o *StepOutput) Sample(s Sample) {
	if s.Scenario == "" {
		s.Scenario = o.scenario
	}
	o.record(Record{Kind: KindSample, Repeat: o.repeat, Row: Row{Scenario: s.Scenario, Impl: s.Impl, Config: s.Config, Metric: s.Metric, Value: s.Value, Unit: s.Unit}, TimeSec: s.TimeSec})
}

// Skip records that part of a step was not measured, for example one
// peer implementation whose tool is not installed, while the rest ran.
// impl and config may be empty.
func (o *StepOutput) Skip(impl, config, reason string) {
	o.record(Record{Kind: KindSkip, Repeat: o.repeat, Row: Row{Scenario: o.scenario, Impl: impl, Config: config}, Reason: reason})
}

// Sample is one point of a time series.
type Sample struct {
	Scenario, Impl, Config, Metric string
	// TimeSec is the end of the interval the value covers, in seconds
	// since the start of the measurement window.
	TimeSec float64
	// Value is the figure over that interval, in Unit.
	Value float64
	Unit  string
}

// Scenarios returns the scenarios `sluice bench all` runs, in the order it
// runs them. A new scenario plugs in with one line here and an adapter in
// a file of its own (suite_tcp.go shows the shape: Plan turns the
// scenario's default options into steps, Run calls its Run function with
// one step's options and passes the rows on), and nothing else.
func Scenarios() []Scenario {
	return []Scenario{
		// dispatch includes the xdp mode (AF_XDP), next to the
		// AF_PACKET modes it is compared with.
		dispatchScenario{},
		tcpScenario{},
		sandboxScenario{},
		captureScenario{},
	}
}

// SuiteOptions configure RunSuite. Zero fields take defaults.
type SuiteOptions struct {
	// Duration is each measurement's window (scenarios add their own
	// warm-up). Default 3s; MinDuration..MaxDuration.
	Duration time.Duration
	// Repeat is how many times the whole plan runs; repeats are
	// interleaved (all of run 1, then all of run 2) so that slow drift of
	// the machine spreads over every figure. Default 1; 1..MaxRepeat.
	Repeat int
	// Quick asks each scenario for a reduced plan, a few representative
	// configurations, for a smoke run (tests, a first look at a machine).
	// Scenarios without one run their whole plan.
	Quick bool
	// Only restricts the run to matching scenarios and steps (see
	// ParseFilters). Empty runs everything.
	Only []Filter
	// SandboxStacks are sluice's stacks registered in the running binary
	// (sandbox.Stacks); the sandbox scenario measures each one besides
	// the netstack, in recvmmsg mode, except in a quick run.
	SandboxStacks []string
	// Scenarios are the scenarios to run, in order. Default Scenarios().
	Scenarios []Scenario
	// Progress receives an Event as each step starts and ends, and for
	// every skip. Called from RunSuite's goroutine; nil discards.
	Progress func(Event)
	// Start receives the result as the run begins: machine and run facts
	// set, no records yet. For example, to write a results file's header
	// before the first record. nil does nothing.
	Start func(*SuiteResult)
	// Record receives every record as it is produced (rows, samples,
	// skips, errors), for example to append it to a results file at once
	// so that an interrupted run keeps what it measured. nil discards.
	Record func(Record)
	// Now is the clock; nil means time.Now. Tests set it.
	Now func() time.Time
}

// MaxRepeat bounds SuiteOptions.Repeat: more repeats than this belong in a
// loop around the command, not in one run that holds its figures in memory.
const MaxRepeat = 100

func (o SuiteOptions) withDefaults() SuiteOptions {
	if o.Duration == 0 {
		o.Duration = 3 * time.Second
	}
	if o.Repeat == 0 {
		o.Repeat = 1
	}
	if o.Scenarios == nil {
		o.Scenarios = Scenarios()
	}
	if o.Progress == nil {
		o.Progress = func(Event) {}
	}
	if o.Start == nil {
		o.Start = func(*SuiteResult) {}
	}
	if o.Record == nil {
		o.Record = func(Record) {}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Validate checks the options as RunSuite uses them, naming the field at
// fault.
func (o SuiteOptions) Validate() error {
	o = o.withDefaults()
	if o.Duration < MinDuration || o.Duration > MaxDuration {
		return fmt.Errorf("bench: SuiteOptions.Duration %v: must be between %v and %v", o.Duration, MinDuration, MaxDuration)
	}
	if o.Repeat < 1 || o.Repeat > MaxRepeat {
		return fmt.Errorf("bench: SuiteOptions.Repeat %d: must be 1..%d", o.Repeat, MaxRepeat)
	}
	var names []string
	for _, s := range o.Scenarios {
		names = append(names, s.Name())
	}
	for _, f := range o.Only {
		if !slices.Contains(names, f.Scenario) {
			return fmt.Errorf("bench: SuiteOptions.Only: unknown scenario %q (want some of %s)", f.Scenario, strings.Join(names, ", "))
		}
	}
	return nil
}

// EventKind says what an Event reports.
type EventKind int

const (
	// EventStepStart: a step is about to run.
	EventStepStart EventKind = iota
	// EventStepDone: a step ended; Err is set if it failed.
	EventStepDone
	// EventSkip: a scenario or step was skipped; Reason says why.
	EventSkip
)

// Event reports the suite's progress.
type Event struct {
	Kind EventKind
	// Repeat is the current run, 1..Repeats.
	Repeat, Repeats int
	// ScenarioIndex is the scenario's position, 1..Scenarios, among the
	// scenarios selected.
	ScenarioIndex, Scenarios int
	Scenario                 string
	// Step is the step's position within its scenario's plan, 1..Steps;
	// 0 for a scenario-wide skip.
	Step, Steps int
	Label       string
	// Done and Total count the steps of the whole run (all repeats),
	// skipped ones excluded; Done includes this step on EventStepDone.
	Done, Total int
	// Elapsed is the time since the suite started. Remaining is the
	// estimate of the time left: the plan's estimates of the steps still
	// to run, scaled by how long the finished steps took against theirs.
	Elapsed, Remaining time.Duration
	// Last is the last measured (non-resource) row of the run so far,
	// nil before the first.
	Last *Row
	// Rows are the measured (non-resource) rows the step reported, on
	// EventStepDone.
	Rows []Row
	// Err is the step's error on EventStepDone.
	Err error
	// Reason is why a scenario or step was skipped, on EventSkip.
	Reason string
}

// SuiteResult is the outcome of RunSuite: what was measured, and the facts
// of the machine it was measured on.
type SuiteResult struct {
	Machine Machine
	Run     RunInfo
	// Records are the rows, samples, skips and errors in the order they
	// were produced.
	Records []Record
}

// RunInfo describes a suite run.
type RunInfo struct {
	// Started is when the run began.
	Started time.Time `json:"started"`
	// DurationSec is each measurement's window, in seconds.
	DurationSec float64 `json:"duration_s"`
	// Repeats is the number of runs of the plan asked for.
	Repeats int `json:"repeats"`
	// Quick is set when each scenario ran its reduced plan.
	Quick bool `json:"quick,omitempty"`
	// Only lists the --only filters, if any.
	Only []string `json:"only,omitempty"`
	// ElapsedSec is the run's wall time in seconds; set at the end.
	ElapsedSec float64 `json:"elapsed_s,omitempty"`
	// Interrupted is set when the run was cancelled before the end.
	Interrupted bool `json:"interrupted,omitempty"`
}

// plannedScenario is a scenario with its plan, after --only filtering.
type plannedScenario struct {
	sc    Scenario
	steps []Step
	skip  string
}

// RunSuite runs the selected scenarios' plans opts.Repeat times and returns
// what was measured. machine is recorded as is (see ProbeMachine). A step
// that fails is recorded and the run goes on; cancelling ctx ends the run
// after the current step has cleaned up, and RunSuite then returns the
// partial result (Run.Interrupted set) with ctx's error.
func RunSuite(ctx context.Context, machine Machine, opts SuiteOptions) (*SuiteResult, error) {
	opts = opts.withDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	start := opts.Now()
	res := &SuiteResult{
		Machine: machine,
		Run: RunInfo{
			Started:     start,
			DurationSec: opts.Duration.Seconds(),
			Repeats:     opts.Repeat,
			Quick:       opts.Quick,
		},
	}
	for _, f := range opts.Only {
		res.Run.Only = append(res.Run.Only, f.String())
	}
	record := func(r Record) {
		res.Records = append(res.Records, r)
		opts.Record(r)
	}

	var plan []plannedScenario
	for _, sc := range opts.Scenarios {
		if !selected(opts.Only, sc.Name(), "") {
			continue
		}
		steps, skip := sc.Plan(opts)
		p := plannedScenario{sc: sc, skip: skip}
		for _, st := range steps {
			if selected(opts.Only, sc.Name(), st.Config) {
				p.steps = append(p.steps, st)
			}
		}
		if p.skip == "" && len(p.steps) == 0 {
			p.skip = "no step of its plan matches --only"
		}
		plan = append(plan, p)
	}

	est := estimator{}
	for _, p := range plan {
		if p.skip != "" {
			continue
		}
		for _, st := range p.steps {
			if st.Skip == "" {
				est.total += st.Estimate * time.Duration(opts.Repeat)
				est.steps += opts.Repeat
			}
		}
	}

	var (
		// mu guards last and res.Records: a step may report from
		// goroutines of its own.
		mu   sync.Mutex
		last *Row
	)
	locked := func(f func()) { mu.Lock(); defer mu.Unlock(); f() }
	base := func(kind EventKind, repeat, si int, p plannedScenario) Event {
		now := opts.Now()
		var l *Row
		locked(func() {
			if last != nil {
				c := *last
				l = &c
			}
		})
		return Event{
			Kind: kind, Repeat: repeat, Repeats: opts.Repeat,
			ScenarioIndex: si + 1, Scenarios: len(plan), Scenario: p.sc.Name(),
			Steps: len(p.steps), Done: est.done, Total: est.steps,
			Elapsed: now.Sub(start), Remaining: est.remaining(), Last: l,
		}
	}

	opts.Start(res)
	// Skips are the machine's, not the run's: record them once, up front.
	for si, p := range plan {
		if p.skip != "" {
			record(Record{Kind: KindSkip, Row: Row{Scenario: p.sc.Name()}, Reason: p.skip})
			ev := base(EventSkip, 1, si, p)
			ev.Reason = p.skip
			opts.Progress(ev)
			continue
		}
		for i, st := range p.steps {
			if st.Skip != "" {
				record(Record{Kind: KindSkip, Row: Row{Scenario: p.sc.Name(), Config: st.Config}, Reason: st.Skip})
				ev := base(EventSkip, 1, si, p)
				ev.Step, ev.Label, ev.Reason = i+1, st.Label, st.Skip
				opts.Progress(ev)
			}
		}
	}

	finish := func(err error) (*SuiteResult, error) {
		res.Run.ElapsedSec = opts.Now().Sub(start).Seconds()
		if err != nil {
			res.Run.Interrupted = true
		}
		return res, err
	}
	for rep := 1; rep <= opts.Repeat; rep++ {
		for si, p := range plan {
			if p.skip != "" {
				continue
			}
			for i, st := range p.steps {
				if st.Skip != "" {
					continue
				}
				if err := ctx.Err(); err != nil {
					return finish(fmt.Errorf("bench: suite: %w", err))
				}
				ev := base(EventStepStart, rep, si, p)
				ev.Step, ev.Label = i+1, st.Label
				opts.Progress(ev)

				var stepRows []Row // guarded by mu
				out := &StepOutput{scenario: p.sc.Name(), repeat: rep, record: func(r Record) {
					locked(func() {
						record(r)
						if r.Kind == KindRow && r.During == "" {
							c := r.Row
							last = &c
							stepRows = append(stepRows, c)
						}
					})
				}}
				t0 := opts.Now()
				err := p.sc.Run(ctx, opts, st, out)
				est.finished(st.Estimate, opts.Now().Sub(t0))
				if err != nil && ctx.Err() == nil {
					locked(func() {
						record(Record{Kind: KindError, Repeat: rep, Row: Row{Scenario: p.sc.Name(), Config: st.Config}, Error: err.Error()})
					})
				}
				ev = base(EventStepDone, rep, si, p)
				ev.Step, ev.Label, ev.Err = i+1, st.Label, err
				locked(func() { ev.Rows = slices.Clone(stepRows) })
				opts.Progress(ev)
				if ctx.Err() != nil {
					return finish(fmt.Errorf("bench: suite: %s: %w", p.sc.Name(), ctx.Err()))
				}
			}
		}
	}
	return finish(nil)
}

// estimator turns the plan's estimates into a time left.
type estimator struct {
	steps, done  int
	total        time.Duration // sum of the estimates of every step of the run
	doneEstimate time.Duration // sum of the estimates of the steps done
	doneActual   time.Duration // their actual wall time
}

func (e *estimator) finished(estimate, actual time.Duration) {
	e.done++
	e.doneEstimate += estimate
	e.doneActual += actual
}

// remaining scales the estimate of what is left by how the steps so far
// compared with their estimates, within 0.5x..4x so that one odd step
// (a slow first namespace, a failed measurement) cannot swing it wildly.
func (e *estimator) remaining() time.Duration {
	left := e.total - e.doneEstimate
	if left <= 0 {
		return 0
	}
	if e.doneEstimate <= 0 {
		return left
	}
	f := min(max(float64(e.doneActual)/float64(e.doneEstimate), 0.5), 4)
	return time.Duration(float64(left) * f)
}

// Filter selects a scenario, and optionally some of its steps, for --only.
type Filter struct {
	Scenario string
	// Conds maps a config key to the values accepted for it: a step is
	// selected when, for every key, its config has one of the values.
	Conds map[string][]string
	text  string
}

func (f Filter) String() string { return f.text }

// ParseFilters parses --only values. Each is a scenario name, optionally
// followed by conditions on its steps' configs, separated by ':'; a
// condition is key=value, or key=v1/v2 for alternatives:
//
//	dispatch
//	dispatch:channels=1
//	dispatch:metric=rx_pps/tx_pps:mode=mmap
//
// Scenario names are checked by Validate, against the scenarios run.
func ParseFilters(list []string) ([]Filter, error) {
	var out []Filter
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		parts := strings.Split(s, ":")
		f := Filter{Scenario: parts[0], text: s}
		if f.Scenario == "" {
			return nil, fmt.Errorf("bench: --only %q: missing the scenario name before ':'", s)
		}
		for _, c := range parts[1:] {
			k, v, ok := strings.Cut(c, "=")
			if !ok || k == "" || v == "" {
				return nil, fmt.Errorf("bench: --only %q: condition %q: want key=value or key=v1/v2", s, c)
			}
			if f.Conds == nil {
				f.Conds = map[string][]string{}
			}
			f.Conds[k] = append(f.Conds[k], strings.Split(v, "/")...)
		}
		out = append(out, f)
	}
	return out, nil
}

// selected reports whether the filters select the scenario's step with
// config; config "" asks about the scenario as a whole.
func selected(only []Filter, scenario, config string) bool {
	if len(only) == 0 {
		return true
	}
	kv := map[string]string{}
	for _, p := range splitConfig(config) {
		kv[p[0]] = p[1]
	}
	for _, f := range only {
		if f.Scenario != scenario {
			continue
		}
		if config == "" {
			return true
		}
		ok := true
		for k, vals := range f.Conds {
			if v, has := kv[k]; !has || !slices.Contains(vals, v) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}
