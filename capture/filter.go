package capture

// Filters: tcpdump's language, compiled by tcpdump itself (`tcpdump -ddd`)
// to classic BPF. Why not a compiler of our own: the language is large
// (protocol qualifiers, byte offsets, arithmetic, VLAN and MPLS stacks), and
// libpcap's code generator is its definition; a subset would accept
// expressions that tcpdump reads differently, which is worse for a capture
// than needing tcpdump. gopacket's compiler is libpcap through cgo, which
// sluice does not use. golang.org/x/net/bpf only assembles.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Insn is one classic BPF instruction, as struct sock_filter.
type Insn struct {
	Op     uint16
	Jt, Jf uint8
	K      uint32
}

// Program is a classic BPF program.
type Program []Insn

// maxInsns is BPF_MAXINSNS, the kernel's limit for a socket filter.
const maxInsns = 4096

// ErrNoTcpdump is returned for a filter when tcpdump, which compiles it, is
// not on PATH.
var ErrNoTcpdump = errors.New("compiling a filter needs tcpdump (sluice runs tcpdump -ddd to compile tcpdump's filter language): install it (apt-get install tcpdump) or capture without a filter")

// snapProgram returns the program that keeps every frame, cut to snaplen:
// attached when there is no filter, so that the kernel copies no more of a
// frame than the file keeps.
func snapProgram(snaplen int) Program {
	return Program{{Op: bpfRet | bpfK, K: uint32(snaplen)}}
}

// ParseDDD parses the output of tcpdump -ddd: the instruction count on the
// first line, then one "code jt jf k" line per instruction, in decimal.
func ParseDDD(text string) (Program, error) {
	sc := bufio.NewScanner(strings.NewReader(text))
	if !sc.Scan() {
		return nil, errors.New("bpf program: empty")
	}
	n, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
	if err != nil || n < 1 || n > maxInsns {
		return nil, fmt.Errorf("bpf program: first line %q: want an instruction count of 1 to %d", sc.Text(), maxInsns)
	}
	p := make(Program, 0, n)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 4 {
			return nil, fmt.Errorf("bpf program: line %d %q: want code jt jf k", len(p)+2, line)
		}
		var v [4]uint64
		for i, bits := range []int{16, 8, 8, 32} {
			if v[i], err = strconv.ParseUint(f[i], 10, bits); err != nil {
				return nil, fmt.Errorf("bpf program: line %d %q: %w", len(p)+2, line, err)
			}
		}
		p = append(p, Insn{Op: uint16(v[0]), Jt: uint8(v[1]), Jf: uint8(v[2]), K: uint32(v[3])})
	}
	if len(p) != n {
		return nil, fmt.Errorf("bpf program: %d instructions, the first line says %d", len(p), n)
	}
	return p, p.validate()
}

// validate checks what the kernel's bpf_check_classic checks that matters
// to Run: jumps stay inside the program, scratch memory indexes are in
// range, and the last instruction returns.
func (p Program) validate() error {
	if len(p) == 0 || len(p) > maxInsns {
		return fmt.Errorf("bpf program: %d instructions, want 1 to %d", len(p), maxInsns)
	}
	for i, in := range p {
		switch in.Op & 0x07 {
		case bpfJmp:
			if in.Op&0xf0 == bpfJa {
				if uint64(i)+1+uint64(in.K) >= uint64(len(p)) {
					return fmt.Errorf("bpf program: instruction %d jumps out of the program", i)
				}
			} else if i+1+int(in.Jt) >= len(p) || i+1+int(in.Jf) >= len(p) {
				return fmt.Errorf("bpf program: instruction %d jumps out of the program", i)
			}
		case bpfLd, bpfLdx:
			if in.Op&0xe0 == bpfMem && in.K >= bpfMemWords {
				return fmt.Errorf("bpf program: instruction %d reads scratch word %d", i, in.K)
			}
		case bpfSt, bpfStx:
			if in.K >= bpfMemWords {
				return fmt.Errorf("bpf program: instruction %d writes scratch word %d", i, in.K)
			}
		}
	}
	if p[len(p)-1].Op&0x07 != bpfRet {
		return errors.New("bpf program: does not end with a return")
	}
	return nil
}

