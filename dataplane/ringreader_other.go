//go:build !linux

package dataplane

import "time"

// RingOptions describe the PACKET_RX_RING of a RingReader (Linux only).
type RingOptions struct {
	BlockSize     int
	Blocks        int
	RetireTimeout time.Duration
}

// RingStats are PACKET_STATISTICS (Linux only).
type RingStats struct {
	Packets, Drops, Freezes uint64
}

// RingReader needs PACKET_RX_RING, which only Linux has.
type RingReader struct{}

// NewRingReader fails: PACKET_RX_RING is Linux-only.
func NewRingReader(fd int, opts RingOptions) (*RingReader, error) {
	return nil, errOS("ring reader")
}

// RingSize returns 0.
func (r *RingReader) RingSize() int { return 0 }

// RetireTimeout returns 0.
func (r *RingReader) RetireTimeout() time.Duration { return 0 }

// VnetHdr returns false.
func (r *RingReader) VnetHdr() bool { return false }

// Malformed returns 0.
func (r *RingReader) Malformed() uint64 { return 0 }

// WithFrames fails.
func (r *RingReader) WithFrames(fn func([]RingFrame) error) (int, error) {
	return 0, errOS("ring reader")
}

// Drain fails.
func (r *RingReader) Drain(fn func([]RingFrame) error) (int, error) { return 0, errOS("ring reader") }

// Stop does nothing.
func (r *RingReader) Stop() error { return nil }

// Stats fails.
func (r *RingReader) Stats() (RingStats, error) { return RingStats{}, errOS("ring reader") }

// Close does nothing.
func (r *RingReader) Close() error { return nil }

// DrainSocketQueue does nothing.
func DrainSocketQueue(fd int) int { return 0 }
