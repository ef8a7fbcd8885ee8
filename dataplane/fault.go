package dataplane

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Fault containment: a panic while one frame is handled (a parser bug that a
// hostile peer found, in this module or in the netstack above it) must cost
// that frame, not the process and every other flow with it. FaultGuard
// recovers at the delivery boundary, once per Deliver call: a deferred
// recover per batch costs nothing measurable (see the package benchmarks),
// where one per frame would sit on the hot path.
//
// To know which frame of a batch was in hand, a Deliverer that handles its
// frames one at a time reports the index with Handling before each (one
// store). After a panic the guard then records that frame, leaves its
// buffers alone (the Deliverer may have handed them on) and delivers the
// frames after it in a new Deliver call, so a fault loses exactly one frame.
// A Deliverer that does not report loses the rest of the batch.
//
// A recovered fault is counted (Stats.Faults), logged at most once per
// FaultOptions.LogInterval with the panic value, the stack and the frame's
// first bytes, and, with FaultOptions.CorpusDir, the frame is written in Go's
// fuzz corpus format as a seed of fdbased's FuzzEndpointFrame, so that
// `go test -run FuzzEndpointFrame/NAME ./fdbased` replays it and
// `go test -fuzz FuzzEndpointFrame` starts from it.
//
// Not everything is contained: a fatal runtime error (concurrent map
// writes, out of memory) is not a panic and still ends the process, and a
// panic inside code that holds a lock without a deferred unlock leaves that
// lock held.

// FaultCorpusTarget is the fuzz target whose corpus files a FaultGuard
// writes: FuzzEndpointFrame(frame, vnet []byte) in package fdbased.
const FaultCorpusTarget = "FuzzEndpointFrame"

// Defaults of FaultOptions.
const (
	DefaultFaultLogInterval = time.Second
	DefaultFaultCorpusFiles = 1000
)

// FaultOptions configure a FaultGuard. The zero value logs nothing (unless
// Logger is set) and writes no corpus.
type FaultOptions struct {
	// CorpusDir is where the frame behind each fault is written, one file
	// per distinct frame (named by its hash, so a frame that faults again
	// is not written twice). Created when the first fault comes. Empty:
	// no files.
	CorpusDir string
	// MaxCorpusFiles bounds the files one guard writes, so that a peer
	// repeating a crash with varied bytes cannot fill the disk. Default
	// DefaultFaultCorpusFiles.
	MaxCorpusFiles int
	// LogInterval is the least time between two fault log lines; the
	// faults in between are counted in the next line. Default
	// DefaultFaultLogInterval.
	LogInterval time.Duration
	// Logger receives the fault lines. nil discards.
	Logger *slog.Logger
}

// FaultGuard contains panics raised while frames are delivered; see above.
// Its methods are safe for concurrent use; Handling(p, i) must only be
// called by deliverer p.
type FaultGuard struct {
	opts     FaultOptions
	counters *Counters
	cursors  []faultCursor

	mu         sync.Mutex
	lastLog    time.Time // guarded by mu
	suppressed int       // guarded by mu; faults not logged since lastLog
	files      int       // guarded by mu; corpus files written
}

// faultCursor is one deliverer's frame in hand, padded to a cache line so
// that deliverers on different CPUs do not share one.
type faultCursor struct {
	i int
	_ [56]byte
}

// NewFaultGuard returns a guard for deliverers numbered 0..deliverers-1
// (Frame.Processor) that counts faults in counters.Faults.
func NewFaultGuard(opts FaultOptions, counters *Counters, deliverers int) *FaultGuard {
	if opts.MaxCorpusFiles <= 0 {
		opts.MaxCorpusFiles = DefaultFaultCorpusFiles
	}
	if opts.LogInterval <= 0 {
		opts.LogInterval = DefaultFaultLogInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if counters == nil {
		counters = new(Counters)
	}
	return &FaultGuard{opts: opts, counters: counters, cursors: make([]faultCursor, max(deliverers, 1))}
}

// Handling records that deliverer processor is about to handle frame i of
// the batch it was given; -1 says no single frame is in hand. A nil guard
// ignores it.
func (g *FaultGuard) Handling(processor, i int) {
	if g == nil || processor < 0 || processor >= len(g.cursors) {
		return
	}
	g.cursors[processor].i = i
}

// Deliver hands frames to d, containing panics: after one, the frames d had
// not reached are delivered in a new call. All frames share one Processor.
// A nil guard delivers without containment.
func (g *FaultGuard) Deliver(d Deliverer, frames []Frame) {
	if g == nil {
		d.Deliver(frames)
		return
	}
	for len(frames) > 0 {
		frames = g.deliverOnce(d, frames)
	}
}

// deliverOnce is one Deliver call; it returns the frames still to deliver
// after a fault, nil otherwise.
func (g *FaultGuard) deliverOnce(d Deliverer, frames []Frame) (rest []Frame) {
	p := frames[0].Processor
	if p < 0 || p >= len(g.cursors) {
		p = 0
	}
	c := &g.cursors[p]
	c.i = -1
	defer func() {
		if v := recover(); v != nil {
			rest = g.contain(frames, c.i, v)
		}
	}()
	d.Deliver(frames)
	return nil
}

// contain accounts for a fault while frame i of frames was handled (i out of
// range: unknown) and returns the frames to deliver next.
func (g *FaultGuard) contain(frames []Frame, i int, v any) []Frame {
	stack := debug.Stack()
	if i < 0 || i >= len(frames) {
		g.record("deliver", v, stack, nil, nil, fmt.Sprintf("frame unknown: the rest of a %d-frame batch is lost", len(frames)))
		return nil
	}
	f := &frames[i]
	b := make([]byte, f.Len)
	n := f.CopyTo(b)
	var vnet []byte
	if f.HasVnet {
		vnet = make([]byte, VnetHdrLen)
		f.Vnet.Encode(vnet)
	}
	g.record("deliver", v, stack, b[:n], vnet, fmt.Sprintf("frame %d of %d, channel %d, processor %d", i, len(frames), f.Channel, f.Processor))
	return frames[i+1:]
}

// Recovered accounts for a fault that other code recovered itself: where
// says what was running, v is the panic value, frame and vnet the bytes in
// hand if there were any (either may be nil). A nil guard ignores it.
func (g *FaultGuard) Recovered(where string, v any, frame, vnet []byte) {
	if g == nil {
		return
	}
	g.record(where, v, debug.Stack(), frame, vnet, "")
}

// Faults returns the number of faults counted so far.
func (g *FaultGuard) Faults() uint64 { return g.counters.Faults.Load() }

func (g *FaultGuard) record(where string, v any, stack, frame, vnet []byte, detail string) {
	g.counters.Faults.Add(1)
	g.mu.Lock()
	defer g.mu.Unlock()
	var file string
	var ferr error
	if frame != nil && g.opts.CorpusDir != "" && g.files < g.opts.MaxCorpusFiles {
		var wrote bool
		file, wrote, ferr = writeCorpusFile(g.opts.CorpusDir, frame, vnet)
		if wrote {
			g.files++
		}
	}
	now := time.Now()
	if !g.lastLog.IsZero() && now.Sub(g.lastLog) < g.opts.LogInterval {
		g.suppressed++
		return
	}
	attrs := []any{"where", where, "panic", fmt.Sprint(v), "faults", g.counters.Faults.Load(), "not_logged_since_last", g.suppressed}
	if detail != "" {
		attrs = append(attrs, "detail", detail)
	}
	if frame != nil {
		attrs = append(attrs, "frame_len", len(frame), "frame_head", hex.EncodeToString(frame[:min(len(frame), 64)]))
	}
	if vnet != nil {
		attrs = append(attrs, "vnet", hex.EncodeToString(vnet))
	}
	switch {
	case file != "":
		attrs = append(attrs, "corpus_file", file)
	case ferr != nil:
		attrs = append(attrs, "corpus_error", ferr.Error())
	}
	attrs = append(attrs, "stack", string(stack))
	g.opts.Logger.Error("dataplane: contained a fault while handling a frame; it was dropped", attrs...)
	g.lastLog, g.suppressed = now, 0
}

// writeCorpusFile writes frame and vnet into dir as one fuzz corpus entry
// and returns its path and whether it is new.
func writeCorpusFile(dir string, frame, vnet []byte) (string, bool, error) {
	data := MarshalFaultCorpus(frame, vnet)
	sum := sha256.Sum256(data)
	// Named like the entries `go test -fuzz` writes: a hash prefix.
	path := filepath.Join(dir, hex.EncodeToString(sum[:8]))
	if _, err := os.Stat(path); err == nil {
		return path, false, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", false, fmt.Errorf("fault corpus: %w", err)
	}
	// Through a temporary file, so that a fuzz run never reads half an
	// entry.
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return "", false, fmt.Errorf("fault corpus: %w", err)
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", false, fmt.Errorf("fault corpus: %w", err)
	}
	return path, true, nil
}

// corpusHeader is the first line of a Go fuzz corpus file.
const corpusHeader = "go test fuzz v1\n"

// MarshalFaultCorpus encodes the arguments of FuzzEndpointFrame (the frame
// and its virtio_net_hdr, empty when there is none) as a Go fuzz corpus
// file.
func MarshalFaultCorpus(frame, vnet []byte) []byte {
	var b strings.Builder
	b.WriteString(corpusHeader)
	for _, v := range [][]byte{frame, vnet} {
		b.WriteString("[]byte(")
		b.WriteString(strconv.Quote(string(v)))
		b.WriteString(")\n")
	}
	return []byte(b.String())
}

// UnmarshalFaultCorpus decodes what MarshalFaultCorpus wrote (and the files
// `go test -fuzz` writes for a func(frame, vnet []byte) target).
func UnmarshalFaultCorpus(data []byte) (frame, vnet []byte, err error) {
	s, ok := strings.CutPrefix(string(data), corpusHeader)
	if !ok {
		return nil, nil, fmt.Errorf("fault corpus: not a Go fuzz corpus file: the first line is not %q", strings.TrimSpace(corpusHeader))
	}
	var vals [][]byte
	for line := range strings.Lines(s) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		q, ok := strings.CutPrefix(line, "[]byte(")
		if !ok || !strings.HasSuffix(q, ")") {
			return nil, nil, fmt.Errorf("fault corpus: value %d: %q is not a []byte", len(vals)+1, line)
		}
		v, err := strconv.Unquote(q[:len(q)-1])
		if err != nil {
			return nil, nil, fmt.Errorf("fault corpus: value %d: %w", len(vals)+1, err)
		}
		vals = append(vals, []byte(v))
	}
	if len(vals) != 2 {
		return nil, nil, fmt.Errorf("fault corpus: %d values, want 2 (frame, vnet)", len(vals))
	}
	return vals[0], vals[1], nil
}
