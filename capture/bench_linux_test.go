//go:build linux

package capture

import (
	"io"
	"testing"
	"time"

	"github.com/sluicenet/sluice/dataplane"
)

// BenchmarkWriteRing is the cost per frame of writing a ring block of
// 64-byte frames (what writeRing does with the ring's memory), to
// io.Discard.
func BenchmarkWriteRing(b *testing.B) {
	for _, format := range []Format{FormatPcap, FormatPcapNG} {
		b.Run("format="+format.String(), func(b *testing.B) {
			opts := Options{Interface: "x", Output: "-", Stdout: io.Discard, Format: format}.withDefaults()
			c := &Capture{opts: opts, stopCh: make(chan struct{})}
			c.sink = newSink(sinkConfig{output: "-", stdout: io.Discard}, newEncoder(format, opts.Snaplen, false, ViaMMap))
			if err := c.sink.open(time.Now()); err != nil {
				b.Fatal(err)
			}
			ch := &channel{}
			data := make([]byte, 64)
			block := make([]dataplane.RingFrame, 1000)
			for i := range block {
				block[i] = dataplane.RingFrame{Data: data, WireLen: 64, Sec: 1, Nsec: 2, PktType: dataplane.PacketOtherHost, HasVnet: true}
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := c.writeRing(ch, block); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(block)), "ns/frame")
		})
	}
}
