//go:build linux

package rawfile

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The mirrors of the kernel structs these calls take are x/sys/unix's own:
//
//   - unix.Mmsghdr mirrors struct mmsghdr (include/linux/socket.h): a
//     struct user_msghdr, then unsigned int msg_len, then 4 bytes of tail
//     padding on 64-bit (64 bytes on amd64 and arm64);
//   - unix.Msghdr mirrors struct user_msghdr (56 bytes on 64-bit);
//   - unix.Iovec mirrors struct iovec (include/uapi/linux/uio.h, 16 bytes);
//   - unix.PollFd mirrors struct pollfd (include/uapi/asm-generic/poll.h,
//     8 bytes).
//
// rawfile_size_linux_test.go pins their sizes and offsets.

func iovPtr(iovs []unix.Iovec) unsafe.Pointer { return unsafe.Pointer(&iovs[0]) }

func mmsgPtr(msgs []unix.Mmsghdr) unsafe.Pointer { return unsafe.Pointer(&msgs[0]) }

func poll(fds *[2]unix.PollFd, timeoutMs int) (int, unix.Errno) {
	// ppoll rather than poll, which arm64 lacks; Syscall (not RawSyscall)
	// because this blocks.
	var ts unix.Timespec
	var tsp *unix.Timespec
	if timeoutMs >= 0 {
		ts = unix.NsecToTimespec(int64(timeoutMs) * 1e6)
		tsp = &ts
	}
	n, _, e := unix.Syscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(fds)), uintptr(len(fds)),
		uintptr(unsafe.Pointer(tsp)), 0, 0, 0)
	return int(n), e
}

// AdvanceIovecs drops the first n bytes from iovs, in place, after a short
// write, and returns what remains to be written.
func AdvanceIovecs(iovs []unix.Iovec, n int) []unix.Iovec {
	for len(iovs) > 0 && n >= int(iovs[0].Len) {
		n -= int(iovs[0].Len)
		iovs = iovs[1:]
	}
	if len(iovs) > 0 && n > 0 {
		iovs[0].Base = (*byte)(unsafe.Add(unsafe.Pointer(iovs[0].Base), n))
		iovs[0].SetLen(int(iovs[0].Len) - n)
	}
	return iovs
}
