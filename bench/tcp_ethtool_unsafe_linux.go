package bench

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/netns"
)

// ethtoolValue is struct ethtool_value (linux/ethtool.h), the argument of
// the legacy single-feature ETHTOOL_[GS]TSO and ETHTOOL_[GS]GSO commands.
type ethtoolValue struct {
	cmd  uint32
	data uint32
}

// ifreqData is struct ifreq with ifr_data set: the interface name and a
// pointer to the ethtool command, padded to the union's 24 bytes.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// setSegmentationOffload turns ifname's TCP segmentation offload and generic
// segmentation offload on or off inside ns, as `ethtool -K IF tso X gso X`
// does, and reads both back. With both off the kernel's TCP builds
// MTU-sized segments itself, so the veth carries what a real NIC's wire
// would; with TSO alone off the kernel would still build super-packets and
// segment them in software just before the veth, which a receiver sees the
// same way but the sender pays for differently. Done with the ethtool ioctl
// so that the benchmark needs no ethtool binary.
func setSegmentationOffload(ns, ifname string, on bool) error {
	var want uint32
	if on {
		want = 1
	}
	err := netns.Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return os.NewSyscallError("socket", err)
		}
		defer unix.Close(fd)
		for _, c := range []struct {
			set, get uint32
			name     string
		}{{unix.ETHTOOL_STSO, unix.ETHTOOL_GTSO, "tso"}, {unix.ETHTOOL_SGSO, unix.ETHTOOL_GGSO, "gso"}} {
			if _, err := ethtool(fd, ifname, c.set, want); err != nil {
				return fmt.Errorf("set %s %s: %w", c.name, onOff(on), err)
			}
			got, err := ethtool(fd, ifname, c.get, 0)
			if err != nil {
				return fmt.Errorf("read %s back: %w", c.name, err)
			}
			if got != want {
				return fmt.Errorf("%s is %s after setting it %s: the device does not let it change", c.name, onOff(got != 0), onOff(on))
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("bench: %s in %s: %w", ifname, ns, err)
	}
	return nil
}

// ethtool runs one ethtool_value command on ifname and returns the value
// the kernel left in data.
func ethtool(fd int, ifname string, cmd, data uint32) (uint32, error) {
	if len(ifname) >= unix.IFNAMSIZ {
		return 0, fmt.Errorf("interface name %q too long", ifname)
	}
	v := &ethtoolValue{cmd: cmd, data: data}
	var ifr ifreqData
	copy(ifr.name[:], ifname)
	ifr.data = unsafe.Pointer(v)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return 0, os.NewSyscallError("ioctl SIOCETHTOOL", errno)
	}
	return v.data, nil
}
