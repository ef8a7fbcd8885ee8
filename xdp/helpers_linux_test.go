//go:build linux

package xdp

import (
	"encoding/binary"
	"net"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/bpf"
	"github.com/sluicenet/sluice/internal/testenv"
)

// newVethQ is testenv.NewVeth with queues rx and tx queues on both ends,
// so that flows spread over several queues: the sender's tx queue (picked
// by flow hash) selects the receiver's rx queue (veth_xmit).
func newVethQ(t *testing.T, queues int) *testenv.Veth {
	t.Helper()
	v := &testenv.Veth{NSA: testenv.NewNS(t), NSB: testenv.NewNS(t), A: "va", B: "vb"}
	q := strconv.Itoa(queues)
	testenv.IP(t, v.NSA, "link", "add", v.A, "numrxqueues", q, "numtxqueues", q, "type", "veth",
		"peer", "name", v.B, "netns", v.NSB, "numrxqueues", q, "numtxqueues", q)
	testenv.IP(t, v.NSA, "link", "set", v.A, "up")
	testenv.IP(t, v.NSB, "link", "set", v.B, "up")
	return v
}

func ifaceInfo(t testing.TB, ns, dev string) (int, net.HardwareAddr) {
	t.Helper()
	var idx int
	var mac net.HardwareAddr
	testenv.Do(t, ns, func() error {
		i, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		idx, mac = i.Index, i.HardwareAddr
		return nil
	})
	return idx, mac
}

// attachRedirect attaches sluice's redirect program (every frame) to dev,
// detached in t.Cleanup.
func attachRedirect(t *testing.T, ns, dev string) *bpf.Attachment {
	t.Helper()
	a, err := bpf.Attach(bpf.AttachOptions{Netns: ns, Iface: dev, Program: bpf.Redirect, Mode: bpf.ModeDriver})
	if err != nil {
		t.Fatalf("attach redirect to %s: %v", dev, err)
	}
	t.Cleanup(func() { a.Detach() })
	return a
}

// udpFrame builds an Ethernet/IPv4/UDP frame of payload bytes from
// 192.0.2.2:sport to 192.0.2.1:9, checksummed.
func udpFrame(dst, src net.HardwareAddr, sport uint16, payload int) []byte {
	f := make([]byte, 14+20+8+payload)
	copy(f, dst)
	copy(f[6:], src)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+payload))
	ip[8], ip[9] = 64, 17
	copy(ip[12:], []byte{192, 0, 2, 2})
	copy(ip[16:], []byte{192, 0, 2, 1})
	var s uint32
	for i := 0; i < 20; i += 2 {
		s += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(s))
	udp := ip[20:]
	binary.BigEndian.PutUint16(udp, sport)
	binary.BigEndian.PutUint16(udp[2:], 9)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+payload))
	for i := range payload {
		udp[8+i] = byte(i)
	}
	return f
}

// sendFrames writes frames from dev in ns with an AF_PACKET socket.
func sendFrames(t *testing.T, ns, dev string, frames [][]byte) {
	t.Helper()
	testenv.Do(t, ns, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		i, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		sa := &unix.SockaddrLinklayer{Ifindex: i.Index}
		for _, f := range frames {
			if err := unix.Sendto(fd, f, 0, sa); err != nil {
				return err
			}
		}
		return nil
	})
}

// packetReceiver is an AF_PACKET socket on dev in ns that collects
// incoming frames.
type packetReceiver struct {
	fd int
}

func newPacketReceiver(t *testing.T, ns, dev string) *packetReceiver {
	t.Helper()
	r := &packetReceiver{fd: -1}
	testenv.Do(t, ns, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		i, err := net.InterfaceByName(dev)
		if err != nil {
			unix.Close(fd)
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: i.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		r.fd = fd
		return nil
	})
	t.Cleanup(func() { unix.Close(r.fd) })
	return r
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// receive returns incoming frames that match keep, until want of them
// arrived or d passed.
func (r *packetReceiver) receive(d time.Duration, want int, keep func([]byte) bool) [][]byte {
	var out [][]byte
	buf := make([]byte, 65536)
	deadline := time.Now().Add(d)
	for len(out) < want && time.Now().Before(deadline) {
		pfd := []unix.PollFd{{Fd: int32(r.fd), Events: unix.POLLIN}}
		if n, _ := unix.Poll(pfd, 50); n <= 0 {
			continue
		}
		n, from, err := unix.Recvfrom(r.fd, buf, unix.MSG_DONTWAIT)
		if err != nil {
			continue
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if keep(buf[:n]) {
			out = append(out, append([]byte(nil), buf[:n]...))
		}
	}
	return out
}
