package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/sluicenet/sluice/bench"
)

// progressPrinter shows a suite's progress on stderr. On a terminal it
// keeps one status line, redrawn in place twice a second so that the
// elapsed time and the time left keep moving during a long step, and
// prints skips and failures above it as lines of their own. Otherwise
// (a pipe, a CI log, --quiet) it prints one line per finished step, which
// reads well in a log and never carries control characters.
type progressPrinter struct {
	w   io.Writer
	tty bool

	mu      sync.Mutex // guards the fields below and writes to w
	last    bench.Event
	at      time.Time // when last arrived
	running bool      // a step is running: the status line is up
	drawn   bool      // the status line is on the screen
	stop    chan struct{}
	stopped chan struct{}
}

func newProgressPrinter(w io.Writer, tty bool) *progressPrinter {
	p := &progressPrinter{w: w, tty: tty}
	if tty {
		p.stop, p.stopped = make(chan struct{}), make(chan struct{})
		go p.tick()
	}
	return p
}

func (p *progressPrinter) tick() {
	defer close(p.stopped)
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.mu.Lock()
			if p.running {
				p.draw()
			}
			p.mu.Unlock()
		}
	}
}

// event is the suite's Progress callback.
func (p *progressPrinter) event(ev bench.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ev.Kind != bench.EventSkip {
		// Skips come before any step; the status line shows steps.
		p.last, p.at = ev, time.Now()
	}
	switch ev.Kind {
	case bench.EventSkip:
		p.line(fmt.Sprintf("bench: skip %s: %s", skipWhat(ev), ev.Reason))
	case bench.EventStepStart:
		p.running = true
		if p.tty {
			p.draw()
		}
	case bench.EventStepDone:
		p.running = false
		switch {
		case errors.Is(ev.Err, context.Canceled):
			p.line(fmt.Sprintf("bench: %s %s interrupted; cleaning up", stepWhere(ev), ev.Label))
		case ev.Err != nil:
			p.line(fmt.Sprintf("bench: %s %s failed: %s", stepWhere(ev), ev.Label, oneLine(ev.Err.Error())))
		case !p.tty:
			p.line(fmt.Sprintf("bench: %s %s: %s  [%s elapsed, %s left]", stepWhere(ev), ev.Label, figures(ev.Rows, ev.Label), round(ev.Elapsed), approx(ev.Remaining)))
		default:
			p.draw()
		}
	}
}

// finish stops the redraw and leaves the terminal on a clean line.
func (p *progressPrinter) finish() {
	if p.tty {
		close(p.stop)
		<-p.stopped
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.drawn = false
	}
}

// note prints a line of its own from any goroutine.
func (p *progressPrinter) note(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.line(s)
}

// line prints a line of its own, above the status line on a terminal.
func (p *progressPrinter) line(s string) {
	if p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.drawn = false
	}
	fmt.Fprintln(p.w, s)
	if p.tty && p.running {
		p.draw()
	}
}

// draw redraws the status line, cut to the terminal's width so that it
// never wraps (a wrapped line cannot be redrawn with \r).
func (p *progressPrinter) draw() {
	ev := p.last
	since := time.Since(p.at)
	elapsed := ev.Elapsed + since
	left := max(ev.Remaining-since, 0)
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", stepWhere(ev), ev.Label)
	fmt.Fprintf(&b, " · %s elapsed, %s left", round(elapsed), approx(left))
	if ev.Last != nil {
		fmt.Fprintf(&b, " · last: %s %s %s %s", ev.Last.Impl, ev.Last.Metric, bench.FormatValue(ev.Last.Value), ev.Last.Unit)
	}
	s := b.String()
	if w := terminalWidth(p.w) - 1; w > 10 && utf8.RuneCountInString(s) > w {
		s = string([]rune(s)[:w-1]) + "…"
	}
	fmt.Fprint(p.w, "\r\x1b[K"+s)
	p.drawn = true
}

// stepWhere is "[2/5 tcp 7/72]": the scenario among the scenarios, the
// step among its scenario's steps, and "run 2/3" with repeats.
func stepWhere(ev bench.Event) string {
	s := fmt.Sprintf("[%d/%d %s %d/%d", ev.ScenarioIndex, ev.Scenarios, ev.Scenario, ev.Step, ev.Steps)
	if ev.Repeats > 1 {
		s += fmt.Sprintf(" run %d/%d", ev.Repeat, ev.Repeats)
	}
	return s + "]"
}

func skipWhat(ev bench.Event) string {
	if ev.Label != "" {
		return ev.Scenario + " " + ev.Label
	}
	return ev.Scenario
}

// figures lists a step's figures by metric: "tcp_gbps sluice 4.12
// [dir=up], sluice 4.57 [dir=down] Gbit/s, rr_us sluice 273.6 us". A row
// whose metric and impl repeat in the step carries the config keys that
// tell it apart; the metric's name is left out when the step's label
// starts with it (the dispatch steps' "rx_pps mode=mmap,channels=2").
func figures(rows []bench.Row, label string) string {
	if len(rows) == 0 {
		return "no figures"
	}
	type group struct {
		metric, unit string
		rows         []bench.Row
	}
	var groups []*group
	byMetric := map[string]*group{}
	for _, r := range rows {
		g := byMetric[r.Metric]
		if g == nil {
			g = &group{metric: r.Metric, unit: r.Unit}
			byMetric[r.Metric] = g
			groups = append(groups, g)
		}
		g.rows = append(g.rows, r)
	}
	var parts []string
	for _, g := range groups {
		seen := map[string]int{}
		for _, r := range g.rows {
			seen[r.Impl]++
		}
		varying := varyingKeys(g.rows)
		var vals []string
		for _, r := range g.rows {
			v := r.Impl + " " + formatFigure(r.Value, r.Unit)
			if seen[r.Impl] > 1 && len(varying) > 0 {
				var kv []string
				for _, p := range strings.Split(r.Config, ",") {
					if k, _, _ := strings.Cut(p, "="); varying[k] {
						kv = append(kv, p)
					}
				}
				v += " [" + strings.Join(kv, ",") + "]"
			}
			vals = append(vals, v)
		}
		s := strings.Join(vals, ", ") + " " + g.unit
		if len(groups) > 1 || !strings.HasPrefix(label, g.metric+" ") {
			s = g.metric + " " + s
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

// varyingKeys returns the config keys whose values differ among rows.
func varyingKeys(rows []bench.Row) map[string]bool {
	vals := map[string]map[string]bool{}
	for _, r := range rows {
		for _, p := range strings.Split(r.Config, ",") {
			k, v, _ := strings.Cut(p, "=")
			if vals[k] == nil {
				vals[k] = map[string]bool{}
			}
			vals[k][v] = true
		}
	}
	out := map[string]bool{}
	for k, vs := range vals {
		if len(vs) > 1 {
			out[k] = true
		}
	}
	return out
}

// formatFigure prints counts of things whole, anything else as the tables
// do.
func formatFigure(v float64, unit string) string {
	if unit == bench.UnitFrames || unit == bench.UnitSegments {
		return bench.FormatCount(v)
	}
	return bench.FormatValue(v)
}

func round(d time.Duration) time.Duration { return d.Round(time.Second) }

// approx prints an estimate without false precision.
func approx(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	if d < time.Minute {
		return "~" + d.Round(time.Second).String()
	}
	return "~" + d.Round(10*time.Second).String()
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", "; ") }
