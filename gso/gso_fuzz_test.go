package gso

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/sluicenet/sluice/internal/csum"
	ot "github.com/sluicenet/sluice/internal/offloadtest"
)

// FuzzSegment segments arbitrary bytes and checks that it either fails with
// one of the documented errors or produces segments that:
//   - number Info.Segments, each at most HdrLen+MSS bytes;
//   - parse with consistent lengths and valid checksums (gVisor's header
//     package), after CompleteChecksum when partial;
//   - carry, concatenated, exactly the input's payload;
//   - are the same whether produced by Segment or Split;
//
// and that the input is never modified.
func FuzzSegment(f *testing.F) {
	hbh := []byte{ot.ProtoTCP, 0, 1, 4, 0, 0, 0, 0}
	for i, p := range []ot.Packet{
		{Payload: ot.Payload(0, 5000), Flags: ot.ACK | ot.PSH},
		{V6: true, Payload: ot.Payload(0, 3001), TCPOpts: ot.TimestampOption(1, 2)},
		{Ethernet: true, Payload: ot.Payload(0, 2000)},
		{Ethernet: true, V6: true, UDP: true, Payload: ot.Payload(0, 4000)},
		{UDP: true, Payload: ot.Payload(0, 999)},
		{IPOpts: []byte{1, 1, 1, 0}, Payload: ot.Payload(0, 1000)},
		{V6: true, ExtHdrs: hbh, Payload: ot.Payload(0, 1000)},
		{},
	} {
		f.Add(byte(i), uint16(536+i*100), ot.Build(p))
	}
	f.Fuzz(func(t *testing.T, mode byte, mss uint16, pkt []byte) {
		o := Options{MSS: int(mss), Ethernet: mode&1 != 0, PartialChecksum: mode&2 != 0, FixedID: mode&4 != 0}
		orig := append([]byte(nil), pkt...)
		// No segment is longer than the packet it comes from.
		dst := buffers(64, len(pkt))
		n, err := Segment(dst, pkt, o)
		if !bytes.Equal(pkt, orig) {
			t.Fatal("input modified")
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNotSupported) && !errors.Is(err, ErrShortBuffer) {
				t.Fatalf("undocumented error %v", err)
			}
			if n != 0 {
				t.Fatalf("n %d with an error", n)
			}
			return
		}
		in, err := Inspect(pkt, o)
		if err != nil || n != in.Segments {
			t.Fatalf("Inspect after a successful Segment: %+v, %v, n %d", in, err, n)
		}
		frames := make([]Frame, n)
		hdrs := make([]byte, n*in.HdrLen)
		if n2, err := Split(frames, hdrs, pkt, o); err != nil || n2 != n {
			t.Fatalf("Split: %d, %v", n2, err)
		}
		udp := in.Proto == protoUDP
		var all []byte
		for i, d := range dst[:n] {
			if len(d) > in.HdrLen+o.MSS {
				t.Fatalf("segment %d: %d bytes, more than %d+%d", i, len(d), in.HdrLen, o.MSS)
			}
			if got := append(append([]byte(nil), frames[i].Header...), frames[i].Payload...); !bytes.Equal(got, d) {
				t.Fatalf("Split and Segment differ at %d", i)
			}
			if o.PartialChecksum {
				if err := CompleteChecksum(d, in.CsumStart, in.CsumOffset); err != nil {
					t.Fatal(err)
				}
			}
			if in.V6 && in.L4-in.L3 > ipv6Len+8 {
				// checkFrame skips one extension header only.
				all = append(all, d[in.HdrLen:]...)
				continue
			}
			fi := checkFrame(t, d, o.Ethernet, udp, false)
			if !bytes.Equal(fi.payload, d[in.HdrLen:]) {
				t.Fatalf("segment %d: payload not where Info says", i)
			}
			all = append(all, fi.payload...)
		}
		if !bytes.Equal(all, pkt[in.HdrLen:]) {
			t.Fatal("payload out differs from payload in")
		}
	})
}

// FuzzCompleteChecksum: CompleteChecksum never panics, rejects fields
// outside the frame, and leaves a frame whose checksum verifies.
func FuzzCompleteChecksum(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5}, 0, 2)
	f.Fuzz(func(t *testing.T, b []byte, start, off int) {
		var pseudo uint16
		if start >= 0 && off >= 0 && start+off+2 <= len(b) && start+off+2 > 0 {
			pseudo = binary.BigEndian.Uint16(b[start+off:])
		}
		err := CompleteChecksum(b, start, off)
		inside := start >= 0 && off >= 0 && start+off+2 <= len(b) && start+off+2 > 0 && off%2 == 0
		if (err == nil) != inside {
			t.Fatalf("CompleteChecksum(%d bytes, %d, %d): %v", len(b), start, off, err)
		}
		if err != nil {
			return
		}
		// The field held the pseudo-header sum, which a receiver adds
		// back: with it, the completed data sums to all ones (negative
		// zero).
		if s := csum.Sum(b[start:], pseudo); s != 0xffff {
			t.Fatalf("sum after completion %#x", s)
		}
	})
}
