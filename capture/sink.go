package capture

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"
)

// writeBufBytes is the write buffer: records are laid into it whole and it is
// written out when full, so a 64-byte frame costs one copy and a 1/15000th
// of a write(2).
const writeBufBytes = 1 << 20

// errFileLimit ends a capture that has written the -W number of -G files.
var errFileLimit = errors.New("capture: wrote the number of files -W allows")

// WriteError is a failed write to the output. The file was cut back to the
// last whole record, so it is readable and holds Frames frames.
type WriteError struct {
	File   string // the file, "-" for stdout
	Frames uint64 // whole frames in the file
	Bytes  int64  // its size after the cut
	Err    error
}

func (e *WriteError) Error() string {
	err := e.Err
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err // the file is named already
	}
	if e.File == "-" {
		return fmt.Sprintf("write to stdout: %v (after %d whole frames)", err, e.Frames)
	}
	return fmt.Sprintf("write %s: %v; the file holds its first %d frames (%d bytes, cut back to the last whole frame) and is readable",
		e.File, err, e.Frames, e.Bytes)
}

func (e *WriteError) Unwrap() error { return e.Err }

// sinkConfig is what a sink needs to know.
type sinkConfig struct {
	output    string    // file name (a strftime pattern with every), "-" for stdout
	stdout    io.Writer // for "-"
	fileSize  int64     // -C in bytes; 0 never
	every     time.Duration
	fileCount int // -W
	info      fileInfo
	// stats returns the numbers of a pcapng statistics block; called when
	// a file ends.
	stats func() trailerStats
}

// sink writes encoded records to the output, rotating files as configured.
// Not safe for concurrent use: the capture serialises its calls.
type sink struct {
	cfg sinkConfig
	enc *encoder

	out      io.Writer
	f        *os.File // nil for stdout
	name     string
	buf      []byte
	hdrLen   int    // bytes at buf's start that are the file header, unwritten
	pending  uint64 // records in buf
	pendingB uint64 // their captured bytes
	written  int64  // bytes of whole units in the current file
	frames   uint64 // records in the current file
	total    uint64 // records written over all files
	totalB   uint64 // their captured bytes
	files    int    // files opened
	fileIdx  int    // -C counter
	digits   int    // -W digits in -C names
	gFiles   int    // files opened for -G periods
	gStart   int64  // start of the current -G period, Unix ns
	err      error  // sticky
	lastSync time.Time
}

func newSink(cfg sinkConfig, enc *encoder) *sink {
	s := &sink{cfg: cfg, enc: enc, buf: make([]byte, 0, writeBufBytes)}
	if cfg.fileSize > 0 && cfg.fileCount > 0 {
		// tcpdump pads -C numbers to the width of the largest, -W - 1.
		for x := cfg.fileCount - 1; x > 0; x /= 10 {
			s.digits++
		}
	}
	return s
}

// open starts the first file, at time now.
func (s *sink) open(now time.Time) error {
	s.gStart = now.UnixNano()
	if s.cfg.every > 0 {
		s.gFiles = 1
	}
	return s.openFile(now)
}

// fileName returns the name of the file of -C number idx in the -G period
// starting at t.
func (s *sink) fileName(t time.Time, idx int) string {
	base := s.cfg.output
	if s.cfg.every > 0 {
		base = strftime(base, t)
	}
	if s.cfg.fileSize == 0 || (idx == 0 && s.digits == 0) {
		return base
	}
	return base + fmt.Sprintf("%0*d", s.digits, idx)
}

func (s *sink) openFile(t time.Time) error {
	s.buf = s.buf[:0]
	s.written, s.frames, s.pending = 0, 0, 0
	if s.cfg.output == "-" {
		s.out, s.name = s.cfg.stdout, "-"
	} else {
		s.name = s.fileName(t, s.fileIdx)
		f, err := os.OpenFile(s.name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			s.err = fmt.Errorf("capture: %w", err)
			return s.err
		}
		s.f, s.out = f, f
	}
	s.files++
	s.buf = s.enc.header(s.buf, s.cfg.info)
	s.hdrLen = len(s.buf)
	return nil
}

// write appends r, rotating first if its time or the file's size says so.
func (s *sink) write(r *record) error {
	if s.err != nil {
		return s.err
	}
	if s.cfg.every > 0 {
		ts := int64(r.sec)*1e9 + int64(r.nsec)
		if ts-s.gStart >= int64(s.cfg.every) {
			if s.cfg.fileCount > 0 && s.gFiles >= s.cfg.fileCount {
				return errFileLimit
			}
			s.gFiles++
			s.gStart = ts
			s.fileIdx = 0
			if err := s.rotate(time.Unix(0, ts)); err != nil {
				return err
			}
		}
	}
	if s.cfg.fileSize > 0 && s.written+int64(len(s.buf)) > s.cfg.fileSize {
		s.fileIdx++
		if s.cfg.fileCount > 0 && s.fileIdx >= s.cfg.fileCount {
			s.fileIdx = 0 // a ring of -W files, as tcpdump's
		}
		if err := s.rotate(time.Unix(0, s.gStart)); err != nil {
			return err
		}
	}
	n := s.enc.recordSize(r)
	if len(s.buf)+n > cap(s.buf) {
		if err := s.flush(); err != nil {
			return err
		}
		if n > cap(s.buf) {
			s.buf = make([]byte, 0, n)
		}
	}
	b := s.buf[len(s.buf) : len(s.buf)+n]
	s.enc.putRecord(b, r)
	s.buf = s.buf[:len(s.buf)+n]
	s.pending++
	s.pendingB += uint64(s.enc.dataLen(b))
	return nil
}

