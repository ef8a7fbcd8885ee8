package bpf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/sluicenet/sluice/internal/netns"
	"github.com/sluicenet/sluice/internal/testenv"
)

// quietVeth is a veth pair, va (192.0.2.1) and vb (192.0.2.2 plus extra
// addresses), with IPv6 off and static neighbours so that only the frames a
// test sends cross it.
func quietVeth(t *testing.T, extra ...string) *testenv.Veth {
	t.Helper()
	v := testenv.NewVeth(t)
	vbMAC := ifaceMAC(t, v.NSB, v.B)
	for _, x := range []struct{ ns, dev string }{{v.NSA, v.A}, {v.NSB, v.B}} {
		testenv.Exec(t, x.ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf."+x.dev+".disable_ipv6=1")
	}
	testenv.IP(t, v.NSA, "addr", "add", "192.0.2.1/24", "dev", v.A)
	for _, a := range append([]string{"192.0.2.2"}, extra...) {
		testenv.IP(t, v.NSB, "addr", "add", a+"/24", "dev", v.B)
		testenv.IP(t, v.NSA, "neigh", "replace", a, "lladdr", vbMAC, "dev", v.A)
	}
	testenv.IP(t, v.NSB, "neigh", "replace", "192.0.2.1", "lladdr", ifaceMAC(t, v.NSA, v.A), "dev", v.B)
	return v
}

func ifaceMAC(t *testing.T, ns, dev string) string {
	t.Helper()
	var hw string
	testenv.Do(t, ns, func() error {
		i, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		hw = i.HardwareAddr.String()
		return nil
	})
	return hw
}

func pingOK(t *testing.T, ns, addr string, count int) bool {
	t.Helper()
	testenv.RequireTool(t, "ping", "nsenter")
	_, err := testenv.Output("nsenter", "--net="+netns.Path(ns), "--", "ping", "-n", "-q", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "1", addr)
	return err == nil
}

// sendUDP sends n datagrams "sluice-<i>" from ns to dst:port.
func sendUDP(t *testing.T, ns, dst string, port, n int) {
	t.Helper()
	testenv.Do(t, ns, func() error {
		c, err := net.Dial("udp4", net.JoinHostPort(dst, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		defer c.Close()
		for i := 0; i < n; i++ {
			if _, err := fmt.Fprintf(c, "sluice-%d", i); err != nil {
				return err
			}
		}
		return nil
	})
}

func TestRedirectIntoAFXDPSocket(t *testing.T) {
	v := quietVeth(t, "192.0.2.3")
	a, err := Attach(AttachOptions{Netns: v.NSB, Iface: v.B, Program: Redirect, Mode: ModeDriver,
		Load: LoadOptions{RedirectAddrs: []netip.Addr{netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("2001:db8::2")}}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Detach()
	if a.PinDir != "" {
		t.Errorf("unpinned attach pinned at %s", a.PinDir)
	}

	// The socket and the host-stack listener live in vb's namespace.
	var xsk *testXSK
	var host net.PacketConn
	testenv.Do(t, v.NSB, func() error {
		xsk = newTestXSK(t, a.Ifindex, 0)
		var err error
		if host, err = net.ListenPacket("udp4", "192.0.2.3:9999"); err != nil {
			return err
		}
		return a.Objects.XSKs.Put(uint32(0), uint32(xsk.fd))
	})
	defer host.Close()

	// With a socket in the map, the filter decides (test runs are not
	// live, so this only checks the program's verdict).
	to := func(dst string) []byte { return ipv4Frame(17, netip.MustParseAddr(dst), 0, udpHdr(9999, 4)) }
	if got := mustRun(t, a.Objects.Program, to("192.0.2.2")); got != xdpRedirect {
		t.Errorf("frame to a listed address: action %d, want redirect", got)
	}
	if got := mustRun(t, a.Objects.Program, to("192.0.2.3")); got != xdpPass {
		t.Errorf("frame to another address: action %d, want pass", got)
	}
	if got := mustRun(t, a.Objects.Program, ipv6Frame(17, netip.MustParseAddr("2001:db8::2"), nil, udpHdr(9999, 4))); got != xdpRedirect {
		t.Errorf("frame to a listed IPv6 address: action %d, want redirect", got)
	}
	before, _ := ReadCounters(a.Objects.Stats)

	sendUDP(t, v.NSA, "192.0.2.2", 9999, 10)
	sendUDP(t, v.NSA, "192.0.2.3", 9999, 5)

	frames := xsk.receive(5*time.Second, 10)
	if len(frames) != 10 {
		t.Fatalf("AF_XDP socket received %d frames, want 10", len(frames))
	}
	dst := netip.MustParseAddr("192.0.2.2").As4()
	for i, f := range frames {
		if len(f) < 42 || binary.BigEndian.Uint16(f[12:]) != 0x0800 || !bytes.Equal(f[30:34], dst[:]) || !bytes.HasPrefix(f[42:], []byte("sluice-")) {
			t.Errorf("frame %d is not a datagram to 192.0.2.2: % x", i, f)
		}
	}
	host.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 64)
	for i := 0; i < 5; i++ {
		if _, _, err := host.ReadFrom(buf); err != nil {
			t.Fatalf("host stack got %d of the 5 datagrams to 192.0.2.3: %v", i, err)
		}
	}
	after, _ := ReadCounters(a.Objects.Stats)
	if got := after.Redirected.Packets - before.Redirected.Packets; got != 10 {
		t.Errorf("redirected counter grew by %d, want 10", got)
	}
	if got := after.Passed.Packets - before.Passed.Packets; got < 5 {
		t.Errorf("passed counter grew by %d, want at least 5", got)
	}
}

func TestUnpinnedAttachmentGoesWithClose(t *testing.T) {
	v := quietVeth(t)
	a, err := Attach(AttachOptions{Netns: v.NSB, Iface: v.B, Program: Drop})
	if err != nil {
		t.Fatal(err)
	}
	if pingOK(t, v.NSA, "192.0.2.2", 1) {
		t.Fatal("ping passed the drop program")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := List(ListOptions{Netns: v.NSB, Iface: v.B})
	if err != nil {
		t.Fatal(err)
	}
	if st[0].Mode != ModeNone {
		t.Errorf("after Close: %+v, want nothing attached", st[0])
	}
	if !pingOK(t, v.NSA, "192.0.2.2", 1) {
		t.Error("ping fails after Close")
	}
}

func TestAttachTC(t *testing.T) {
	v := quietVeth(t)
	// TC_ACT_SHOT (2, <linux/pkt_cls.h>) for every packet.
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	tc, err := AttachTC(TCOptions{Netns: v.NSB, Iface: v.B, Program: prog, Direction: Ingress})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("TC attach: legacy clsact=%v", tc.Legacy)
	if pingOK(t, v.NSA, "192.0.2.2", 2) {
		t.Error("ping passed a TC program that drops everything")
	}
	if err := tc.Close(); err != nil {
		t.Fatal(err)
	}
	if !pingOK(t, v.NSA, "192.0.2.2", 1) {
		t.Error("ping fails after the TC program was removed")
	}
}

func TestAttachSocketFilter(t *testing.T) {
	ns := testenv.NewNS(t)
	// A socket filter returns how many bytes to keep: 0 drops the packet.
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	var rx *net.UDPConn
	var tx net.Conn
	testenv.Do(t, ns, func() error {
		var err error
		if rx, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
			return err
		}
		tx, err = net.Dial("udp4", rx.LocalAddr().String())
		return err
	})
	defer rx.Close()
	defer tx.Close()
	if err := AttachSocketFilter(rx, prog); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	tx.Write([]byte("filtered"))
	rx.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := rx.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read with a drop-all filter: %v, want a timeout", err)
	}
	if err := DetachSocketFilter(rx); err != nil {
		t.Fatal(err)
	}
	tx.Write([]byte("through"))
	rx.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := rx.Read(buf); err != nil || string(buf[:n]) != "through" {
		t.Errorf("read after detach: %q, %v", buf[:n], err)
	}
}
