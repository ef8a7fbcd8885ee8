//go:build linux && (amd64 || arm64)

package rawfile

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The sizes and offsets below are those of the kernel's structs on 64-bit
// Linux (include/linux/socket.h, include/uapi/linux/uio.h,
// include/uapi/asm-generic/poll.h); a mismatch would make the kernel read
// the wrong fields.
func TestKernelStructLayout(t *testing.T) {
	var m unix.Mmsghdr
	checks := []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof(struct mmsghdr)", unsafe.Sizeof(m), 64},
		{"offsetof(mmsghdr, msg_len)", unsafe.Offsetof(m.Len), 56},
		{"sizeof(struct user_msghdr)", unsafe.Sizeof(m.Hdr), 56},
		{"offsetof(user_msghdr, msg_iov)", unsafe.Offsetof(m.Hdr.Iov), 16},
		{"offsetof(user_msghdr, msg_iovlen)", unsafe.Offsetof(m.Hdr.Iovlen), 24},
		{"offsetof(user_msghdr, msg_flags)", unsafe.Offsetof(m.Hdr.Flags), 48},
		{"sizeof(struct iovec)", unsafe.Sizeof(unix.Iovec{}), 16},
		{"sizeof(struct pollfd)", unsafe.Sizeof(unix.PollFd{}), 8},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
}
