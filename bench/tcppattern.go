package bench

import (
	"bytes"
	"fmt"
	"math/rand/v2"
)

// patternLen is the period of the byte stream every tcp flow carries. It
// is not a multiple of the 64 KiB writes, the MSS or any buffer size, so a
// segment delivered twice, dropped or put in the wrong place never lines up
// with the bytes expected there.
const patternLen = 1<<16 + 4093

// streamPattern is the content of every tcp flow: a fixed pseudo-random
// sequence of patternLen bytes, repeated. The receiver compares what it
// reads with what must be at that offset of the stream, a memcmp per read,
// so the integrity check costs a fraction of what hashing would and both
// implementations pay the same for it.
type streamPattern struct {
	// twice holds the period twice, so that any run of up to patternLen
	// bytes from any offset is one contiguous slice.
	twice []byte
}

func newStreamPattern() *streamPattern {
	// Seeded: the same stream in every run.
	r := rand.New(rand.NewPCG(0x736c75696365, 0x746370))
	p := make([]byte, patternLen)
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return &streamPattern{twice: append(p, p...)}
}

// at returns the n bytes (n <= patternLen) of the stream from offset off.
func (p *streamPattern) at(off uint64, n int) []byte {
	i := int(off % patternLen)
	return p.twice[i : i+n]
}

// streamChecker verifies one received stream against the pattern.
type streamChecker struct {
	p   *streamPattern
	off uint64 // bytes checked so far
}

// check compares b, the next bytes of the stream, with the pattern and
// reports the first byte that differs with its offset in the stream.
func (c *streamChecker) check(b []byte) error {
	for len(b) > 0 {
		n := min(len(b), patternLen)
		want := c.p.at(c.off, n)
		if !bytes.Equal(b[:n], want) {
			i := 0
			for b[i] == want[i] {
				i++
			}
			return fmt.Errorf("bench: received data differ from what was sent at byte %d of the stream (got %#02x, want %#02x)", c.off+uint64(i), b[i], want[i])
		}
		c.off += uint64(n)
		b = b[n:]
	}
	return nil
}
