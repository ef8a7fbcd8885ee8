package capture

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// untag returns f without its first VLAN tag and the tag, as the kernel
// hands a received tagged frame over.
func untag(f []byte) ([]byte, uint32) {
	if len(f) < 18 || binary.BigEndian.Uint16(f[12:]) != 0x8100 {
		return f, 0
	}
	tag := binary.BigEndian.Uint32(f[12:])
	return append(append([]byte{}, f[:12]...), f[16:]...), tag
}

// recordsOf turns test frames into records the way a reader would see them:
// tags stripped into the metadata.
func recordsOf(fs []testFrame) []record {
	var rs []record
	for i, f := range fs {
		data, tag := untag(f.data)
		r := record{
			sec: 1_800_000_000 + uint32(i), nsec: uint32(i) * 1001,
			wireLen: len(data), data: data, pktType: uint8(i % 5),
			queue: uint32(i % 3), gsoSegs: uint32(1 + i%4), drops: uint64(i % 2 * 7),
		}
		if tag != 0 {
			r.hasVLAN, r.vlanTag = true, tag
		}
		rs = append(rs, r)
	}
	return rs
}

type got struct {
	Data            []byte
	OrigLen         int
	Time            int64
	Flags, Queue    uint32
	Drops           uint64
	Mode            uint8
	Channel         uint16
	GSO             uint32
	HasQueue, HasSl bool
}

func readAll(t *testing.T, b []byte) ([]got, FileInfo) {
	t.Helper()
	var gs []got
	fi, err := ReadFile(bytes.NewReader(b), func(r *FileRecord) error {
		gs = append(gs, got{Data: bytes.Clone(r.Data), OrigLen: r.OrigLen, Time: r.Time, Flags: r.Flags, Queue: r.Queue,
			Drops: r.DropCount, Mode: r.Mode, Channel: r.Channel, GSO: r.GSOSegments, HasQueue: r.HasQueue, HasSl: r.HasSluice})
		return nil
	})
	if err != nil {
		t.Fatalf("ReadFile: %v", err)
	}
	return gs, fi
}

// TestFormatsRoundTrip writes the test frames in each format and precision,
// with and without a snap length that cuts them, and reads them back: the
// bytes are the frames as sent (tags restored), the metadata as given.
func TestFormatsRoundTrip(t *testing.T) {
	fs := testFrames()
	for _, format := range []Format{FormatPcap, FormatPcapNG} {
		for _, nano := range []bool{false, true} {
			for _, snaplen := range []int{DefaultSnaplen, 60} {
				t.Run(fmt.Sprintf("%v/nano=%v/snaplen=%d", format, nano, snaplen), func(t *testing.T) {
					var out bytes.Buffer
					s := newSink(sinkConfig{output: "-", stdout: &out, info: fileInfo{iface: "vb", description: "d", filter: "udp", userAppl: "sluice"},
						stats: func() trailerStats {
							return trailerStats{start: 1, end: 2e9, accepted: 30, kernelDrop: 3, delivered: 27}
						},
					}, newEncoder(format, snaplen, nano, ViaRecvMMsg))
					if err := s.open(time.Unix(1_800_000_000, 0)); err != nil {
						t.Fatal(err)
					}
					rs := recordsOf(fs)
					for i := range rs {
						if err := s.write(&rs[i]); err != nil {
							t.Fatal(err)
						}
					}
					if err := s.closeFile(); err != nil {
						t.Fatal(err)
					}
					gs, fi := readAll(t, out.Bytes())
					if len(gs) != len(fs) {
						t.Fatalf("read %d frames, wrote %d", len(gs), len(fs))
					}
					if fi.Nano != nano || fi.Snaplen != snaplen || fi.PcapNG != (format == FormatPcapNG) {
						t.Errorf("file info %+v", fi)
					}
					for i, f := range fs {
						want := got{Data: f.data[:min(len(f.data), snaplen)], OrigLen: len(f.data), Time: int64(rs[i].sec)*1e9 + int64(rs[i].nsec)}
						if !nano {
							want.Time -= want.Time % 1000
						}
						if format == FormatPcapNG {
							want.Flags = epbFlags(rs[i].pktType)
							want.Queue, want.HasQueue = rs[i].queue, true
							want.Drops = rs[i].drops
							want.HasSl, want.Mode, want.Channel, want.GSO = true, ViaRecvMMsg.modeCode(), uint16(rs[i].queue), rs[i].gsoSegs
						}
						if diff := cmp.Diff(want, gs[i]); diff != "" {
							t.Fatalf("frame %d (%s) (-want +got):\n%s", i, f.name, diff)
						}
					}
					if format == FormatPcapNG {
						wantFI := FileInfo{PcapNG: true, Nano: nano, Snaplen: snaplen, IfName: "vb", IfDescription: "d", Filter: "udp",
							HasStats: true, Accepted: 30, OSDrop: 3, Delivered: 27}
						if diff := cmp.Diff(wantFI, fi); diff != "" {
							t.Errorf("file info (-want +got):\n%s", diff)
						}
					}
				})
			}
		}
	}
}

