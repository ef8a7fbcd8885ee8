package privs

import (
	"errors"
	"fmt"

	"golang.org/x/net/bpf"
)

// Seccomp return values (seccomp(2)); the low 16 bits of an ERRNO action
// are the errno the system call returns.
const (
	retAllow  = 0x7fff0000
	retErrno  = 0x00050000
	errEPERM  = 1
	errENOSYS = 38
)

// Offsets in struct seccomp_data: nr, arch, instruction_pointer, args[6].
// An argument's low 32 bits are at its own offset on little-endian
// machines, the only ones filterArch supports.
const (
	offNr   = 0
	offArch = 4
	offArg0 = 16
)

// cloneNamespaceFlags are clone(2)'s CLONE_NEW* flags: a process that has
// given up its capabilities could still make a user namespace (and in it
// every other kind), where it would be privileged again.
const cloneNamespaceFlags = 0x02000000 | // CLONE_NEWCGROUP
	0x04000000 | // CLONE_NEWUTS
	0x08000000 | // CLONE_NEWIPC
	0x10000000 | // CLONE_NEWUSER
	0x20000000 | // CLONE_NEWPID
	0x40000000 | // CLONE_NEWNET
	0x00020000 // CLONE_NEWNS

// bpfDeniedCmds are the bpf(2) commands that create or attach programs and
// maps. Commands on descriptors the process already holds (map lookups for
// counters, object info) stay allowed: teardown and stats use them.
var bpfDeniedCmds = []uint32{
	0,  // BPF_MAP_CREATE
	5,  // BPF_PROG_LOAD
	8,  // BPF_PROG_ATTACH
	17, // BPF_RAW_TRACEPOINT_OPEN
	18, // BPF_BTF_LOAD
	28, // BPF_LINK_CREATE
}

// ErrSeccompArch is returned where no filter is defined for GOARCH.
var ErrSeccompArch = errors.New("privs: no seccomp filter for this architecture")

// FilterSyscalls returns the numbers of the system calls the filter refuses
// outright (with EPERM) on this architecture. bpf(2) and clone(2) are
// refused only for some arguments, clone3(2) with ENOSYS (its flags are in
// memory the filter cannot read, and callers then fall back to clone).
func FilterSyscalls() []uint32 { return append([]uint32(nil), deniedSyscalls...) }

// label names a jump target while the filter is assembled.
type label int

const (
	lNone label = iota
	lAllow
	lEPERM
	lENOSYS
)

// insn is an instruction whose jumps name labels.
type insn struct {
	i         bpf.Instruction
	jt, jf    label
	isLabelAt label // this position is the label's target
}

// Filter returns the seccomp program that sluice's process installs after
// set-up: every system call is allowed except the ones FilterSyscalls
// lists, bpf(2) commands that load or attach, clone(2) with namespace
// flags, and clone3(2); a call from another ABI (i386 or x32 on x86-64) is
// refused with ENOSYS.
func Filter() ([]bpf.Instruction, error) {
	if auditArch == 0 {
		return nil, ErrSeccompArch
	}
	var p []insn
	emit := func(i bpf.Instruction) { p = append(p, insn{i: i}) }
	jeq := func(v uint32, t label) {
		p = append(p, insn{i: bpf.JumpIf{Cond: bpf.JumpEqual, Val: v}, jt: t})
	}
	emit(bpf.LoadAbsolute{Off: offArch, Size: 4})
	p = append(p, insn{i: bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: auditArch}, jt: lENOSYS})
	emit(bpf.LoadAbsolute{Off: offNr, Size: 4})
	if x32Bit != 0 {
		p = append(p, insn{i: bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: x32Bit}, jt: lENOSYS})
	}
	for _, nr := range deniedSyscalls {
		jeq(nr, lEPERM)
	}
	jeq(sysClone3, lENOSYS)

	// bpf(2): refused for the commands that load and attach.
	const lAfterBPF label = 100
	p = append(p, insn{i: bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: sysBPF}, jt: lAfterBPF})
	emit(bpf.LoadAbsolute{Off: offArg0, Size: 4})
	for _, cmd := range bpfDeniedCmds {
		jeq(cmd, lEPERM)
	}
	p = append(p, insn{i: bpf.Jump{}, jt: lAllow})

	// clone(2): refused with namespace flags (its first argument on both
	// supported architectures).
	p = append(p, insn{isLabelAt: lAfterBPF, i: bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: sysClone}, jt: lAllow})
	emit(bpf.LoadAbsolute{Off: offArg0, Size: 4})
	p = append(p, insn{i: bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: cloneNamespaceFlags}, jt: lEPERM})

	p = append(p, insn{isLabelAt: lAllow, i: bpf.RetConstant{Val: retAllow}})
	p = append(p, insn{isLabelAt: lEPERM, i: bpf.RetConstant{Val: retErrno | errEPERM}})
	p = append(p, insn{isLabelAt: lENOSYS, i: bpf.RetConstant{Val: retErrno | errENOSYS}})

	at := map[label]int{}
	for i, in := range p {
		if in.isLabelAt != lNone {
			at[in.isLabelAt] = i
		}
	}
	out := make([]bpf.Instruction, len(p))
	for i, in := range p {
		skip := func(l label) (uint8, error) {
			if l == lNone {
				return 0, nil
			}
			d := at[l] - i - 1
			if d < 0 || d > 255 {
				return 0, fmt.Errorf("privs: seccomp jump from %d to %d out of range", i, at[l])
			}
			return uint8(d), nil
		}
		jt, err := skip(in.jt)
		if err != nil {
			return nil, err
		}
		switch j := in.i.(type) {
		case bpf.JumpIf:
			j.SkipTrue = jt
			out[i] = j
		case bpf.Jump:
			j.Skip = uint32(jt)
			out[i] = j
		default:
			out[i] = in.i
		}
	}
	return out, nil
}
