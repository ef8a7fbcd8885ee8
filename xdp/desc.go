package xdp

import "fmt"

// Desc mirrors struct xdp_desc (<linux/if_xdp.h>): one frame in the UMEM,
// as the rx and tx rings carry it. 16 bytes, no padding.
type Desc struct {
	// Addr is the frame's offset in the UMEM: its chunk's offset plus
	// where the frame starts inside the chunk.
	Addr uint64
	// Len is the frame's length in bytes.
	Len uint32
	// Options holds XDP_PKT_CONTD (a multi-buffer frame continues in the
	// next descriptor) and, on tx, metadata flags.
	Options uint32
}

// optPktContd is XDP_PKT_CONTD (<linux/if_xdp.h>): only set on sockets
// bound with XDP_USE_SG, which sluice never asks for.
const optPktContd = 1

// DescError says why a descriptor was refused.
type DescError uint8

// Reasons a descriptor from the kernel is refused. None of them should
// happen with a correct kernel; each is counted and the descriptor dropped,
// so that a kernel bug or a corrupted ring costs a frame, not the process.
const (
	// DescOK: the descriptor is usable.
	DescOK DescError = iota
	// DescOutsideUMEM: the address is beyond the end of the UMEM.
	DescOutsideUMEM
	// DescBeyondFrame: the frame runs past the end of its chunk.
	DescBeyondFrame
	// DescEmpty: a zero-length frame.
	DescEmpty
	// DescMultiBuffer: XDP_PKT_CONTD on a socket not bound for it.
	DescMultiBuffer
	// DescNotOurs: the chunk is not one this ring handed to the kernel
	// (another queue's, or one we hold already): using it could hand the
	// same memory out twice.
	DescNotOurs

	numDescErrors
)

var descErrorNames = [numDescErrors]string{"ok", "outside-umem", "beyond-frame", "empty", "multi-buffer", "not-ours"}

func (e DescError) String() string {
	if e < numDescErrors {
		return descErrorNames[e]
	}
	return fmt.Sprintf("DescError(%d)", uint8(e))
}

// geometry is the layout of a UMEM in aligned-chunk mode.
type geometry struct {
	frameSize uint64 // a power of two
	size      uint64 // bytes: a multiple of frameSize
}

// chunkOf returns the offset of the chunk that addr falls in.
func (g geometry) chunkOf(addr uint64) uint64 { return addr &^ (g.frameSize - 1) }

// index returns the number of the chunk at offset chunk.
func (g geometry) index(chunk uint64) uint64 { return chunk / g.frameSize }

// checkRX checks a descriptor taken from an rx ring: it must lie inside
// the UMEM and inside one chunk, and be a whole, non-empty frame. It
// returns the frame's chunk offset (valid whenever the address is inside
// the UMEM, so that a frame refused for its length can still be recycled).
// The arithmetic cannot overflow: Len is a uint32 and Addr is checked
// against the UMEM size first.
func (g geometry) checkRX(d Desc) (chunk uint64, e DescError) {
	if d.Addr >= g.size {
		return 0, DescOutsideUMEM
	}
	chunk = g.chunkOf(d.Addr)
	switch {
	case d.Len == 0:
		return chunk, DescEmpty
	case d.Addr-chunk+uint64(d.Len) > g.frameSize:
		return chunk, DescBeyondFrame
	case d.Options&optPktContd != 0:
		return chunk, DescMultiBuffer
	}
	return chunk, DescOK
}

// checkCompletion checks an address taken from a completion ring: the
// kernel returns the tx descriptor's address unchanged, so it must be
// inside the UMEM. It returns the chunk to recycle.
func (g geometry) checkCompletion(addr uint64) (chunk uint64, e DescError) {
	if addr >= g.size {
		return 0, DescOutsideUMEM
	}
	return g.chunkOf(addr), DescOK
}