// String returns the program in tcpdump -ddd form.
func (p Program) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d\n", len(p))
	for _, in := range p {
		fmt.Fprintf(&b, "%d %d %d %d\n", in.Op, in.Jt, in.Jf, in.K)
	}
	return b.String()
}

// compileTimeout bounds a tcpdump -ddd run.
const compileTimeout = 10 * time.Second

// compileDead compiles expr with tcpdump -ddd for an Ethernet capture whose
// frames keep their VLAN tags (a savefile), without touching any interface:
// tcpdump reads the link type and snap length from a pcap header on stdin.
func compileDead(ctx context.Context, tcpdump, expr string, snaplen int) (Program, error) {
	hdr := (&encoder{snaplen: snaplen}).header(nil, fileInfo{})
	return runTcpdump(ctx, tcpdump, expr, bytes.NewReader(hdr), "-ddd", "-r", "-")
}

// compileLive compiles expr with tcpdump -ddd against the live interface,
// which must be in the calling thread's namespace: libpcap then generates the
// Linux socket's view (received VLAN tags already stripped, tested with
// ancillary loads). -p keeps tcpdump from turning promiscuous mode on while
// it looks at the interface.
func compileLive(ctx context.Context, tcpdump, expr, iface string, snaplen int) (Program, error) {
	return runTcpdump(ctx, tcpdump, expr, nil, "-ddd", "-p", "-i", iface, "-s", strconv.Itoa(snaplen))
}

func runTcpdump(ctx context.Context, tcpdump, expr string, stdin *bytes.Reader, args ...string) (Program, error) {
	path, err := exec.LookPath(tcpdump)
	if err != nil {
		return nil, ErrNoTcpdump
	}
	ctx, cancel := context.WithTimeout(ctx, compileTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, append(args, "--", expr)...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s", tcpdumpMessage(errb.String(), err))
	}
	p, err := ParseDDD(out.String())
	if err != nil {
		return nil, fmt.Errorf("tcpdump -ddd output: %w", err)
	}
	return p, nil
}

// tcpdumpMessage picks tcpdump's error line out of its stderr.
func tcpdumpMessage(stderr string, err error) string {
	for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
		if msg, ok := strings.CutPrefix(line, "tcpdump: "); ok {
			return msg
		}
	}
	if s := strings.TrimSpace(stderr); s != "" {
		return s
	}
	return err.Error()
}

// Opcode parts (include/uapi/linux/filter.h, bpf_common.h).
const (
	bpfLd   = 0x00
	bpfLdx  = 0x01
	bpfSt   = 0x02
	bpfStx  = 0x03
	bpfAlu  = 0x04
	bpfJmp  = 0x05
	bpfRet  = 0x06
	bpfMisc = 0x07

	bpfW = 0x00
	bpfH = 0x08
	bpfB = 0x10

	bpfImm = 0x00
	bpfAbs = 0x20
	bpfInd = 0x40
	bpfMem = 0x60
	bpfLen = 0x80
	bpfMsh = 0xa0

	bpfK = 0x00
	bpfX = 0x08
	bpfA = 0x10

	bpfJa   = 0x00
	bpfJeq  = 0x10
	bpfJgt  = 0x20
	bpfJge  = 0x30
	bpfJset = 0x40

	bpfMemWords = 16

	// skfAdOff is SKF_AD_OFF: loads from here on read socket buffer
	// metadata (the ancillary data), not the packet.
	skfAdOff            = 0xfffff000
	skfAdProtocol       = 0
	skfAdPktType        = 4
	skfAdIfindex        = 8
	skfAdVLANTag        = 44
	skfAdVLANTagPresent = 48
	skfAdVLANTPID       = 60
)

// Aux is the metadata a socket filter reads with ancillary loads, for Run.
type Aux struct {
	Protocol uint16 // skb->protocol, host order
	PktType  uint8
	Ifindex  uint32
	VLANTCI  uint16
	VLANTPID uint16
	HasVLAN  bool
}

