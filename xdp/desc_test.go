package xdp

import (
	"math"
	"testing"
)

func TestCheckRX(t *testing.T) {
	g := geometry{frameSize: 2048, size: 4 * 2048}
	for _, tc := range []struct {
		name  string
		d     Desc
		want  DescError
		chunk uint64
	}{
		{"copy-mode frame after the headroom", Desc{Addr: 2048 + 256, Len: 1514}, DescOK, 2048},
		{"frame filling its chunk exactly", Desc{Addr: 3 * 2048, Len: 2048}, DescOK, 3 * 2048},
		{"address at the end of the umem", Desc{Addr: 4 * 2048, Len: 60}, DescOutsideUMEM, 0},
		{"address far outside", Desc{Addr: math.MaxUint64, Len: 60}, DescOutsideUMEM, 0},
		{"length one past the chunk", Desc{Addr: 256, Len: 2048 - 256 + 1}, DescBeyondFrame, 0},
		{"huge length", Desc{Addr: 2*2048 + 10, Len: math.MaxUint32}, DescBeyondFrame, 2 * 2048},
		{"last chunk, huge length", Desc{Addr: 4*2048 - 1, Len: math.MaxUint32}, DescBeyondFrame, 3 * 2048},
		{"empty", Desc{Addr: 256}, DescEmpty, 0},
		{"multi-buffer", Desc{Addr: 256, Len: 100, Options: optPktContd}, DescMultiBuffer, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chunk, e := g.checkRX(tc.d)
			if e != tc.want || (e != DescOutsideUMEM && chunk != tc.chunk) {
				t.Errorf("checkRX(%+v) = %#x, %v; want %#x, %v", tc.d, chunk, e, tc.chunk, tc.want)
			}
		})
	}
}

func TestChunkPoolReclaim(t *testing.T) {
	g := geometry{frameSize: 2048, size: 8 * 2048}
	p := newChunkPool(g, 2, 3) // chunks 2, 3, 4
	c, ok := p.take()
	if !ok || c != 2*2048 {
		t.Fatalf("first take = %#x, %v; want chunk 2 (%#x)", c, ok, 2*2048)
	}
	for _, tc := range []struct {
		name string
		c    uint64
		want DescError
	}{
		{"another pool's chunk", 0, DescNotOurs},
		{"past the pool", 5 * 2048, DescNotOurs},
		{"unaligned", 2*2048 + 1, DescNotOurs},
		{"free chunk coming back", 3 * 2048, DescNotOurs},
		{"the chunk handed out", 2 * 2048, DescOK},
		{"the same chunk twice", 2 * 2048, DescNotOurs},
	} {
		if got := p.reclaim(tc.c); got != tc.want {
			t.Errorf("%s: reclaim(%#x) = %v, want %v", tc.name, tc.c, got, tc.want)
		}
	}
	if p.Free() != 3 || p.inKernel() != 0 {
		t.Errorf("after the round trip: %d free, %d with the kernel; want 3, 0", p.Free(), p.inKernel())
	}
	var got []uint64
	for {
		c, ok := p.take()
		if !ok {
			break
		}
		got = append(got, c)
	}
	if len(got) != 3 || p.inKernel() != 3 {
		t.Fatalf("took %v, %d with the kernel; want all 3", got, p.inKernel())
	}
	p.untake(got[0])
	if p.Free() != 1 || p.reclaim(got[0]) != DescNotOurs {
		t.Errorf("untaken chunk: %d free, reclaim accepted it", p.Free())
	}
}
