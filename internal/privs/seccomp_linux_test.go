//go:build amd64 || arm64

package privs

import (
	"encoding/binary"
	"testing"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// seccompData builds a struct seccomp_data as the filter's loads see it.
// x/net/bpf's VM loads words big-endian where the kernel loads them in the
// machine's order, so each 32-bit field is written big-endian here; args
// are 64-bit, low word first as on little-endian machines.
func seccompData(arch, nr uint32, arg0 uint64) []byte {
	b := make([]byte, 64)
	binary.BigEndian.PutUint32(b[offNr:], nr)
	binary.BigEndian.PutUint32(b[offArch:], arch)
	binary.BigEndian.PutUint32(b[offArg0:], uint32(arg0))
	binary.BigEndian.PutUint32(b[offArg0+4:], uint32(arg0>>32))
	return b
}

func TestFilterDecisions(t *testing.T) {
	prog, err := Filter()
	if err != nil {
		t.Fatal(err)
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatalf("the filter does not validate: %v", err)
	}
	if _, err := assemble(prog); err != nil {
		t.Fatal(err)
	}
	const (
		allow  = retAllow
		eperm  = retErrno | errEPERM
		enosys = retErrno | errENOSYS
	)
	threadFlags := uint64(unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_THREAD | unix.CLONE_SYSVSEM)
	tests := []struct {
		name string
		arch uint32
		nr   uint32
		arg0 uint64
		want uint32
	}{
		{"read", auditArch, unix.SYS_READ, 0, allow},
		{"sendmmsg", auditArch, unix.SYS_SENDMMSG, 0, allow},
		{"recvmmsg", auditArch, unix.SYS_RECVMMSG, 0, allow},
		{"socket", auditArch, unix.SYS_SOCKET, 0, allow},
		{"close", auditArch, unix.SYS_CLOSE, 0, allow},
		{"kill", auditArch, unix.SYS_KILL, 0, allow},
		{"execve", auditArch, unix.SYS_EXECVE, 0, eperm},
		{"execveat", auditArch, unix.SYS_EXECVEAT, 0, eperm},
		{"ptrace", auditArch, unix.SYS_PTRACE, 0, eperm},
		{"mount", auditArch, unix.SYS_MOUNT, 0, eperm},
		{"setns", auditArch, unix.SYS_SETNS, 0, eperm},
		{"unshare", auditArch, unix.SYS_UNSHARE, 0, eperm},
		{"finit_module", auditArch, unix.SYS_FINIT_MODULE, 0, eperm},
		{"kexec_load", auditArch, unix.SYS_KEXEC_LOAD, 0, eperm},
		{"bpf prog load", auditArch, unix.SYS_BPF, unix.BPF_PROG_LOAD, eperm},
		{"bpf map create", auditArch, unix.SYS_BPF, unix.BPF_MAP_CREATE, eperm},
		{"bpf link create", auditArch, unix.SYS_BPF, unix.BPF_LINK_CREATE, eperm},
		{"bpf map lookup", auditArch, unix.SYS_BPF, unix.BPF_MAP_LOOKUP_ELEM, allow},
		{"bpf obj info", auditArch, unix.SYS_BPF, unix.BPF_OBJ_GET_INFO_BY_FD, allow},
		{"bpf prog load, high word set", auditArch, unix.SYS_BPF, 1<<32 | unix.BPF_PROG_LOAD, eperm},
		{"clone of a thread", auditArch, unix.SYS_CLONE, threadFlags, allow},
		{"clone into a new user namespace", auditArch, unix.SYS_CLONE, unix.CLONE_NEWUSER, eperm},
		{"clone into a new network namespace", auditArch, unix.SYS_CLONE, uint64(unix.SIGCHLD) | unix.CLONE_NEWNET, eperm},
		{"clone into a new mount namespace", auditArch, unix.SYS_CLONE, unix.CLONE_NEWNS, eperm},
		{"clone3", auditArch, unix.SYS_CLONE3, 0, enosys},
		{"another architecture", auditArch ^ 1, unix.SYS_READ, 0, enosys},
	}
	if x32Bit != 0 {
		tests = append(tests, struct {
			name string
			arch uint32
			nr   uint32
			arg0 uint64
			want uint32
		}{"x32 read", auditArch, x32Bit | unix.SYS_READ, 0, enosys})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := vm.Run(seccompData(tt.arch, tt.nr, tt.arg0))
			if err != nil {
				t.Fatal(err)
			}
			if uint32(got) != tt.want {
				t.Errorf("filter(%s) = %#x, want %#x", tt.name, got, tt.want)
			}
		})
	}
	// Every refused number refuses, and nothing the data path needs is
	// on the list.
	needed := map[uint32]string{
		unix.SYS_READ: "read", unix.SYS_WRITE: "write", unix.SYS_READV: "readv", unix.SYS_WRITEV: "writev",
		unix.SYS_RECVMMSG: "recvmmsg", unix.SYS_SENDMMSG: "sendmmsg", unix.SYS_SENDTO: "sendto",
		unix.SYS_RECVFROM: "recvfrom", unix.SYS_SOCKET: "socket", unix.SYS_CONNECT: "connect",
		unix.SYS_ACCEPT4: "accept4", unix.SYS_EPOLL_PWAIT: "epoll_pwait", unix.SYS_FUTEX: "futex",
		unix.SYS_MMAP: "mmap", unix.SYS_MUNMAP: "munmap", unix.SYS_PPOLL: "ppoll", unix.SYS_CLOSE: "close",
		unix.SYS_KILL: "kill", unix.SYS_TGKILL: "tgkill", unix.SYS_WAIT4: "wait4", unix.SYS_WAITID: "waitid",
		unix.SYS_UNLINKAT: "unlinkat", unix.SYS_GETSOCKOPT: "getsockopt", unix.SYS_SETSOCKOPT: "setsockopt",
	}
	for _, nr := range FilterSyscalls() {
		if name, ok := needed[nr]; ok {
			t.Errorf("the filter refuses %s, which the data path or teardown makes", name)
		}
		if got, _ := vm.Run(seccompData(auditArch, nr, 0)); uint32(got) != eperm {
			t.Errorf("system call %d is listed but the filter returns %#x", nr, got)
		}
	}
}