// rotate ends the current file and opens the next.
func (s *sink) rotate(t time.Time) error {
	if err := s.closeFile(); err != nil {
		return err
	}
	return s.openFile(t)
}

// flush writes the buffer out. On a short write it cuts the file back to the
// last whole record and returns (and keeps) a *WriteError.
func (s *sink) flush() error {
	if s.err != nil {
		return s.err
	}
	s.lastSync = time.Now()
	if len(s.buf) == 0 {
		return nil
	}
	n, err := s.out.Write(s.buf)
	if err == nil && n == len(s.buf) {
		s.written += int64(n)
		s.frames += s.pending
		s.total += s.pending
		s.totalB += s.pendingB
		s.buf, s.pending, s.pendingB, s.hdrLen = s.buf[:0], 0, 0, 0
		return nil
	}
	if err == nil {
		err = io.ErrShortWrite
	}
	whole, recs, data := s.wholeUnits(n)
	s.written += int64(whole)
	s.frames += recs
	s.total += recs
	s.totalB += data
	if s.f != nil && n > whole {
		if terr := s.f.Truncate(s.written); terr != nil {
			err = errors.Join(err, fmt.Errorf("cut back to the last whole frame: %w", terr))
		}
	}
	s.buf, s.pending, s.pendingB = s.buf[:0], 0, 0
	s.err = &WriteError{File: s.name, Frames: s.frames, Bytes: s.written, Err: err}
	return s.err
}

// wholeUnits returns how many of the first n bytes of buf are whole units
// (the file header, records, blocks), how many records they hold and their
// captured bytes.
func (s *sink) wholeUnits(n int) (int, uint64, uint64) {
	off := 0
	if s.hdrLen > 0 {
		if n < s.hdrLen {
			return 0, 0, 0
		}
		off = s.hdrLen
	}
	var recs, data uint64
	for off < n {
		u := s.enc.unitLen(s.buf[off:n])
		if u == 0 {
			break
		}
		data += uint64(s.enc.dataLen(s.buf[off : off+u]))
		off += u
		recs++
	}
	return off, recs, data
}

// flushIfIdle writes the buffer out if it was last written longer ago than
// d, so that a slow capture still reaches the file (or a pipe) promptly.
func (s *sink) flushIfIdle(d time.Duration) error {
	if s.err != nil || len(s.buf) == 0 || time.Since(s.lastSync) < d {
		return s.err
	}
	return s.flush()
}

// closeFile writes the trailer, flushes and closes the current file.
func (s *sink) closeFile() error {
	if s.err == nil && s.cfg.stats != nil {
		s.buf = s.enc.trailer(s.buf, s.cfg.stats())
	}
	err := s.flush()
	if s.f != nil {
		if cerr := s.f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("capture: close %s: %w", s.name, cerr)
			s.err = err
		}
		s.f = nil
	}
	return err
}

// strftime expands the conversions of C's strftime that file names use, in
// local time: %Y %y %m %d %e %H %M %S %j %s %F %T %b %a %p %Z %%. Others are
// kept as they are.
func strftime(pattern string, t time.Time) string {
	var out []byte
	for i := 0; i < len(pattern); i++ {
		c := pattern[i]
		if c != '%' || i+1 == len(pattern) {
			out = append(out, c)
			continue
		}
		i++
		switch pattern[i] {
		case 'Y':
			out = strconv.AppendInt(out, int64(t.Year()), 10)
		case 'y':
			out = fmt.Appendf(out, "%02d", t.Year()%100)
		case 'm':
			out = fmt.Appendf(out, "%02d", int(t.Month()))
		case 'd':
			out = fmt.Appendf(out, "%02d", t.Day())
		case 'e':
			out = fmt.Appendf(out, "%2d", t.Day())
		case 'H':
			out = fmt.Appendf(out, "%02d", t.Hour())
		case 'M':
			out = fmt.Appendf(out, "%02d", t.Minute())
		case 'S':
			out = fmt.Appendf(out, "%02d", t.Second())
		case 'j':
			out = fmt.Appendf(out, "%03d", t.YearDay())
		case 's':
			out = strconv.AppendInt(out, t.Unix(), 10)
		case 'F':
			out = t.AppendFormat(out, "2006-01-02")
		case 'T':
			out = t.AppendFormat(out, "15:04:05")
		case 'b':
			out = t.AppendFormat(out, "Jan")
		case 'a':
			out = t.AppendFormat(out, "Mon")
		case 'p':
			out = t.AppendFormat(out, "PM")
		case 'Z':
			out = t.AppendFormat(out, "MST")
		case '%':
			out = append(out, '%')
		default:
			out = append(out, '%', pattern[i])
		}
	}
	return string(out)
}
