package capture

import (
	"io"
	"testing"
	"time"
)

// BenchmarkSinkWrite is the per-frame cost of laying 64-byte frames into
// the write buffer and writing it out (to io.Discard).
func BenchmarkSinkWrite(b *testing.B) {
	for _, format := range []Format{FormatPcap, FormatPcapNG} {
		b.Run("format="+format.String(), func(b *testing.B) {
			s := newSink(sinkConfig{output: "-", stdout: io.Discard}, newEncoder(format, DefaultSnaplen, false, ViaMMap))
			if err := s.open(time.Now()); err != nil {
				b.Fatal(err)
			}
			data := make([]byte, 64)
			b.ReportAllocs()
			for b.Loop() {
				r := record{sec: 1, nsec: 2, wireLen: 64, data: data}
				if err := s.write(&r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
