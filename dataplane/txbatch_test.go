package dataplane

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestTxBatch(t *testing.T) {
	var b TxBatch
	for round := range 3 { // Reset keeps working across reuse
		b.Reset()
		if b.Len() != 0 {
			t.Fatalf("round %d: Len after Reset = %d", round, b.Len())
		}
		b.Begin(7)
		b.Append([]byte("ab"))
		b.Append(nil) // skipped
		b.Append([]byte("cde"))
		b.Begin(9) // an empty frame
		b.Begin(11)
		b.Append([]byte("f"))
		if b.Len() != 3 {
			t.Fatalf("Len = %d, want 3", b.Len())
		}
		want := []struct {
			parts  [][]byte
			length int
			hash   uint32
		}{
			{[][]byte{[]byte("ab"), []byte("cde")}, 5, 7},
			{[][]byte{}, 0, 9},
			{[][]byte{[]byte("f")}, 1, 11},
		}
		for i, w := range want {
			parts, length, hash := b.Frame(i)
			if !cmp.Equal(parts, w.parts, cmp.Comparer(func(a, b []byte) bool { return string(a) == string(b) })) || length != w.length || hash != w.hash {
				t.Errorf("round %d: Frame(%d) = %q, %d, %d; want %q, %d, %d", round, i, parts, length, hash, w.parts, w.length, w.hash)
			}
		}
	}
	// Reset drops references to frame memory.
	b.Reset()
	for _, p := range b.parts[:cap(b.parts)] {
		if p != nil {
			t.Errorf("Reset kept a reference to %q", p)
		}
	}
}

func TestTxBatchReuseAllocs(t *testing.T) {
	var b TxBatch
	p := []byte("payload")
	fill := func() {
		b.Reset()
		for range 64 {
			b.Begin(1)
			b.Append(p)
			b.Append(p)
		}
	}
	fill()
	if n := testing.AllocsPerRun(100, fill); n != 0 {
		t.Errorf("refilling a reset batch allocates %v times, want 0", n)
	}
}