func TestEPBFlags(t *testing.T) {
	for pt, want := range map[uint8]uint32{
		0: epbInbound | epbUnicast, 1: epbInbound | epbBroadcast, 2: epbInbound | epbMulticast,
		3: epbInbound | epbPromiscuous, 4: epbOutbound, 9: 0,
	} {
		if got := epbFlags(pt); got != want {
			t.Errorf("epbFlags(%d) = %#x, want %#x", pt, got, want)
		}
	}
}

// failAfter passes the first n bytes to w, then fails every write with err,
// as a filling disk does.
type failAfter struct {
	w   io.Writer
	n   int
	err error
}

func (f *failAfter) Write(b []byte) (int, error) {
	if len(b) <= f.n {
		f.n -= len(b)
		return f.w.Write(b)
	}
	k, _ := f.w.Write(b[:f.n])
	f.n -= k
	return k, f.err
}

// TestSinkCutsBackToWholeFrame: a write that fails part way through the
// buffer (ENOSPC) leaves a file of whole frames only, which reads back
// cleanly, and the error says how many.
func TestSinkCutsBackToWholeFrame(t *testing.T) {
	fs := testFrames()
	for _, format := range []Format{FormatPcap, FormatPcapNG} {
		for _, limit := range []int{10, 500, 3000, 7777} {
			t.Run(fmt.Sprintf("%v/limit=%d", format, limit), func(t *testing.T) {
				name := filepath.Join(t.TempDir(), "x")
				s := newSink(sinkConfig{output: name, info: fileInfo{iface: "vb"}}, newEncoder(format, DefaultSnaplen, false, ViaMMap))
				if err := s.open(time.Now()); err != nil {
					t.Fatal(err)
				}
				s.out = &failAfter{w: s.f, n: limit, err: syscall.ENOSPC}
				rs := recordsOf(fs)
				var err error
				for i := range rs {
					if err = s.write(&rs[i]); err != nil {
						break
					}
				}
				if err == nil {
					err = s.closeFile()
				} else {
					s.closeFile()
				}
				var we *WriteError
				if !errors.As(err, &we) || !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("error %v, want a *WriteError wrapping ENOSPC", err)
				}
				b, rerr := os.ReadFile(name)
				if rerr != nil {
					t.Fatal(rerr)
				}
				if int64(len(b)) != we.Bytes || len(b) > limit {
					t.Errorf("file is %d bytes, error says %d, limit %d", len(b), we.Bytes, limit)
				}
				if len(b) == 0 {
					if we.Frames != 0 {
						t.Errorf("empty file, error says %d frames", we.Frames)
					}
					return
				}
				gs, _ := readAll(t, b)
				if uint64(len(gs)) != we.Frames {
					t.Errorf("file holds %d frames, error says %d", len(gs), we.Frames)
				}
				for i, g := range gs {
					if !bytes.Equal(g.Data, fs[i].data) {
						t.Fatalf("frame %d differs", i)
					}
				}
				if s.total != we.Frames {
					t.Errorf("sink total %d, error says %d", s.total, we.Frames)
				}
			})
		}
	}
}

func TestSinkFileNames(t *testing.T) {
	at := time.Date(2026, 11, 22, 9, 8, 7, 0, time.Local)
	for _, c := range []struct {
		cfg  sinkConfig
		idx  int
		want string
	}{
		{sinkConfig{output: "x.pcap"}, 0, "x.pcap"},
		{sinkConfig{output: "x.pcap", fileSize: 1}, 0, "x.pcap"},
		{sinkConfig{output: "x.pcap", fileSize: 1}, 3, "x.pcap3"},
		{sinkConfig{output: "x.pcap", fileSize: 1, fileCount: 10}, 0, "x.pcap0"},
		{sinkConfig{output: "x.pcap", fileSize: 1, fileCount: 11}, 7, "x.pcap07"},
		{sinkConfig{output: "x-%Y%m%d-%H%M%S.pcap", every: time.Second}, 0, "x-20261122-090807.pcap"},
		{sinkConfig{output: "x-%H.pcap", every: time.Second, fileSize: 1, fileCount: 3}, 2, "x-09.pcap2"},
	} {
		s := newSink(c.cfg, &encoder{})
		if got := s.fileName(at, c.idx); got != c.want {
			t.Errorf("%+v idx %d: %q, want %q", c.cfg, c.idx, got, c.want)
		}
	}
}

