//go:build linux

package dataplane

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/netns"
	"github.com/sluicenet/sluice/internal/rawfile"
)

// probeReadyWait bounds how long ProbeOffloads waits for a device to pass
// its first frame, and probeReadyRound how long it waits for each of the
// plain frames it sends meanwhile.
const (
	probeReadyWait  = 2 * time.Second
	probeReadyRound = 20 * time.Millisecond
)

// awaitTransmit sends plain frames until the watcher sees one leave, and
// returns a reason to skip the probe if none does within probeReadyWait.
//
// A device just brought up drops what it is given until the kernel's link
// watcher attaches its queueing discipline (linkwatch_do_dev -> dev_activate,
// up to a second later, more under load); until then noop_qdisc drops every
// frame while the send still succeeds (NET_XMIT_CN counts as success). A veth
// whose peer is down drops everything too. Neither says anything about an
// offload, and judging offloads then would turn them all off for nothing.
// A frame the kernel refuses outright ends the wait: that is the
// virtio_net_hdr failing, which the tests report; ENOBUFS, a queueing
// discipline dropping it, does not.
func awaitTransmit(o ProbeOptions, watch int, dev probeDevice, nonce uint32) string {
	deadline := time.Now().Add(probeReadyWait)
	sent := 0
	for round := uint32(0); time.Now().Before(deadline); round++ {
		f := []probeFrame{buildProbeFrame(ProbePlain, o.EthernetHeader, dev.mac, nonce+round*0x10001)}
		err := []error{sendProbeFrame(o.FD, &f[0], probeReadyRound)}
		if errors.Is(err[0], unix.ENOBUFS) {
			// Dropped by a queueing discipline (NET_XMIT_DROP):
			// congestion, or a qdisc that drops everything.
			time.Sleep(probeReadyRound)
			continue
		}
		if err[0] != nil {
			return ""
		}
		sent++
		obs := make([][]ProbeObservation, 1)
		watchProbe(watch, f, err, obs, time.Now().Add(probeReadyRound))
		if len(obs[0]) > 0 {
			return ""
		}
	}
	return fmt.Sprintf("device %s passed none of %d plain frames in %v: not transmitting yet (brought up a moment ago, or a veth whose peer is down); offloads not probed",
		dev.name, sent, probeReadyWait)
}

// probeDevice is what the probe learnt about FD's device.
type probeDevice struct {
	name, driver string
	ifindex      int
	mac          [6]byte
	nsfd         int // the device's network namespace, to open the watcher in
}

var probeNonce atomic.Uint32

