package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicenet/sluice/bench"
)

func TestBenchAllBadFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{name: "repeat zero", args: []string{"--repeat", "0"}, want: "--repeat 0: must be 1 to 100"},
		{name: "duration too short", args: []string{"--duration", "1ms"}, want: "--duration 1ms: must be between 100ms and 10m0s"},
		{name: "unknown scenario", args: []string{"--only", "dispatch,bogus"}, want: `--only: bench: SuiteOptions.Only: unknown scenario "bogus" (want some of dispatch, tcp`},
		{name: "bad condition", args: []string{"--only", "dispatch:mode"}, want: `condition "mode": want key=value or key=v1/v2`},
		{name: "stray argument", args: []string{"extra"}, want: `unknown command "extra"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "out")
			var stdout, stderr bytes.Buffer
			args := append([]string{"bench", "all", "--out", dir}, tc.args...)
			if code := execute(context.Background(), args, &stdout, &stderr); code == 0 {
				t.Fatalf("execute(%q) = 0, want a non-zero status", args)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tc.want)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("bad flags created the output directory (%v)", err)
			}
		})
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBenchCompare(t *testing.T) {
	old := writeFile(t, "old.jsonl", `{"kind":"machine","kernel":"6.18","cores":2,"go_version":"go1.26.8","sluice_version":"dev","sluice_commit":"aaa","repeats":3}
{"kind":"row","repeat":1,"scenario":"dispatch","impl":"sluice","config":"mode=mmap,channels=1","metric":"rx_pps","value":100,"unit":"frames/s"}
{"kind":"row","repeat":2,"scenario":"dispatch","impl":"sluice","config":"mode=mmap,channels=1","metric":"rx_pps","value":110,"unit":"frames/s"}
{"kind":"row","repeat":3,"scenario":"dispatch","impl":"sluice","config":"mode=mmap,channels=1","metric":"rx_pps","value":105,"unit":"frames/s"}
{"kind":"skip","scenario":"xdp","reason":"no AF_XDP"}
{"kind":"end","elapsed_s":10,"interrupted":false}
`)
	// The plain --json output of `sluice bench dispatch` compares too.
	new := writeFile(t, "new.jsonl", `{"scenario":"dispatch","impl":"sluice","config":"mode=mmap,channels=1","metric":"rx_pps","value":90,"unit":"frames/s"}
`)
	var stdout, stderr bytes.Buffer
	if code := execute(context.Background(), []string{"bench", "compare", old, new}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d, stderr %s", code, stderr.String())
	}
	for _, want := range []string{
		"old: sluice dev commit aaa, go1.26.8, 6.18, 2 cores\n",
		"new: no machine facts",
		"dispatch  rx_pps  frames/s  mode=mmap,channels=1  sluice  105.0 (100.0–110.0)  90.00  -14.3%  one run in new: no spread known",
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, stdout.String())
		}
	}

	bad := writeFile(t, "bad.jsonl", "{\"kind\":\"row\"}\n{oops\n")
	stdout.Reset()
	stderr.Reset()
	if code := execute(context.Background(), []string{"bench", "compare", old, bad}, &stdout, &stderr); code == 0 {
		t.Errorf("a broken file: exit 0, want non-zero")
	}
	if !strings.Contains(stderr.String(), "bad.jsonl: bench: results line 2") {
		t.Errorf("stderr %q does not name the file and line", stderr.String())
	}
	if code := execute(context.Background(), []string{"bench", "compare", old}, &stdout, &stderr); code == 0 {
		t.Errorf("one file: exit 0, want non-zero")
	}
}

func TestProgressPrinterPlain(t *testing.T) {
	var buf bytes.Buffer
	p := newProgressPrinter(&buf, false)
	base := bench.Event{Repeat: 2, Repeats: 3, ScenarioIndex: 1, Scenarios: 5, Scenario: "dispatch", Step: 3, Steps: 18, Label: "rx_pps mode=mmap,channels=1"}
	ev := base
	ev.Kind = bench.EventStepStart
	p.event(ev)
	ev.Kind, ev.Elapsed, ev.Remaining = bench.EventStepDone, 62*time.Second, 190*time.Second
	ev.Rows = []bench.Row{{Impl: "sluice", Metric: "rx_pps", Value: 591262, Unit: "frames/s"}, {Impl: "gvisor", Metric: "rx_pps", Value: 178550, Unit: "frames/s"}}
	p.event(ev)
	ev = base
	ev.Kind, ev.Err = bench.EventStepDone, errors.New("bench: it\nbroke")
	p.event(ev)
	p.event(bench.Event{Kind: bench.EventSkip, Scenario: "xdp", Reason: "no AF_XDP"})
	p.finish()
	want := "bench: [1/5 dispatch 3/18 run 2/3] rx_pps mode=mmap,channels=1: sluice 591262, gvisor 178550 frames/s  [1m2s elapsed, ~3m10s left]\n" +
		"bench: [1/5 dispatch 3/18 run 2/3] rx_pps mode=mmap,channels=1 failed: bench: it; broke\n" +
		"bench: skip xdp: no AF_XDP\n"
	if buf.String() != want {
		t.Errorf("plain progress:\n%q\nwant\n%q", buf.String(), want)
	}
}

func TestProgressPrinterTerminal(t *testing.T) {
	var buf bytes.Buffer
	p := newProgressPrinter(&buf, true)
	last := bench.Row{Impl: "sluice", Metric: "tcp_gbps", Value: 5.61, Unit: "Gbit/s"}
	p.event(bench.Event{Kind: bench.EventStepStart, ScenarioIndex: 1, Scenarios: 2, Scenario: "dispatch", Step: 1, Steps: 9, Label: "tcp_gbps mode=readv,channels=1", Remaining: time.Minute, Last: &last})
	p.event(bench.Event{Kind: bench.EventSkip, Scenario: "xdp", Reason: "no AF_XDP"})
	p.finish()
	out := buf.String()
	for _, want := range []string{
		"\r\x1b[K[1/2 dispatch 1/9] tcp_gbps mode=readv,channels=1 · 0s elapsed, ~1m0s left · last: sluice tcp_gbps 5.61 Gbit/s",
		// A skip clears the status line, prints above it, redraws it.
		"\r\x1b[Kbench: skip xdp: no AF_XDP\n\r\x1b[K[1/2 dispatch 1/9]",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("terminal progress %q lacks %q", out, want)
		}
	}
	if !strings.HasSuffix(out, "\r\x1b[K") {
		t.Errorf("finish left the status line up: %q", out)
	}
}

func TestBenchAllFrom(t *testing.T) {
	results := writeFile(t, "results.jsonl", `{"kind":"machine","kernel":"6.18","cores":2,"go_version":"go1.26.8","sluice_version":"dev","sluice_commit":"aaa","repeats":1,"duration_s":1}
{"kind":"row","repeat":1,"scenario":"dispatch","impl":"sluice","config":"mode=mmap,channels=1","metric":"rx_pps","value":400000,"unit":"frames/s"}
{"kind":"row","repeat":1,"scenario":"dispatch","impl":"gvisor","config":"mode=mmap,channels=1","metric":"rx_pps","value":200000,"unit":"frames/s"}
`)
	dir := filepath.Join(t.TempDir(), "render")
	var stdout, stderr bytes.Buffer
	if code := execute(context.Background(), []string{"bench", "all", "--from", results, "--out", dir}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	summary, err := os.ReadFile(filepath.Join(dir, summaryFile))
	if err != nil {
		t.Fatal(err)
	}
	if want := "| rx_pps | frames/s | mmap | 1 | 400000 | 200000 | 2.00 |"; !strings.Contains(string(summary), want) {
		t.Errorf("summary.md lacks %q:\n%s", want, summary)
	}
	if !bytes.Equal(summary, stdout.Bytes()) {
		t.Errorf("stdout is not summary.md")
	}
	if _, err := os.Stat(filepath.Join(dir, reportFile)); err != nil {
		t.Errorf("report.html: %v", err)
	}
}

func TestProgressFigures(t *testing.T) {
	rows := []bench.Row{
		{Impl: "sluice", Config: "mode=recvmmsg,flows=1,dir=up", Metric: "tcp_gbps", Value: 4.12, Unit: "Gbit/s"},
		{Impl: "sluice", Config: "mode=recvmmsg,flows=1,dir=down", Metric: "tcp_gbps", Value: 4.57, Unit: "Gbit/s"},
		{Impl: "sluice", Config: "mode=recvmmsg,msg=64", Metric: "rr_us", Value: 273.6, Unit: "us"},
		{Impl: "sluice", Config: "via=mmap", Metric: "dropped_frames", Value: 0, Unit: "frames"},
	}
	want := "tcp_gbps sluice 4.12 [dir=up], sluice 4.57 [dir=down] Gbit/s, rr_us sluice 273.6 us, dropped_frames sluice 0 frames"
	if got := figures(rows, "sandbox impl=sluice,mode=recvmmsg"); got != want {
		t.Errorf("figures:\n got %q\nwant %q", got, want)
	}
}
