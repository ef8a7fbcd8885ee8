//go:build !linux

package bench

import (
	"context"
	"fmt"
	"runtime"

	"github.com/sluicenet/sluice/dataplane"
)

// SandboxResult is what RunSandbox measured and what it could not.
type SandboxResult struct {
	Report
	Skips []string
}

// RunSandbox needs Linux network namespaces and veth.
func RunSandbox(ctx context.Context, opts SandboxOptions) (*SandboxResult, error) {
	return nil, fmt.Errorf("bench: sandbox: %w on %s", dataplane.ErrNotSupported, runtime.GOOS)
}
