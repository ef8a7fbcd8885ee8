package csum

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// naiveSum is the reference: RFC 1071's loop over big-endian 16-bit words.
func naiveSum(b []byte, initial uint16) uint16 {
	s := uint32(initial)
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

func TestSumMatchesNaiveAndGVisor(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 300; n++ {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		for _, initial := range []uint16{0, 1, 0xfffe, 0xffff, uint16(r.Uint32())} {
			want := naiveSum(b, initial)
			if got := Sum(b, initial); !equivalent(got, want) {
				t.Fatalf("Sum(len %d, %#x) = %#x, naive %#x", n, initial, got, want)
			}
			if g := checksum.Checksum(b, initial); !equivalent(g, want) {
				t.Fatalf("gVisor Checksum(len %d, %#x) = %#x, naive %#x", n, initial, g, want)
			}
		}
	}
	// All 0xff bytes: sums that carry on every word.
	b := make([]byte, 4099)
	for i := range b {
		b[i] = 0xff
	}
	if got, want := Sum(b, 0xffff), naiveSum(b, 0xffff); !equivalent(got, want) {
		t.Fatalf("all-ones: Sum = %#x, naive %#x", got, want)
	}
}

// equivalent reports whether two one's complement sums are equal; 0 and
// 0xffff are both zero.
func equivalent(a, b uint16) bool {
	return a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
}

func TestAtOffsetConcatenation(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	b := make([]byte, 1000)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	whole := Sum(b, 0)
	for _, cut := range []int{0, 1, 2, 3, 501, 998, 999, 1000} {
		got := Add(Sum(b[:cut], 0), AtOffset(Sum(b[cut:], 0), cut))
		if !equivalent(got, whole) {
			t.Errorf("cut %d: combined %#x, whole %#x", cut, got, whole)
		}
	}
}

func TestSub(t *testing.T) {
	for _, c := range []struct{ a, b uint16 }{{5, 3}, {3, 5}, {0, 0xffff}, {0x1234, 0x1234}} {
		if got := Add(Sub(c.a, c.b), c.b); !equivalent(got, c.a) {
			t.Errorf("Sub(%#x,%#x)+%#x = %#x", c.a, c.b, c.b, got)
		}
	}
}

func BenchmarkSum(b *testing.B) {
	for _, size := range []int{64, 1448, 65535} {
		buf := make([]byte, size)
		for i := range buf {
			buf[i] = byte(i)
		}
		b.Run(fmt.Sprintf("impl=sluice/size=%d", size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				Sum(buf, 0)
			}
		})
		b.Run(fmt.Sprintf("impl=gvisor/size=%d", size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				checksum.Checksum(buf, 0)
			}
		})
		b.Run(fmt.Sprintf("impl=naive/size=%d", size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				naiveSum(buf, 0)
			}
		})
	}
}
