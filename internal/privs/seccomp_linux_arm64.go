package privs

import "golang.org/x/sys/unix"

const (
	auditArch = unix.AUDIT_ARCH_AARCH64
	x32Bit    = 0
	sysBPF    = unix.SYS_BPF
	sysClone  = unix.SYS_CLONE
	sysClone3 = unix.SYS_CLONE3
)

var deniedSyscalls = append(commonDenied, unix.SYS_NFSSERVCTL)
