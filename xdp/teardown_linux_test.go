//go:build linux

package xdp

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicenet/sluice/internal/testenv"
)

// helperEnv carries a helper process's orders: mode,netns,iface,veth.
const helperEnv = "SLUICE_XDP_TEST_HELPER"

// TestHelperHoldLink is not a test of its own: TestTeardownAfterSIGKILL
// runs the test binary again with only this test and helperEnv set, to
// hold a mode's link (with a stack on it, readers running) until killed.
func TestHelperHoldLink(t *testing.T) {
	spec := os.Getenv(helperEnv)
	if spec == "" {
		t.Skip("runs only as TestTeardownAfterSIGKILL's helper process")
	}
	f := strings.Split(spec, ",")
	if len(f) != 4 {
		t.Fatalf("bad %s %q", helperEnv, spec)
	}
	mode, ns, iface, veth := f[0], f[1], f[2], f[3]
	var l *Link
	var err error
	addrs := []netip.Prefix{stack4, stack6}
	switch mode {
	case "ns":
		l, err = OpenNS(NSOptions{Netns: ns, Iface: iface})
	case "redirect":
		l, err = OpenRedirect(RedirectOptions{Netns: ns, Iface: iface, Addrs: []netip.Addr{stack4.Addr(), stack6.Addr()}})
	case "tunnel":
		l, err = OpenTunnel(TunnelOptions{Netns: ns, Iface: iface, Veth: veth})
	default:
		t.Fatalf("unknown mode %q", mode)
	}
	if err != nil {
		t.Fatal(err)
	}
	newStack(t, l.Endpoint, addrs...)
	fmt.Println("ready")
	// Bounded: the parent kills us long before.
	time.Sleep(time.Minute)
	t.Fatal("helper was not killed")
}

// TestTeardownAfterSIGKILL holds each mode's link in a child process,
// checks that it holds what it should (a program on the NIC, its queues
// bound, the tunnel veth), kills the child with SIGKILL and checks that the
// kernel took everything down: no XDP program on the NIC or its peer, no
// pins, the queues free for a new socket, the tunnel veth gone.
func TestTeardownAfterSIGKILL(t *testing.T) {
	testenv.RequireRoot(t)
	for _, mode := range []string{"ns", "redirect", "tunnel"} {
		t.Run(mode, func(t *testing.T) {
			n := newLAN(t)
			veth := ""
			if mode == "tunnel" {
				veth = fmt.Sprintf("sxk%d", os.Getpid()%100000)
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHoldLink$", "-test.count=1")
			cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%s,%s,%s", helperEnv, mode, n.H, n.NIC, veth))
			cmd.Stderr = os.Stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			killed := false
			t.Cleanup(func() {
				if !killed {
					cmd.Process.Kill()
					cmd.Wait()
				}
			})
			ready := make(chan bool, 1)
			go func() {
				sc := bufio.NewScanner(out)
				for sc.Scan() {
					if sc.Text() == "ready" {
						ready <- true
						break
					}
				}
				ready <- false
				for sc.Scan() {
				}
			}()
			select {
			case ok := <-ready:
				if !ok {
					t.Fatal("helper exited before it was ready")
				}
			case <-time.After(60 * time.Second):
				t.Fatal("helper not ready within 60s")
			}
			held := n.leftovers(t, veth)
			if len(held) == 0 {
				t.Fatal("the helper holds nothing: the test would prove nothing")
			}
			t.Logf("held by the helper: %v", held)
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			cmd.Wait()
			killed = true
			if left := n.waitNoLeftovers(t, veth, 10*time.Second); len(left) > 0 {
				t.Errorf("after SIGKILL: %v", left)
			}
		})
	}
}
