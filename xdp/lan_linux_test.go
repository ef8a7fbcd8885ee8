//go:build linux

package xdp

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/bpf"
	"github.com/sluicenet/sluice/internal/netns"
	"github.com/sluicenet/sluice/internal/testenv"
)

// lan is the topology of the redirect and tunnel tests: a "host" namespace
// H whose "NIC" hv is a two-queue veth leading to a LAN namespace L, where
// the kernel on lv plays the other machines (192.0.2.10, 2001:db8::10).
// The host has 192.0.2.2 and 2001:db8::2 on hv and listens on the control
// port.
type lan struct {
	H, L   string
	NIC    string // hv, in H
	LanIf  string // lv, in L
	host4  string
	host6  string
	lan4   string
	lan6   string
	ctlSrv map[string]net.Listener // host listeners by address family
}

const controlPort = 2222

func newLAN(t *testing.T) *lan {
	t.Helper()
	testenv.RequireTool(t, "ethtool")
	v := newVethQ(t, 2)
	n := &lan{H: v.NSA, L: v.NSB, NIC: v.A, LanIf: v.B,
		host4: "192.0.2.2", host6: "2001:db8::2", lan4: "192.0.2.10", lan6: "2001:db8::10"}
	testenv.IP(t, n.L, "addr", "add", n.lan4+"/24", "dev", n.LanIf)
	testenv.IP(t, n.L, "addr", "add", n.lan6+"/64", "dev", n.LanIf, "nodad")
	testenv.IP(t, n.H, "addr", "add", n.host4+"/24", "dev", n.NIC)
	testenv.IP(t, n.H, "addr", "add", n.host6+"/64", "dev", n.NIC, "nodad")
	// The LAN stands in for a wire: frames on a wire carry full checksums,
	// not the partial ones a veth leaves for offload.
	testenv.Exec(t, n.L, "ethtool", "-K", n.LanIf, "tx", "off")
	n.ctlSrv = map[string]net.Listener{}
	testenv.Do(t, n.H, func() error {
		for fam, addr := range map[string]string{"tcp4": n.host4, "tcp6": n.host6} {
			ln, err := net.Listen(fam, net.JoinHostPort(addr, strconv.Itoa(controlPort)))
			if err != nil {
				return err
			}
			t.Cleanup(func() { ln.Close() })
			n.ctlSrv[fam] = ln
		}
		return nil
	})
	return n
}

// controlReachesHost connects from the LAN to addr's control port and
// checks that the host's listener, not the stack, took the connection.
func (n *lan) controlReachesHost(t *testing.T, addr string) bool {
	t.Helper()
	fam := "tcp4"
	if strings.Contains(addr, ":") {
		fam = "tcp6"
	}
	ln := n.ctlSrv[fam]
	got := make(chan string, 1)
	go func() {
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
		c, err := ln.Accept()
		if err != nil {
			got <- ""
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		fmt.Fprintf(c, "host\n")
		got <- line
	}()
	var c net.Conn
	err := netns.Do(n.L, func() error {
		var err error
		c, err = net.DialTimeout(fam, net.JoinHostPort(addr, strconv.Itoa(controlPort)), 5*time.Second)
		return err
	})
	if err != nil {
		t.Logf("dial control port %s: %v", addr, err)
		<-got
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "hello\n")
	reply, _ := bufio.NewReader(c).ReadString('\n')
	return <-got == "hello\n" && reply == "host\n"
}

// leftovers lists what an XDP mode may leave behind on the LAN topology:
// XDP programs on hv or lv, sluice pin directories for them, sockets still
// bound to hv's queues, and in tunnel mode the tunnel veth.
func (n *lan) leftovers(t *testing.T, veth string) []string {
	t.Helper()
	var out []string
	for _, x := range []struct{ ns, dev string }{{n.H, n.NIC}, {n.L, n.LanIf}} {
		st, err := bpf.List(bpf.ListOptions{Netns: x.ns, Iface: x.dev})
		if err != nil {
			t.Fatal(err)
		}
		if len(st) != 1 || st[0].Mode != bpf.ModeNone {
			out = append(out, fmt.Sprintf("XDP on %s: %+v", x.dev, st))
		}
		id, err := bpf.NetnsID(x.ns)
		if err != nil {
			t.Fatal(err)
		}
		if d := bpf.PinDir(bpf.DefaultPinRoot, id, x.dev); exists(d) {
			out = append(out, "pin directory "+d)
		}
	}
	for q := 0; q < 2; q++ {
		if err := bindProbe(n.H, n.NIC, q); err != nil {
			out = append(out, fmt.Sprintf("queue %d of %s: %v", q, n.NIC, err))
		}
	}
	if veth != "" {
		_ = netns.Do(n.H, func() error {
			if _, err := netlink.LinkByName(veth); err == nil {
				out = append(out, "tunnel veth "+veth)
			}
			return nil
		})
	}
	return out
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// bindProbe binds a fresh AF_XDP socket to queue q of dev: EBUSY means a
// socket is still bound there.
func bindProbe(ns, dev string, q int) error {
	s, err := Open(Device{Netns: ns, Iface: dev, Queues: []int{q}}, Options{NumFrames: 16, RingSize: 8, BatchSize: 8})
	if err != nil {
		return err
	}
	return s.Close()
}

// xdpSocketsHeld counts this process's AF_XDP sockets.
func xdpSocketsHeld(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil || !strings.HasPrefix(target, "socket:") {
			continue
		}
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if dom, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); err == nil && dom == unix.AF_XDP {
			n++
		}
	}
	return n
}

// waitNoLeftovers polls leftovers until there are none or d passes: the
// kernel releases a dead process's namespace asynchronously.
func (n *lan) waitNoLeftovers(t *testing.T, veth string, d time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		left := n.leftovers(t, veth)
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var errHelper = errors.New("not a helper process")

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