func TestStrftime(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.Local)
	for pat, want := range map[string]string{
		"plain":             "plain",
		"%Y-%m-%d %H:%M:%S": "2026-03-04 05:06:07",
		"%F_%T":             "2026-03-04_05:06:07",
		"%y%j %e|%b %a":     "26063  4|Mar Wed",
		"100%%":             "100%",
		"%q and %":          "%q and %",
		"%s":                fmt.Sprint(at.Unix()),
	} {
		if got := strftime(pat, at); got != want {
			t.Errorf("strftime(%q) = %q, want %q", pat, got, want)
		}
	}
}

// TestSinkRotation drives -C and -G with record timestamps: the files, their
// names and what each holds.
func TestSinkRotation(t *testing.T) {
	dir := t.TempDir()
	fs := testFrames()
	rs := recordsOf(fs)
	t.Run("size ring", func(t *testing.T) {
		base := filepath.Join(dir, "c.pcap")
		s := newSink(sinkConfig{output: base, fileSize: 1500, fileCount: 3}, newEncoder(FormatPcap, DefaultSnaplen, false, ViaMMap))
		if err := s.open(time.Now()); err != nil {
			t.Fatal(err)
		}
		for i := range rs {
			// Flush after each so that the size check sees the file grow.
			if err := s.write(&rs[i]); err != nil {
				t.Fatal(err)
			}
			if err := s.flush(); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.closeFile(); err != nil {
			t.Fatal(err)
		}
		total := 0
		for i := range 3 {
			b, err := os.ReadFile(fmt.Sprintf("%s%d", base, i))
			if err != nil {
				t.Fatal(err)
			}
			gs, _ := readAll(t, b)
			total += len(gs)
			if len(b) > 1500+1500 {
				t.Errorf("file %d is %d bytes, over the limit by more than a frame", i, len(b))
			}
		}
		if s.files <= 3 || total >= len(fs) {
			t.Errorf("%d files opened, %d frames in the 3 kept: want a ring that reused files", s.files, total)
		}
	})
	t.Run("time limit", func(t *testing.T) {
		base := filepath.Join(dir, "g-%s.pcapng")
		start := time.Unix(1_800_000_000, 0)
		s := newSink(sinkConfig{output: base, every: 2 * time.Second, fileCount: 2,
			stats: func() trailerStats { return trailerStats{} }}, newEncoder(FormatPcapNG, DefaultSnaplen, false, ViaMMap))
		if err := s.open(start); err != nil {
			t.Fatal(err)
		}
		var err error
		n := 0
		for i := range rs {
			// recordsOf stamps one frame per second.
			if err = s.write(&rs[i]); err != nil {
				break
			}
			n++
		}
		if !errors.Is(err, errFileLimit) || n != 4 {
			t.Fatalf("wrote %d frames, then %v: want 4 (two 2-second files), then errFileLimit", n, err)
		}
		s.closeFile()
		for _, sec := range []int64{1_800_000_000, 1_800_000_002} {
			b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("g-%d.pcapng", time.Unix(sec, 0).Unix())))
			if err != nil {
				t.Fatal(err)
			}
			if gs, fi := readAll(t, b); len(gs) != 2 || !fi.HasStats {
				t.Errorf("file at %d: %d frames, stats %v; want 2 and an ISB", sec, len(gs), fi.HasStats)
			}
		}
	})
}

// FuzzReadFile: arbitrary bytes never make the reader panic.
func FuzzReadFile(f *testing.F) {
	var out bytes.Buffer
	s := newSink(sinkConfig{output: "-", stdout: &out}, newEncoder(FormatPcapNG, DefaultSnaplen, true, ViaMMap))
	_ = s.open(time.Now())
	rs := recordsOf(testFrames()[:3])
	for i := range rs {
		_ = s.write(&rs[i])
	}
	_ = s.closeFile()
	f.Add(out.Bytes())
	out.Reset()
	s = newSink(sinkConfig{output: "-", stdout: &out}, newEncoder(FormatPcap, DefaultSnaplen, false, ViaMMap))
	_ = s.open(time.Now())
	_ = s.write(&rs[0])
	_ = s.closeFile()
	f.Add(out.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ReadFile(bytes.NewReader(b), func(r *FileRecord) error {
			if len(r.Data) > len(b) {
				t.Fatalf("record of %d bytes from a %d-byte file", len(r.Data), len(b))
			}
			return nil
		})
	})
}
