//go:build linux

package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/sluicenet/sluice/internal/netns"
	"golang.org/x/sys/unix"
)

// fanoutHashDefrag is PACKET_FANOUT_HASH with PACKET_FANOUT_FLAG_DEFRAG, the
// high half of the PACKET_FANOUT option value. Defragmenting before hashing
// keeps every fragment of a datagram on the channel of its first fragment
// (only the first carries ports), as gVisor's fdbased does.
const fanoutHashDefrag = unix.PACKET_FANOUT_HASH | unix.PACKET_FANOUT_FLAG_DEFRAG

// OpenPacketSocket opens an AF_PACKET SOCK_RAW socket bound to o.Interface in
// namespace o.NetNS, non-blocking and close-on-exec, and joins the fanout
// group o.FanoutGroup if it is not 0. The caller owns the descriptor.
func OpenPacketSocket(o SocketOptions) (fd int, err error) {
	fds, err := openPacketSockets(o, 1, o.FanoutGroup != 0)
	if err != nil {
		return -1, err
	}
	return fds[0], nil
}

// OpenPacketSockets opens n sockets as OpenPacketSocket does, all in one
// PACKET_FANOUT hash group, so that the kernel spreads flows over them and
// keeps each flow on one socket: the channels of a Link. With
// o.FanoutGroup 0 the kernel picks a group id no other group in the
// namespace uses (PACKET_FANOUT_FLAG_UNIQUEID). On failure, every socket
// already opened is closed. The caller owns the descriptors.
func OpenPacketSockets(o SocketOptions, n int) ([]int, error) {
	if n < 1 {
		return nil, fmt.Errorf("dataplane: open %d packet sockets: need at least 1", n)
	}
	return openPacketSockets(o, n, n > 1 || o.FanoutGroup != 0)
}

func openPacketSockets(o SocketOptions, n int, fanout bool) ([]int, error) {
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	var fds []int
	// Everything happens on a thread inside the namespace: bind (through
	// SIOCGIFINDEX) resolves the interface name in the calling thread's
	// namespace, and the socket itself belongs to the namespace it was
	// created in.
	err := netns.Do(o.NetNS, func() error {
		group := o.FanoutGroup
		for i := range n {
			fd, err := openBound(o)
			if err != nil {
				return err
			}
			fds = append(fds, fd)
			if !fanout {
				continue
			}
			if i == 0 && group == 0 {
				group, err = joinUniqueFanout(fd)
			} else {
				err = joinFanout(fd, group, fanoutHashDefrag)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("dataplane: open packet socket (interface %q, netns %s): %w", o.Interface, nsName(o.NetNS), err)
	}
	return fds, nil
}

// openBound creates one socket in the calling thread's namespace and binds
// it. The order matters: PACKET_VNET_HDR must precede any ring (the mmap
// dispatcher adds one later), and fanout needs a bound, running socket.
func openBound(o SocketOptions) (fd int, err error) {
	proto := htons(o.Protocol)
	fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, int(proto))
	if err != nil {
		return -1, os.NewSyscallError("socket AF_PACKET", err)
	}
	defer func() {
		if err != nil {
			unix.Close(fd)
		}
	}()
	if o.VnetHdr {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
			return -1, os.NewSyscallError("setsockopt PACKET_VNET_HDR", err)
		}
	}
	if o.QdiscBypass {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
			return -1, os.NewSyscallError("setsockopt PACKET_QDISC_BYPASS", err)
		}
	}
	if err := setBuf(fd, o.RcvBufBytes, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, "SO_RCVBUF"); err != nil {
		return -1, err
	}
	if err := setBuf(fd, o.SndBufBytes, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, "SO_SNDBUF"); err != nil {
		return -1, err
	}
	ifr, err := unix.NewIfreq(o.Interface)
	if err != nil {
		return -1, fmt.Errorf("bad interface name: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		if errors.Is(err, unix.ENODEV) {
			return -1, fmt.Errorf("no such interface: %w", os.NewSyscallError("ioctl SIOCGIFINDEX", err))
		}
		return -1, os.NewSyscallError("ioctl SIOCGIFINDEX", err)
	}
	ifindex := int(ifr.Uint32())
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifindex}); err != nil {
		return -1, fmt.Errorf("bind (ifindex %d): %w", ifindex, os.NewSyscallError("bind", err))
	}
	return fd, nil
}

func setBuf(fd, size, force, plain int, name string) error {
	if size == 0 {
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, size); err == nil {
		return nil
	}
	// Without CAP_NET_ADMIN: the plain option, capped at net.core.*mem_max.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, size); err != nil {
		return os.NewSyscallError("setsockopt "+name, err)
	}
	return nil
}

func joinFanout(fd int, group uint16, typeFlags int) error {
	// The kernel takes the group in the low 16 bits and the mode and
	// flags in the high 16 (packet(7)); the flag bit 15 makes the value
	// negative as an int32, which is what setsockopt reads.
	v := int32(uint32(group) | uint32(typeFlags)<<16)
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT, int(v)); err != nil {
		if errors.Is(err, unix.EINVAL) {
			// EINVAL also means the id is taken by a group of another
			// mode, flags or device in this namespace.
			return fmt.Errorf("join fanout group %d (in use by another group? pick another FanoutGroup): %w",
				group, os.NewSyscallError("setsockopt PACKET_FANOUT", err))
		}
		return fmt.Errorf("join fanout group %d: %w", group, os.NewSyscallError("setsockopt PACKET_FANOUT", err))
	}
	return nil
}

var fanoutSeq atomic.Uint32

// joinUniqueFanout creates a new fanout group with an id the kernel picks
// (PACKET_FANOUT_FLAG_UNIQUEID, Linux 4.3) and returns that id, read back with
// getsockopt. On older kernels it falls back to an id made of the pid and a
// counter, which only collides with another process that guesses alike.
func joinUniqueFanout(fd int) (uint16, error) {
	err := joinFanout(fd, 0, fanoutHashDefrag|unix.PACKET_FANOUT_FLAG_UNIQUEID)
	if err == nil {
		v, err := unix.GetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT)
		if err != nil {
			return 0, os.NewSyscallError("getsockopt PACKET_FANOUT", err)
		}
		return uint16(v), nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return 0, err
	}
	group := uint16(os.Getpid()*31 + int(fanoutSeq.Add(1))*0x9e37)
	if group == 0 {
		group = 1
	}
	return group, joinFanout(fd, group, fanoutHashDefrag)
}

// htons converts to network byte order, as the socket calls want the
// protocol.
func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}
