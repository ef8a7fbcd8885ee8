//go:build !linux

package bench

import (
	"context"
	"fmt"
	"runtime"

	"github.com/sluicenet/sluice/dataplane"
)

// RunDispatch needs Linux network namespaces, veth and AF_PACKET.
func RunDispatch(ctx context.Context, opts DispatchOptions) (*Report, error) {
	return nil, fmt.Errorf("bench: dispatch: %w on %s", dataplane.ErrNotSupported, runtime.GOOS)
}

// RunTCP needs Linux network namespaces, veth and AF_PACKET.
func RunTCP(ctx context.Context, opts TCPOptions) (*Report, error) {
	return nil, fmt.Errorf("bench: tcp: %w on %s", dataplane.ErrNotSupported, runtime.GOOS)
}
