package bpf

import (
	"os"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// testXSK is the smallest AF_XDP socket that can receive: a UMEM, a fill
// ring and an rx ring, bound in copy mode (KERNEL-NOTES "AF_XDP setup
// order"). The real one is the xdp package's; this one only proves that
// the redirect program delivers. Single goroutine.
type testXSK struct {
	fd   int
	umem []byte
	rx   []byte
	fill []byte
	off  unix.XDPMmapOffsets
}

const (
	xskFrames    = 64
	xskFrameSize = 2048
)

// newTestXSK must run on a thread inside the interface's netns: bind
// resolves ifindex there.
func newTestXSK(t testing.TB, ifindex, queue int) *testXSK {
	t.Helper()
	x := &testXSK{fd: -1}
	fail := func(what string, err error) {
		t.Helper()
		x.close()
		t.Fatalf("AF_XDP %s: %v", what, err)
	}
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fail("socket", err)
	}
	x.fd = fd
	x.umem, err = unix.Mmap(-1, 0, xskFrames*xskFrameSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		fail("mmap umem", err)
	}
	reg := unix.XDPUmemReg{Addr: uint64(uintptr(unsafe.Pointer(&x.umem[0]))), Len: uint64(len(x.umem)), Size: xskFrameSize}
	if _, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_UMEM_REG, uintptr(unsafe.Pointer(&reg)), unsafe.Sizeof(reg), 0); e != 0 {
		fail("XDP_UMEM_REG", e)
	}
	for _, opt := range []int{unix.XDP_UMEM_FILL_RING, unix.XDP_UMEM_COMPLETION_RING, unix.XDP_RX_RING} {
		if err := unix.SetsockoptInt(fd, unix.SOL_XDP, opt, xskFrames); err != nil {
			fail("ring size", err)
		}
	}
	size := unsafe.Sizeof(x.off)
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_MMAP_OFFSETS, uintptr(unsafe.Pointer(&x.off)), uintptr(unsafe.Pointer(&size)), 0); e != 0 {
		fail("XDP_MMAP_OFFSETS", e)
	}
	if x.rx, err = unix.Mmap(fd, unix.XDP_PGOFF_RX_RING, int(x.off.Rx.Desc)+xskFrames*16, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		fail("mmap rx ring", err)
	}
	if x.fill, err = unix.Mmap(fd, unix.XDP_UMEM_PGOFF_FILL_RING, int(x.off.Fr.Desc)+xskFrames*8, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		fail("mmap fill ring", err)
	}
	for i := 0; i < xskFrames; i++ {
		*(*uint64)(unsafe.Pointer(&x.fill[int(x.off.Fr.Desc)+i*8])) = uint64(i * xskFrameSize)
	}
	x.u32(x.fill, x.off.Fr.Producer).Store(xskFrames)
	if err := unix.Bind(fd, &unix.SockaddrXDP{Flags: unix.XDP_COPY, Ifindex: uint32(ifindex), QueueID: uint32(queue)}); err != nil {
		fail("bind", os.NewSyscallError("bind", err))
	}
	t.Cleanup(x.close)
	return x
}

func (x *testXSK) u32(ring []byte, off uint64) *atomic.Uint32 {
	return (*atomic.Uint32)(unsafe.Pointer(&ring[off]))
}

// receive returns copies of the frames that arrive within d, recycling
// their UMEM chunks into the fill ring. It stops early at max frames.
func (x *testXSK) receive(d time.Duration, max int) [][]byte {
	var out [][]byte
	deadline := time.Now().Add(d)
	mask := uint32(xskFrames - 1)
	for len(out) < max && time.Now().Before(deadline) {
		pfd := []unix.PollFd{{Fd: int32(x.fd), Events: unix.POLLIN}}
		_, _ = unix.Poll(pfd, 50)
		prod := x.u32(x.rx, x.off.Rx.Producer).Load()
		cons := x.u32(x.rx, x.off.Rx.Consumer).Load()
		for ; cons != prod && len(out) < max; cons++ {
			d := (*unix.XDPDesc)(unsafe.Pointer(&x.rx[int(x.off.Rx.Desc)+int(cons&mask)*16]))
			out = append(out, append([]byte(nil), x.umem[d.Addr:d.Addr+uint64(d.Len)]...))
			fp := x.u32(x.fill, x.off.Fr.Producer)
			p := fp.Load()
			*(*uint64)(unsafe.Pointer(&x.fill[int(x.off.Fr.Desc)+int(p&mask)*8])) = d.Addr &^ (xskFrameSize - 1)
			fp.Store(p + 1)
		}
		x.u32(x.rx, x.off.Rx.Consumer).Store(cons)
	}
	return out
}

func (x *testXSK) close() {
	for _, m := range [][]byte{x.rx, x.fill, x.umem} {
		if m != nil {
			unix.Munmap(m)
		}
	}
	x.rx, x.fill, x.umem = nil, nil, nil
	if x.fd >= 0 {
		unix.Close(x.fd)
		x.fd = -1
	}
}
