package bench

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ethtoolChannels is struct ethtool_channels (linux/ethtool.h).
type ethtoolChannels struct {
	cmd                                    uint32
	maxRx, maxTx, maxOther, maxCombined    uint32
	rxCount, txCount, otherCount, combined uint32
}

// ethtoolSetChannels sets ifname's rx and tx channel counts (in the calling
// thread's namespace).
func ethtoolSetChannels(ifname string, n int) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	ch := &ethtoolChannels{cmd: unix.ETHTOOL_GCHANNELS}
	if err := ethtoolPtr(fd, ifname, unsafe.Pointer(ch)); err != nil {
		return err
	}
	if ch.rxCount == uint32(n) && ch.txCount == uint32(n) {
		return nil
	}
	if uint32(n) > ch.maxRx || uint32(n) > ch.maxTx {
		return fmt.Errorf("at most %d rx and %d tx queues", ch.maxRx, ch.maxTx)
	}
	ch.cmd = unix.ETHTOOL_SCHANNELS
	ch.rxCount, ch.txCount = uint32(n), uint32(n)
	return ethtoolPtr(fd, ifname, unsafe.Pointer(ch))
}

// ethtoolPtr runs the ethtool command at p on ifname.
func ethtoolPtr(fd int, ifname string, p unsafe.Pointer) error {
	if len(ifname) >= unix.IFNAMSIZ {
		return fmt.Errorf("interface name %q too long", ifname)
	}
	var ifr ifreqData
	copy(ifr.name[:], ifname)
	ifr.data = p
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return os.NewSyscallError("ioctl SIOCETHTOOL", errno)
	}
	return nil
}
