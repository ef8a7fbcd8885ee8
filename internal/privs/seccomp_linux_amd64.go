package privs

import "golang.org/x/sys/unix"

const (
	auditArch = unix.AUDIT_ARCH_X86_64
	// x32Bit marks system calls of the x32 ABI, which the filter refuses.
	x32Bit    = 0x40000000
	sysBPF    = unix.SYS_BPF
	sysClone  = unix.SYS_CLONE
	sysClone3 = unix.SYS_CLONE3
)

var deniedSyscalls = append(commonDenied,
	unix.SYS_IOPL, unix.SYS_IOPERM, unix.SYS_USELIB, unix.SYS_CREATE_MODULE,
	unix.SYS_GET_KERNEL_SYMS, unix.SYS_QUERY_MODULE, unix.SYS__SYSCTL,
	unix.SYS_NFSSERVCTL, unix.SYS_USTAT,
)