// Run executes p on pkt the way the kernel runs a socket filter and returns
// its result: 0 drops the frame, anything else is the number of bytes to
// keep. A load beyond the frame ends the program with 0, as in the kernel.
// p must have passed validate (ParseDDD and the compilers ensure it).
func (p Program) Run(pkt []byte, aux Aux) uint32 {
	var a, x uint32
	var mem [bpfMemWords]uint32
	load := func(off uint32, size uint16) (uint32, bool) {
		if off >= skfAdOff {
			return aux.load(off - skfAdOff)
		}
		n := uint32(4)
		switch size {
		case bpfH:
			n = 2
		case bpfB:
			n = 1
		}
		if uint64(off)+uint64(n) > uint64(len(pkt)) {
			return 0, false
		}
		switch n {
		case 4:
			return binary.BigEndian.Uint32(pkt[off:]), true
		case 2:
			return uint32(binary.BigEndian.Uint16(pkt[off:])), true
		}
		return uint32(pkt[off]), true
	}
	for pc := 0; pc < len(p); pc++ {
		in := p[pc]
		switch in.Op & 0x07 {
		case bpfLd:
			switch in.Op & 0xe0 {
			case bpfImm:
				a = in.K
			case bpfAbs, bpfInd:
				off := in.K
				if in.Op&0xe0 == bpfInd {
					off += x
				}
				v, ok := load(off, in.Op&0x18)
				if !ok {
					return 0
				}
				a = v
			case bpfMem:
				a = mem[in.K]
			case bpfLen:
				a = uint32(len(pkt))
			default:
				return 0
			}
		case bpfLdx:
			switch in.Op & 0xe0 {
			case bpfImm:
				x = in.K
			case bpfMem:
				x = mem[in.K]
			case bpfLen:
				x = uint32(len(pkt))
			case bpfMsh:
				if int(in.K) >= len(pkt) {
					return 0
				}
				x = uint32(pkt[in.K]&0x0f) * 4
			default:
				return 0
			}
		case bpfSt:
			mem[in.K] = a
		case bpfStx:
			mem[in.K] = x
		case bpfAlu:
			v := in.K
			if in.Op&bpfX != 0 {
				v = x
			}
			switch in.Op & 0xf0 {
			case 0x00:
				a += v
			case 0x10:
				a -= v
			case 0x20:
				a *= v
			case 0x30:
				if v == 0 {
					return 0
				}
				a /= v
			case 0x40:
				a |= v
			case 0x50:
				a &= v
			case 0x60:
				a <<= v & 31
			case 0x70:
				a >>= v & 31
			case 0x80:
				a = -a
			case 0x90:
				if v == 0 {
					return 0
				}
				a %= v
			case 0xa0:
				a ^= v
			default:
				return 0
			}
		case bpfJmp:
			v := in.K
			if in.Op&bpfX != 0 {
				v = x
			}
			var cond bool
			switch in.Op & 0xf0 {
			case bpfJa:
				pc += int(in.K)
				continue
			case bpfJeq:
				cond = a == v
			case bpfJgt:
				cond = a > v
			case bpfJge:
				cond = a >= v
			case bpfJset:
				cond = a&v != 0
			default:
				return 0
			}
			if cond {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case bpfRet:
			switch in.Op & 0x18 {
			case bpfK:
				return in.K
			case bpfX:
				return x
			case bpfA:
				return a
			}
			return 0
		case bpfMisc:
			if in.Op&0xf8 == 0 {
				x = a // tax
			} else {
				a = x // txa
			}
		}
	}
	return 0
}

// load returns the ancillary value at offset k from SKF_AD_OFF.
func (aux Aux) load(k uint32) (uint32, bool) {
	switch k {
	case skfAdProtocol:
		return uint32(aux.Protocol), true
	case skfAdPktType:
		return uint32(aux.PktType), true
	case skfAdIfindex:
		return aux.Ifindex, true
	case skfAdVLANTag:
		return uint32(aux.VLANTCI), true
	case skfAdVLANTagPresent:
		if aux.HasVLAN {
			return 1, true
		}
		return 0, true
	case skfAdVLANTPID:
		return uint32(aux.VLANTPID), true
	}
	return 0, false
}