// ProbeOffloads sends one frame per test on o.FD's device and judges, from
// what a second packet socket on the device sees, whether the kernel
// handled each offload correctly. It only probes veth and TUN devices, which
// lead to nothing but their peer; on any other device, or without a
// virtio_net_hdr, it returns a result with Skipped set and no verdicts. An
// error means the probe could not be set up (no permission to open a packet
// socket, a device that went away); the caller should treat the offloads as
// unverified.
func ProbeOffloads(o ProbeOptions) (ProbeResult, error) {
	if o.Timeout <= 0 {
		o.Timeout = DefaultProbeTimeout
	}
	var res ProbeResult
	dev, skip, err := probeDeviceOf(o.FD)
	if err != nil {
		return res, fmt.Errorf("dataplane: offload probe (fd %d): %w", o.FD, err)
	}
	res.Device, res.Driver = dev.name, dev.driver
	if skip != "" {
		res.Skipped = skip
		return res, nil
	}
	defer unix.Close(dev.nsfd)
	if dev.driver != "veth" && dev.driver != "tun" {
		res.Skipped = fmt.Sprintf("device %s has driver %q: the probe only sends on veth and tun devices, whose frames reach nothing but their peer", dev.name, dev.driver)
		return res, nil
	}
	if !o.VnetHdr {
		res.Skipped = "no virtio_net_hdr on the descriptor: there is no offload to probe"
		return res, nil
	}
	if len(o.Tests) == 0 {
		return res, nil
	}

	var watch int
	err = netns.DoFD(dev.nsfd, func() error {
		var err error
		watch, err = openProbeWatcher(dev.ifindex, dev.name)
		return err
	})
	if err != nil {
		return res, fmt.Errorf("dataplane: offload probe on %s: watching socket: %w", dev.name, err)
	}
	defer unix.Close(watch)
	if up, err := deviceUp(watch, dev.name); err != nil {
		return res, fmt.Errorf("dataplane: offload probe on %s: %w", dev.name, err)
	} else if !up {
		res.Skipped = fmt.Sprintf("device %s is down: nothing can be sent to see what the kernel does", dev.name)
		return res, nil
	}

	nonce := uint32(os.Getpid())*0x9e3779b1 + probeNonce.Add(1)*0x85ebca6b + uint32(time.Now().UnixNano())
	if skip := awaitTransmit(o, watch, dev, nonce); skip != "" {
		res.Skipped = skip
		return res, nil
	}
	nonce += 0x9e3779b9
	frames := make([]probeFrame, len(o.Tests))
	sendErr := make([]error, len(o.Tests))
	for i, t := range o.Tests {
		frames[i] = buildProbeFrame(t, o.EthernetHeader, dev.mac, nonce)
		sendErr[i] = sendProbeFrame(o.FD, &frames[i], o.Timeout)
	}
	observed := make([][]ProbeObservation, len(o.Tests))
	watchProbe(watch, frames, sendErr, observed, time.Now().Add(o.Timeout))

	for i, t := range o.Tests {
		v := ProbeVerdict{Test: t}
		obs := observed[i]
		if o.Fault != nil {
			obs = o.Fault(t, obs)
		}
		switch {
		case sendErr[i] != nil:
			v.Reason = fmt.Sprintf("the kernel refused the frame: %v", sendErr[i])
		default:
			if _, err := frames[i].judge(obs); err != nil {
				v.Reason = err.Error()
			} else {
				v.OK = true
			}
		}
		res.Verdicts = append(res.Verdicts, v)
	}
	return res, nil
}

// probeDeviceOf identifies fd's device. A non-empty skip means fd is not
// something the probe knows how to send on.
func probeDeviceOf(fd int) (dev probeDevice, skip string, err error) {
	sa, serr := unix.Getsockname(fd)
	if ll, ok := sa.(*unix.SockaddrLinklayer); serr == nil && ok {
		dev.ifindex = ll.Ifindex
		copy(dev.mac[:], ll.Addr[:min(int(ll.Halen), 6)])
		ifr, err := unix.NewIfreq("")
		if err != nil {
			return dev, "", err
		}
		ifr.SetUint32(uint32(ll.Ifindex))
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFNAME, ifr); err != nil {
			return dev, "", fmt.Errorf("name of ifindex %d: %w", ll.Ifindex, os.NewSyscallError("ioctl SIOCGIFNAME", err))
		}
		dev.name = ifr.Name()
		info, err := unix.IoctlGetEthtoolDrvinfo(fd, dev.name)
		if err != nil {
			return dev, fmt.Sprintf("device %s does not say its driver (ETHTOOL_GDRVINFO: %v): the probe only sends on veth and tun devices", dev.name, err), nil
		}
		dev.driver = unix.ByteSliceToString(info.Driver[:])
		// The socket's namespace is the device's (a packet socket
		// binds in its own namespace); SIOCGSKNS is Linux 4.9.
		if dev.nsfd, err = unix.IoctlRetInt(fd, unix.SIOCGSKNS); err != nil {
			return dev, "", fmt.Errorf("namespace of the socket: %w", os.NewSyscallError("ioctl SIOCGSKNS", err))
		}
		return dev, "", nil
	}
	info, err := TUNInfoOf(fd)
	if errors.Is(err, ErrNotSupported) {
		return dev, fmt.Sprintf("fd %d is neither an AF_PACKET socket nor a TUN descriptor", fd), nil
	}
	if err != nil {
		return dev, "", err
	}
	// TUN and TAP devices share the tun driver.
	dev.name, dev.driver = info.Name, "tun"
	// TUNGETDEVNETNS (Linux 5.2) returns a descriptor of the namespace
	// the device lives in.
	if dev.nsfd, err = unix.IoctlRetInt(fd, unix.TUNGETDEVNETNS); err != nil {
		return dev, "", fmt.Errorf("namespace of tun %s: %w", dev.name, os.NewSyscallError("ioctl TUNGETDEVNETNS", err))
	}
	// The index is looked up inside the namespace (openProbeWatcher).
	dev.ifindex = -1
	return dev, "", nil
}

