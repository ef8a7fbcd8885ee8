//go:build !linux

package bench

import (
	"context"
	"fmt"
	"runtime"

	"github.com/sluicenet/sluice/dataplane"
)

// RunCapture needs Linux network namespaces, veth and AF_PACKET.
func RunCapture(ctx context.Context, opts CaptureOptions) (*Report, error) {
	return nil, fmt.Errorf("bench: capture: %w on %s", dataplane.ErrNotSupported, runtime.GOOS)
}
