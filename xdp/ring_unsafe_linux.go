//go:build linux

package xdp

import (
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// This file is the package's only use of unsafe: the AF_XDP socket options
// that take structs (x/sys/unix has no typed helpers for them), the ring
// views over mmap'd memory, poll with revents, and one ethtool ioctl. The
// structs are x/sys/unix's mirrors of <linux/if_xdp.h>; socket_linux_test.go
// pins their sizes.

// Compile-time check that Desc has the layout of struct xdp_desc, which the
// tx and rx rings are cast to.
var _ [16]byte = [unsafe.Sizeof(Desc{})]byte{}
var _ [unsafe.Sizeof(unix.XDPDesc{})]byte = [unsafe.Sizeof(Desc{})]byte{}

// registerUMEM is setsockopt(SOL_XDP, XDP_UMEM_REG). reg.Addr must point
// at memory that stays mapped until the socket is closed.
func registerUMEM(fd int, mem []byte, frameSize uint32) error {
	reg := unix.XDPUmemReg{
		Addr: uint64(uintptr(unsafe.Pointer(&mem[0]))),
		Len:  uint64(len(mem)),
		Size: frameSize,
	}
	// The kernel accepts the older, shorter struct xdp_umem_reg too; the
	// full one (with tx_metadata_len, Linux 6.8) is what x/sys has.
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_UMEM_REG,
		uintptr(unsafe.Pointer(&reg)), unsafe.Sizeof(reg), 0)
	if e != 0 {
		return os.NewSyscallError("setsockopt XDP_UMEM_REG", e)
	}
	return nil
}

// getsockoptXDP reads a SOL_XDP option into *v and returns the length the
// kernel wrote.
func getsockoptXDP[T any](fd, opt int, v *T) (int, error) {
	size := uint32(unsafe.Sizeof(*v))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt),
		uintptr(unsafe.Pointer(v)), uintptr(unsafe.Pointer(&size)), 0)
	if e != 0 {
		return 0, e
	}
	return int(size), nil
}

// mmapOffsets is getsockopt(XDP_MMAP_OFFSETS): where each ring's indices,
// flags and entries sit in its mapping.
func mmapOffsets(fd int) (unix.XDPMmapOffsets, error) {
	var off unix.XDPMmapOffsets
	n, err := getsockoptXDP(fd, unix.XDP_MMAP_OFFSETS, &off)
	if err != nil {
		return off, os.NewSyscallError("getsockopt XDP_MMAP_OFFSETS", err)
	}
	if n != int(unsafe.Sizeof(off)) {
		// Kernels before 5.4 return a layout without the flags words,
		// which need_wakeup depends on.
		return off, os.NewSyscallError("getsockopt XDP_MMAP_OFFSETS", unix.EOPNOTSUPP)
	}
	return off, nil
}

// xdpOptionsFlags is getsockopt(XDP_OPTIONS): XDP_OPTIONS_ZEROCOPY when
// the socket is bound in zero-copy mode.
func xdpOptionsFlags(fd int) (uint32, error) {
	var flags uint32
	if _, err := getsockoptXDP(fd, unix.XDP_OPTIONS, &flags); err != nil {
		return 0, os.NewSyscallError("getsockopt XDP_OPTIONS", err)
	}
	return flags, nil
}

// xdpStatistics is getsockopt(XDP_STATISTICS). Kernels before 5.9 fill
// only the first three counters; the rest stay zero.
func xdpStatistics(fd int) (unix.XDPStatistics, error) {
	var st unix.XDPStatistics
	if _, err := getsockoptXDP(fd, unix.XDP_STATISTICS, &st); err != nil {
		return st, os.NewSyscallError("getsockopt XDP_STATISTICS", err)
	}
	return st, nil
}

// ringView makes a ring over a mapping: the shared words at the offsets the
// kernel gave, and n entries from off.Desc.
func ringView[T any](mem []byte, off unix.XDPRingOffset, n uint32) ringMem[T] {
	word := func(o uint64) *atomic.Uint32 { return (*atomic.Uint32)(unsafe.Pointer(&mem[o])) }
	return ringMem[T]{
		producer: word(off.Producer),
		consumer: word(off.Consumer),
		flags:    word(off.Flags),
		entries:  unsafe.Slice((*T)(unsafe.Pointer(&mem[off.Desc])), n),
	}
}

// ringBytes is the length of a ring's mapping.
func ringBytes[T any](off unix.XDPRingOffset, n uint32) int {
	var zero T
	return int(off.Desc) + int(n)*int(unsafe.Sizeof(zero))
}

// pollRevents waits in ppoll for events on fd or for stopFD to become
// readable, for at most timeoutMs (-1: forever), and returns fd's revents,
// whether stopFD fired, and the errno.
func pollRevents(fd int, events int16, stopFD int, timeoutMs int) (revents int16, stopped bool, errno unix.Errno) {
	fds := [2]unix.PollFd{
		{Fd: int32(fd), Events: events},
		{Fd: int32(stopFD), Events: unix.POLLIN},
	}
	var ts unix.Timespec
	var tsp *unix.Timespec
	if timeoutMs >= 0 {
		ts = unix.NsecToTimespec(int64(timeoutMs) * 1e6)
		tsp = &ts
	}
	// Syscall, not RawSyscall: this blocks.
	_, _, e := unix.Syscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), 2, uintptr(unsafe.Pointer(tsp)), 0, 0, 0)
	return fds[0].Revents, fds[1].Revents != 0, e
}

// kick is sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0), the call that makes
// the kernel look at the tx ring (and, in copy mode, send from it).
func kick(fd int) unix.Errno {
	// MSG_DONTWAIT, so it never blocks; but in copy mode the call itself
	// builds and transmits a batch of skbs (TX_BATCH_SIZE, or
	// XDP_MAX_TX_SKB_BUDGET), which through a veth can mean running the
	// peer's receive path, so the scheduler is told (Syscall, not
	// RawSyscall).
	_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	return e
}

// ethtoolChannels mirrors struct ethtool_channels (<linux/ethtool.h>).
type ethtoolChannels struct {
	Cmd                                    uint32
	MaxRx, MaxTx, MaxOther, MaxCombined    uint32
	RxCount, TxCount, OtherCount, Combined uint32
}

// ifreqPtr mirrors struct ifreq with a pointer in its union, the form
// SIOCETHTOOL takes (40 bytes on 64-bit).
type ifreqPtr struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

const ethtoolGChannels = 0x3c // ETHTOOL_GCHANNELS

// rxChannels returns the device's rx queue count as ethtool -l reports it:
// its rx plus combined channels. It must run in the device's namespace.
func rxChannels(ifname string) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	ch := ethtoolChannels{Cmd: ethtoolGChannels}
	var ifr ifreqPtr
	copy(ifr.name[:unix.IFNAMSIZ-1], ifname)
	ifr.data = unsafe.Pointer(&ch)
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	if e != 0 {
		return 0, os.NewSyscallError("ioctl ETHTOOL_GCHANNELS", e)
	}
	return int(ch.RxCount + ch.Combined), nil
}

// umemBase returns the address the UMEM is mapped at, for logs and errors.
func umemBase(mem []byte) uintptr { return uintptr(unsafe.Pointer(&mem[0])) }