// openProbeWatcher opens the watching socket in the calling thread's
// namespace: every protocol (the only packet socket that also sees
// outgoing frames, KERNEL-NOTES item 1), with a virtio_net_hdr so that GSO
// and partial checksums show, bound to the device. An ifindex below 0 is
// looked up from name, in the calling thread's namespace.
func openProbeWatcher(ifindex int, name string) (int, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, int(htons(EthPAll)))
	if err != nil {
		return -1, os.NewSyscallError("socket AF_PACKET", err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		return -1, os.NewSyscallError("setsockopt PACKET_VNET_HDR", err)
	}
	if ifindex < 0 {
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return -1, err
		}
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
			return -1, fmt.Errorf("index of %s: %w", name, os.NewSyscallError("ioctl SIOCGIFINDEX", err))
		}
		ifindex = int(ifr.Uint32())
	}
	// Room for every probe frame and whatever else the device carries
	// meanwhile.
	_ = setBuf(fd, 4<<20, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, "SO_RCVBUF")
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(EthPAll), Ifindex: ifindex}); err != nil {
		return -1, os.NewSyscallError("bind", err)
	}
	ok = true
	return fd, nil
}

// deviceUp reports whether the device is administratively up.
func deviceUp(fd int, name string) (bool, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return false, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return false, os.NewSyscallError("ioctl SIOCGIFFLAGS", err)
	}
	return ifr.Uint16()&unix.IFF_UP != 0, nil
}

// sendProbeFrame writes p's virtio_net_hdr and frame to fd in one write,
// waiting for room if the descriptor is non-blocking and full.
func sendProbeFrame(fd int, p *probeFrame, timeout time.Duration) error {
	var vh [VnetHdrLen]byte
	p.vnet.Encode(vh[:])
	iovs := []unix.Iovec{rawfile.IovecFromBytes(vh[:]), rawfile.IovecFromBytes(p.frame)}
	deadline := time.Now().Add(timeout)
	for {
		n, e := rawfile.Writev(fd, iovs)
		switch {
		case e == 0 && n == VnetHdrLen+len(p.frame):
			return nil
		case e == 0:
			return fmt.Errorf("short write: %d of %d bytes", n, VnetHdrLen+len(p.frame))
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN:
			left := time.Until(deadline)
			if left <= 0 {
				return os.NewSyscallError("write", e)
			}
			_, _ = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}, int(left/time.Millisecond)+1)
			continue
		}
		return os.NewSyscallError("write", e)
	}
}

// watchProbe reads the watching socket until every test that was sent has
// been seen whole (or judged wrong) or the deadline passes, adding each
// test's frames to observed.
func watchProbe(watch int, frames []probeFrame, sendErr []error, observed [][]ProbeObservation, deadline time.Time) {
	done := make([]bool, len(frames))
	left := 0
	for i := range frames {
		if sendErr[i] != nil {
			done[i] = true
		} else {
			left++
		}
	}
	buf := make([]byte, VnetHdrLen+65536+64)
	for left > 0 {
		n, _, flags, _, err := unix.Recvmsg(watch, buf, nil, unix.MSG_TRUNC)
		if errors.Is(err, unix.EAGAIN) {
			wait := time.Until(deadline)
			if wait <= 0 {
				return
			}
			_, _ = unix.Poll([]unix.PollFd{{Fd: int32(watch), Events: unix.POLLIN}}, int(wait/time.Millisecond)+1)
			continue
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		if err != nil || n < VnetHdrLen || n > len(buf) || flags&unix.MSG_TRUNC != 0 {
			continue
		}
		vh, _ := ParseVnetHdr(buf)
		data := buf[VnetHdrLen:n]
		for i := range frames {
			if done[i] || !frames[i].matches(data) {
				continue
			}
			observed[i] = append(observed[i], ProbeObservation{Vnet: vh, Data: append([]byte(nil), data...)})
			if complete, _ := frames[i].judge(observed[i]); complete {
				done[i] = true
				left--
			}
			break
		}
		if time.Now().After(deadline) {
			return
		}
	}
}
