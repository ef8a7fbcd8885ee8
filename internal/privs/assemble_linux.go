package privs

import (
	"fmt"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// assemble turns a classic BPF program into the kernel's sock_filter form.
func assemble(prog []bpf.Instruction) ([]unix.SockFilter, error) {
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("privs: assemble the seccomp filter: %w", err)
	}
	if len(raw) == 0 || len(raw) > 4096 {
		return nil, fmt.Errorf("privs: seccomp filter of %d instructions", len(raw))
	}
	out := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		out[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return out, nil
}
