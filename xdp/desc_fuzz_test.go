package xdp

import "testing"

// FuzzDesc feeds arbitrary descriptors to the rx checks and the chunk
// accounting, as a broken kernel or a corrupted ring could, and checks the
// promises the reader relies on: an accepted descriptor's frame lies inside
// one chunk of the UMEM (so slicing the UMEM with it cannot panic), a
// refused one is classified, and a chunk is never reclaimed twice.
func FuzzDesc(f *testing.F) {
	f.Add(uint64(2048+256), uint32(1514), uint32(0), uint8(0))
	f.Add(uint64(0), uint32(0), uint32(0), uint8(1))
	f.Add(uint64(1<<63), uint32(60), uint32(0), uint8(0))
	f.Add(uint64(4*2048-1), uint32(0xffffffff), uint32(1), uint8(1))
	f.Add(uint64(2048), uint32(2048), uint32(0), uint8(1))
	f.Fuzz(func(t *testing.T, addr uint64, length, options uint32, large uint8) {
		frameSize := uint64(2048)
		if large&1 != 0 {
			frameSize = 4096
		}
		const chunks = 4
		g := geometry{frameSize: frameSize, size: chunks * frameSize}
		umem := make([]byte, g.size)
		d := Desc{Addr: addr, Len: length, Options: options}
		chunk, e := g.checkRX(d)
		if e >= numDescErrors {
			t.Fatalf("checkRX(%+v) = unknown error %d", d, e)
		}
		if e == DescOK {
			if d.Addr < chunk || d.Addr+uint64(d.Len) > chunk+frameSize || chunk+frameSize > g.size {
				t.Fatalf("checkRX accepted %+v: frame [%d, %d) not inside chunk %d", d, d.Addr, d.Addr+uint64(d.Len), chunk)
			}
			_ = umem[d.Addr : d.Addr+uint64(d.Len)]
		}
		if e != DescOutsideUMEM && (chunk%frameSize != 0 || chunk >= g.size) {
			t.Fatalf("checkRX(%+v) returned chunk %#x", d, chunk)
		}
		// Whatever comes back, a pool reclaims a chunk only once and only
		// when it handed it out.
		p := newChunkPool(g, 0, chunks)
		taken := map[uint64]bool{}
		for {
			c, ok := p.take()
			if !ok {
				break
			}
			taken[c] = true
		}
		for i := 0; i < 2; i++ {
			c, ce := g.checkCompletion(addr)
			if ce != DescOK {
				if addr < g.size {
					t.Fatalf("checkCompletion(%#x) refused an address inside the UMEM", addr)
				}
				return
			}
			got := p.reclaim(c)
			if want := i == 0 && taken[c]; (got == DescOK) != want {
				t.Fatalf("reclaim %d of %#x: %v", i, c, got)
			}
		}
	})
}
