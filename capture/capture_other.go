//go:build !linux

package capture

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/sluicenet/sluice/dataplane"
)

// Stats describe a capture so far.
type Stats struct {
	Frames, Bytes, Received, KernelDrops, Filtered uint64
	Files                                          int
	Elapsed                                        time.Duration
}

// Capture needs AF_PACKET or XDP, which only Linux has.
type Capture struct{}

// Open fails: capturing is Linux-only.
func Open(ctx context.Context, opts Options) (*Capture, error) {
	return nil, fmt.Errorf("capture: %w on %s", dataplane.ErrNotSupported, runtime.GOOS)
}

// Via returns ViaMMap.
func (c *Capture) Via() Via { return ViaMMap }

// Filter returns nothing.
func (c *Capture) Filter() (Program, bool) { return nil, false }

// Run fails.
func (c *Capture) Run(ctx context.Context) error {
	return fmt.Errorf("capture: %w on %s", dataplane.ErrNotSupported, runtime.GOOS)
}

// Stats returns zeros.
func (c *Capture) Stats() Stats { return Stats{} }

// Close does nothing.
func (c *Capture) Close() error { return nil }
