package dataplane

// TxBatch collects outbound frames for one batched write. Each frame is the
// concatenation of its parts (for example a virtio_net_hdr, an Ethernet
// header and the payload views of a netstack packet), written without
// copying. A TxBatch is reused across writes: Reset keeps its storage. It is
// not safe for concurrent use.
type TxBatch struct {
	parts  [][]byte
	frames []txFrame
}

type txFrame struct {
	first, n int    // parts[first:first+n]
	length   int    // bytes
	hash     uint32 // flow hash, picks the channel
}

// Reset empties the batch and drops its references to frame memory.
func (b *TxBatch) Reset() {
	clear(b.parts)
	b.parts = b.parts[:0]
	b.frames = b.frames[:0]
}

// Begin starts a new frame whose flow hash is hash.
func (b *TxBatch) Begin(hash uint32) {
	b.frames = append(b.frames, txFrame{first: len(b.parts), hash: hash})
}

// Append adds p to the frame started by the last Begin. Empty parts are
// skipped.
func (b *TxBatch) Append(p []byte) {
	if len(p) == 0 {
		return
	}
	f := &b.frames[len(b.frames)-1]
	b.parts = append(b.parts, p)
	f.n++
	f.length += len(p)
}

// Len returns the number of frames in the batch.
func (b *TxBatch) Len() int { return len(b.frames) }

// Frame returns the parts of frame i and its length; the slice aliases the
// batch's storage.
func (b *TxBatch) Frame(i int) (parts [][]byte, length int, hash uint32) {
	f := b.frames[i]
	return b.parts[f.first : f.first+f.n], f.length, f.hash
}
