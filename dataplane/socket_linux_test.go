//go:build linux

package dataplane

import (
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/testenv"
)

func TestOpenPacketSocketErrors(t *testing.T) {
	testenv.RequireRoot(t)
	v := testenv.NewVeth(t)
	cases := []struct {
		name string
		o    SocketOptions
		is   error
		has  []string
	}{
		{"missing interface", SocketOptions{NetNS: v.NSA, Interface: "nosuch0"}, unix.ENODEV,
			[]string{`interface "nosuch0"`, v.NSA, "no such interface"}},
		// vb exists, but in the other namespace.
		{"interface in another netns", SocketOptions{NetNS: v.NSA, Interface: v.B}, unix.ENODEV,
			[]string{`interface "vb"`, "no such interface"}},
		{"missing netns", SocketOptions{NetNS: "slt-no-such-ns", Interface: "lo"}, unix.ENOENT,
			[]string{"slt-no-such-ns"}},
		{"no interface", SocketOptions{NetNS: v.NSA}, nil, []string{"Interface is empty"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fd, err := OpenPacketSocket(tc.o)
			if err == nil {
				unix.Close(fd)
				t.Fatal("OpenPacketSocket succeeded")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			for _, s := range tc.has {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
	if _, err := OpenPacketSockets(SocketOptions{NetNS: v.NSA, Interface: v.A}, 0); err == nil {
		t.Error("OpenPacketSockets(0) succeeded")
	}
}

func TestOpenPacketSocketOptions(t *testing.T) {
	testenv.RequireRoot(t)
	v := testenv.NewVeth(t)
	fd, err := OpenPacketSocket(SocketOptions{NetNS: v.NSA, Interface: v.A, VnetHdr: true, QdiscBypass: true, RcvBufBytes: 4 << 20, SndBufBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	for _, c := range []struct {
		name       string
		level, opt int
		atLeast    int
	}{
		{"PACKET_VNET_HDR", unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1},
		{"PACKET_QDISC_BYPASS", unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1},
		// Above net.core.rmem_max: only SO_RCVBUFFORCE gets this far.
		{"SO_RCVBUF", unix.SOL_SOCKET, unix.SO_RCVBUF, 4 << 20},
		{"SO_SNDBUF", unix.SOL_SOCKET, unix.SO_SNDBUF, 1 << 20},
	} {
		v, err := unix.GetsockoptInt(fd, c.level, c.opt)
		if err != nil || v < c.atLeast {
			t.Errorf("%s = %d, %v; want at least %d", c.name, v, err, c.atLeast)
		}
	}
	if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK == 0 {
		t.Errorf("socket not non-blocking: flags %#x, %v", fl, err)
	}
	// An explicit group is joined as given.
	g, err := OpenPacketSocket(SocketOptions{NetNS: v.NSA, Interface: v.A, FanoutGroup: 777})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(g)
	if val, err := unix.GetsockoptInt(g, unix.SOL_PACKET, unix.PACKET_FANOUT); err != nil || val&0xffff != 777 {
		t.Errorf("PACKET_FANOUT = %#x, %v; want group 777", val, err)
	}
	// Without a group, no fanout.
	if val, err := unix.GetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT); err != nil || val != 0 {
		t.Errorf("PACKET_FANOUT without a group = %#x, %v; want 0", val, err)
	}
	sa, err := unix.Getsockname(fd)
	if ll, ok := sa.(*unix.SockaddrLinklayer); err != nil || !ok || ll.Ifindex == 0 || ll.Protocol != htons(EthPAll) {
		t.Errorf("getsockname = %+v, %v; want bound to an ifindex with ETH_P_ALL", sa, err)
	}
}

// Two sockets in one fanout group share 16 UDP flows: the kernel hashes each
// flow to one socket, and both get some.
func TestFanoutSpreadsFlows(t *testing.T) {
	testenv.RequireRoot(t)
	v := quietVeth(t)
	fds, err := OpenPacketSockets(SocketOptions{NetNS: v.NSA, Interface: v.A, RcvBufBytes: 4 << 20}, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	// Both joined the same group, chosen by the kernel.
	var groups [2]int
	for i, fd := range fds {
		g, err := unix.GetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT)
		if err != nil {
			t.Fatal(err)
		}
		groups[i] = g
	}
	// (The kernel hands out unique ids from 0 up, so 0 is a valid id.)
	if groups[0] != groups[1] || (groups[0]>>16)&0xff != unix.PACKET_FANOUT_HASH || (groups[0]>>24)&0xff != unix.PACKET_FANOUT_FLAG_DEFRAG>>8 {
		t.Errorf("PACKET_FANOUT values %#x %#x: want the same hash group", groups[0], groups[1])
	}
	// A second set gets a group of its own.
	more, err := OpenPacketSockets(SocketOptions{NetNS: v.NSA, Interface: v.A}, 2)
	if err != nil {
		t.Fatal(err)
	}
	g, _ := unix.GetsockoptInt(more[0], unix.SOL_PACKET, unix.PACKET_FANOUT)
	unix.Close(more[0])
	unix.Close(more[1])
	if g&0xffff == groups[0]&0xffff {
		t.Errorf("second OpenPacketSockets reused fanout group %d", g&0xffff)
	}

	tx, err := OpenPacketSocket(SocketOptions{NetNS: v.NSB, Interface: v.B})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(tx)
	const flows, perFlow = 16, 5
	for seq := range perFlow {
		for flow := range flows {
			writeAll(t, tx, udpFrame(flow, uint32(seq), 32))
		}
	}
	flowSock := map[int]int{}
	perSock := [2]int{}
	total := 0
	buf := make([]byte, 2048)
	deadline := time.Now().Add(10 * time.Second)
	for total < flows*perFlow && time.Now().Before(deadline) {
		progress := false
		for i, fd := range fds {
			n, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
			if err != nil {
				continue
			}
			progress = true
			flow, _, ok := parseTestFrame(buf[:n])
			if !ok {
				t.Errorf("socket %d: unexpected frame % x", i, buf[:min(n, 48)])
				continue
			}
			if s, seen := flowSock[flow]; seen && s != i {
				t.Errorf("flow %d on both sockets", flow)
			}
			flowSock[flow] = i
			perSock[i]++
			total++
		}
		if !progress {
			time.Sleep(time.Millisecond)
		}
	}
	if total != flows*perFlow {
		t.Fatalf("received %d frames, want %d", total, flows*perFlow)
	}
	if perSock[0] == 0 || perSock[1] == 0 {
		t.Errorf("fanout: %d/%d frames per socket, want both used", perSock[0], perSock[1])
	}
	t.Logf("fanout hash over 16 flows: %d/%d of %d", perSock[0], perSock[1], total)
}
