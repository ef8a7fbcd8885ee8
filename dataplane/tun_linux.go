//go:build linux

package dataplane

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/netns"
)

// OpenTUN creates (or attaches to) a TUN device as o describes and returns
// its descriptors, non-blocking and close-on-exec: one, or o.Queues with
// MultiQueue. The caller owns them; the device goes away with the last one
// unless it was made persistent elsewhere. The device is created down and
// without addresses. Each read and write is one IP packet (IFF_NO_PI),
// preceded by a virtio_net_hdr with VnetHdr.
func OpenTUN(o TUNOptions) ([]int, error) {
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	var fds []int
	name := o.Name
	err := netns.Do(o.NetNS, func() error {
		for i := range o.Queues {
			fd, got, err := openTUNQueue(name, o)
			if err != nil {
				return fmt.Errorf("queue %d: %w", i, err)
			}
			fds = append(fds, fd)
			name = got // later queues attach to the device the first made
		}
		return nil
	})
	if err == nil {
		err = configureTUN(fds[0], o)
	}
	if err != nil {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("dataplane: open tun (name %q, netns %s): %w", o.Name, nsName(o.NetNS), err)
	}
	return fds, nil
}

// openTUNQueue opens /dev/net/tun and binds it to the device name with
// TUNSETIFF, returning the name the kernel used.
func openTUNQueue(name string, o TUNOptions) (int, string, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return -1, "", fmt.Errorf("no /dev/net/tun (CONFIG_TUN, or mknod c 10 200): %w: %w", ErrNotSupported, err)
		}
		return -1, "", fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, "", fmt.Errorf("bad device name: %w", err)
	}
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if o.VnetHdr {
		flags |= unix.IFF_VNET_HDR
	}
	if o.MultiQueue {
		flags |= unix.IFF_MULTI_QUEUE
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, "", os.NewSyscallError("ioctl TUNSETIFF", err)
	}
	return fd, ifr.Name(), nil
}

// configureTUN sets the virtio_net_hdr size and the offloads, which belong
// to the device: once, on its first descriptor.
func configureTUN(fd int, o TUNOptions) error {
	if o.VnetHdr {
		// TUNSETVNETHDRSZ takes a pointer to an int (KERNEL-NOTES item
		// 9). The default is already 10, but a persistent device may
		// have been left with 12.
		if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, VnetHdrLen); err != nil {
			return os.NewSyscallError("ioctl TUNSETVNETHDRSZ", err)
		}
	}
	// TUNSETOFFLOAD takes its flags by value. Set even when zero, so that
	// a persistent device does not keep offloads the caller did not ask
	// for.
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, int(o.Offloads)); err != nil {
		if errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("TUNSETOFFLOAD %v refused (USO needs Linux 6.2): %w: %w", o.Offloads, ErrNotSupported, os.NewSyscallError("ioctl", err))
		}
		return fmt.Errorf("TUNSETOFFLOAD %v: %w", o.Offloads, os.NewSyscallError("ioctl", err))
	}
	return nil
}

// TUNInfoOf returns the device of a TUN (or TAP) descriptor, with
// TUNGETIFF. An error wrapping ErrNotSupported means fd is not one.
func TUNInfoOf(fd int) (TUNInfo, error) {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return TUNInfo{}, err
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
		if errors.Is(err, unix.EBADFD) || errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
			return TUNInfo{}, fmt.Errorf("dataplane: fd %d is not an attached TUN descriptor: %w: %w", fd, ErrNotSupported, os.NewSyscallError("ioctl TUNGETIFF", err))
		}
		return TUNInfo{}, fmt.Errorf("dataplane: fd %d: %w", fd, os.NewSyscallError("ioctl TUNGETIFF", err))
	}
	f := ifr.Uint16()
	return TUNInfo{
		Name:    ifr.Name(),
		VnetHdr: f&unix.IFF_VNET_HDR != 0,
		Multi:   f&unix.IFF_MULTI_QUEUE != 0,
		TAP:     f&unix.IFF_TAP != 0,
	}, nil
}
