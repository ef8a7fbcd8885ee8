package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
)

// Record kinds: the "kind" field of each line of results.jsonl.
const (
	// KindMachine is the first line: the machine's facts (Machine) and
	// the run's parameters (RunInfo), flattened into one object.
	KindMachine = "machine"
	// KindRow is a measured value: the fields of Row plus "repeat".
	KindRow = "row"
	// KindSample is one point of a figure over time: the fields of Row
	// plus "repeat" and "t_s".
	KindSample = "sample"
	// KindSkip is something not measured, with "reason"; "impl" and
	// "config" narrow it when only part of a scenario was skipped.
	KindSkip = "skip"
	// KindError is a step that failed, with "error".
	KindError = "error"
	// KindEnd is the last line: "elapsed_s" and "interrupted".
	KindEnd = "end"
)

// Record is one line of results.jsonl. Which fields are set depends on
// Kind (see the Kind constants); the JSON form carries only those.
type Record struct {
	Kind string
	// Repeat is the run of the plan the record belongs to, from 1; 0 on
	// skips, which hold for every run.
	Repeat int
	// Row holds the measured value of KindRow and KindSample, and the
	// scenario (and impl, config) that KindSkip and KindError concern.
	Row
	// TimeSec is a KindSample's time, seconds since the window began.
	TimeSec float64
	// Reason is a KindSkip's reason.
	Reason string
	// Error is a KindError's message.
	Error string
}

// The JSON shapes of the record kinds. Row's fields are flattened in.
type (
	rowJSON struct {
		Kind   string `json:"kind"`
		Repeat int    `json:"repeat"`
		Row
	}
	sampleJSON struct {
		Kind   string `json:"kind"`
		Repeat int    `json:"repeat"`
		Row
		TimeSec float64 `json:"t_s"`
	}
	noteJSON struct {
		Kind     string `json:"kind"`
		Repeat   int    `json:"repeat,omitempty"`
		Scenario string `json:"scenario,omitempty"`
		Impl     string `json:"impl,omitempty"`
		Config   string `json:"config,omitempty"`
		Reason   string `json:"reason,omitempty"`
		Error    string `json:"error,omitempty"`
	}
	machineJSON struct {
		Kind string `json:"kind"`
		Machine
		RunInfo
	}
	endJSON struct {
		Kind        string  `json:"kind"`
		ElapsedSec  float64 `json:"elapsed_s"`
		Interrupted bool    `json:"interrupted"`
	}
	// anyJSON decodes every kind, and plain Rows (the --json output of
	// the single-scenario commands, which has no "kind").
	anyJSON struct {
		Kind   string `json:"kind"`
		Repeat int    `json:"repeat"`
		Row
		TimeSec float64 `json:"t_s"`
		Reason  string  `json:"reason"`
		Error   string  `json:"error"`
		Machine
		RunInfo
	}
)

// MarshalJSON writes the record in its kind's shape.
func (r Record) MarshalJSON() ([]byte, error) {
	switch r.Kind {
	case KindRow:
		return json.Marshal(rowJSON{Kind: r.Kind, Repeat: r.Repeat, Row: r.Row})
	case KindSample:
		return json.Marshal(sampleJSON{Kind: r.Kind, Repeat: r.Repeat, Row: r.Row, TimeSec: r.TimeSec})
	case KindSkip, KindError:
		return json.Marshal(noteJSON{Kind: r.Kind, Repeat: r.Repeat, Scenario: r.Scenario, Impl: r.Impl, Config: r.Config, Reason: r.Reason, Error: r.Error})
	}
	return nil, fmt.Errorf("bench: record of unknown kind %q", r.Kind)
}

// WriteHeader writes the first line of results.jsonl: the machine and the
// run's parameters.
func (s *SuiteResult) WriteHeader(w io.Writer) error {
	if err := json.NewEncoder(w).Encode(machineJSON{Kind: KindMachine, Machine: s.Machine, RunInfo: s.Run}); err != nil {
		return fmt.Errorf("bench: write results header: %w", err)
	}
	return nil
}

// WriteRecord writes one record as a line of results.jsonl.
func WriteRecord(w io.Writer, r Record) error {
	if err := json.NewEncoder(w).Encode(r); err != nil {
		return fmt.Errorf("bench: write %s record: %w", r.Kind, err)
	}
	return nil
}

// WriteFooter writes the last line of results.jsonl.
func (s *SuiteResult) WriteFooter(w io.Writer) error {
	if err := json.NewEncoder(w).Encode(endJSON{Kind: KindEnd, ElapsedSec: s.Run.ElapsedSec, Interrupted: s.Run.Interrupted}); err != nil {
		return fmt.Errorf("bench: write results footer: %w", err)
	}
	return nil
}

// WriteJSONL writes the whole result as results.jsonl: header, records,
// footer.
func (s *SuiteResult) WriteJSONL(w io.Writer) error {
	if err := s.WriteHeader(w); err != nil {
		return err
	}
	for _, r := range s.Records {
		if err := WriteRecord(w, r); err != nil {
			return err
		}
	}
	return s.WriteFooter(w)
}

// ReadResults reads a results.jsonl file. It also accepts the plain Row
// lines of `sluice bench dispatch --json` (each a row of repeat 1), so that
// compare works on those too. Blank lines are ignored; anything else that
// is not a record is an error naming the line.
func ReadResults(r io.Reader) (*SuiteResult, error) {
	res := &SuiteResult{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var a anyJSON
		if err := json.Unmarshal(line, &a); err != nil {
			return nil, fmt.Errorf("bench: results line %d: %w", n, err)
		}
		switch a.Kind {
		case KindMachine:
			res.Machine, res.Run = a.Machine, a.RunInfo
		case KindEnd:
			res.Run.ElapsedSec, res.Run.Interrupted = a.RunInfo.ElapsedSec, a.RunInfo.Interrupted
		case "":
			if a.Metric == "" {
				return nil, fmt.Errorf("bench: results line %d: neither a record (no \"kind\") nor a row (no \"metric\")", n)
			}
			res.Records = append(res.Records, Record{Kind: KindRow, Repeat: 1, Row: a.Row})
		case KindRow, KindSample:
			rep := a.Repeat
			if rep == 0 {
				rep = 1
			}
			r := Record{Kind: a.Kind, Repeat: rep, Row: a.Row}
			if a.Kind == KindSample {
				r.TimeSec = a.TimeSec
			}
			res.Records = append(res.Records, r)
		case KindSkip, KindError:
			// Only the fields these kinds carry (see noteJSON).
			res.Records = append(res.Records, Record{Kind: a.Kind, Repeat: a.Repeat,
				Row: Row{Scenario: a.Scenario, Impl: a.Impl, Config: a.Config}, Reason: a.Reason, Error: a.Error})
		default:
			return nil, fmt.Errorf("bench: results line %d: unknown kind %q", n, a.Kind)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("bench: read results: %w", err)
	}
	return res, nil
}
