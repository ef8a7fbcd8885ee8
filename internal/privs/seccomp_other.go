//go:build !linux || (!amd64 && !arm64)

package privs

// No filter is defined for this architecture: Filter returns
// ErrSeccompArch.
const (
	auditArch = 0
	x32Bit    = 0
	sysBPF    = 0
	sysClone  = 0
	sysClone3 = 0
)

var deniedSyscalls []uint32
