package fdbased

import (
	"bufio"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/netns"
	"github.com/sluicenet/sluice/internal/testenv"
)

// captureCount is how many frames from the netstack each capture takes:
// the 40 UDP datagrams, then the IPv6 transfer's (at least 725 segments of
// at most 1448 bytes for its megabyte, and ACKs), then part of the IPv4
// one. The netstack sends at least 40 + 2*725 frames in all, so tcpdump
// always gets its count.
const captureCount = 1200

// startCapture runs tcpdump on the peer's veth end for what the netstack
// sends, until it has captureCount frames, and returns a function that
// waits for it and returns the decoded capture.
func startCapture(t *testing.T, r *rig) func() string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "sluice.pcap")
	cmd := exec.Command("nsenter", "--net="+netns.Path(r.veth.NSB), "--",
		"tcpdump", "-i", r.veth.B, "-n", "-U", "-vv", "-c", fmt.Sprint(captureCount), "-w", file,
		"src host 192.0.2.1 or src host 2001:db8::1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	ready := make(chan struct{})
	var errOut strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		signalled := false
		for sc.Scan() {
			errOut.WriteString(sc.Text() + "\n")
			if !signalled && strings.Contains(sc.Text(), "listening on") {
				close(ready)
				signalled = true
			}
		}
		if !signalled {
			close(ready)
		}
		done <- cmd.Wait()
	}()
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("tcpdump did not start listening")
	}
	return func() string {
		t.Helper()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("tcpdump: %v\n%s", err, errOut.String())
			}
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Fatalf("tcpdump did not capture %d frames:\n%s", captureCount, errOut.String())
		}
		out, err := exec.Command("tcpdump", "-r", file, "-n", "-vv").CombinedOutput()
		if err != nil {
			t.Fatalf("tcpdump -r: %v\n%s", err, out)
		}
		return string(out)
	}
}

// TestCaptureChecksums captures, on the peer's side of the veth, what the
// endpoint sends in each way it can make checksums (the stack's, software
// GSO's, the kernel completing our partial ones with the sender veth's
// checksum offload off) and checks tcpdump finds none incorrect. With the
// sender veth's tx offload on, a partial checksum crosses the veth as it is
// (the receiving kernel trusts CHECKSUM_PARTIAL) and tcpdump would call it
// incorrect: that is the veth's shortcut, not a frame a wire would see.
func TestCaptureChecksums(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "tcpdump", "ethtool")
	for _, tc := range []struct {
		name  string
		opts  Options
		txOff bool // ethtool -K va tx off: the kernel completes partial checksums
	}{
		{"no offloads", Options{RXChecksumOffload: true}, false},
		{"software gso, full checksums", Options{GSOMaxSize: 65536, GVisorGSOEnabled: true, RXChecksumOffload: true}, false},
		{"software gso, partial checksums", Options{GSOMaxSize: 65536, GVisorGSOEnabled: true, VnetHdr: true}, true},
		{"host gso", Options{GSOMaxSize: 65536}, true},
		{"host gso and tx checksum offload", Options{GSOMaxSize: 65536, TXChecksumOffload: true}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, dataplane.RecvMMsg, 1, tc.opts)
			if tc.txOff {
				testenv.Exec(t, r.veth.NSA, "ethtool", "-K", r.veth.A, "tx", "off")
			}
			wait := startCapture(t, r)
			// UDP from the netstack, both versions: datagrams whose
			// checksum the endpoint seeds under TX checksum offload.
			for _, dst := range []struct {
				addr  tcpip.Address
				proto tcpip.NetworkProtocolNumber
			}{{tcpip.AddrFrom4([4]byte{192, 0, 2, 2}), ipv4.ProtocolNumber}, {tcpip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 2}), ipv6.ProtocolNumber}} {
				c, err := gonet.DialUDP(r.s, nil, &tcpip.FullAddress{NIC: 1, Addr: dst.addr, Port: 9}, dst.proto)
				if err != nil {
					t.Fatal(err)
				}
				for i := range 20 {
					c.Write([]byte(fmt.Sprintf("datagram %d of a checksum test", i)))
				}
				c.Close()
			}
			transferNS(t, r.s, r.veth.NSB, stackAddr6, 1<<20)
			transferNS(t, r.s, r.veth.NSB, stackAddr4, 1<<20)
			out := wait()
			lines := strings.Count(out, "\n")
			sums := strings.Count(out, "cksum")
			bad := strings.Count(out, "incorrect")
			t.Logf("%d lines, %d checksums, %d incorrect; offloads %s", lines, sums, bad, r.ep.Offloads())
			if sums < captureCount/2 {
				t.Errorf("only %d checksums in the decoded capture:\n%.2000s", sums, out)
			}
			if bad != 0 {
				for _, l := range strings.Split(out, "\n") {
					if strings.Contains(l, "incorrect") {
						t.Errorf("%s", l)
						break
					}
				}
				t.Errorf("%d incorrect checksums in what sluice sent", bad)
			}
			// Full-sized TCP segments of both versions, and UDP.
			data := map[string]int{}
			for _, l := range strings.Split(out, "\n") {
				for _, src := range []string{"192.0.2.1.5001 >", "2001:db8::1.5001 >"} {
					var n int
					if i := strings.LastIndex(l, "length "); strings.Contains(l, src) && i >= 0 {
						fmt.Sscanf(l[i:], "length %d", &n)
					}
					if n >= 1000 {
						data[src]++
					}
				}
			}
			if len(data) != 2 || !strings.Contains(out, "UDP") {
				t.Errorf("the capture lacks full-sized segments of each IP version (%v) or UDP:\n%.2000s", data, out)
			}
		})
	}
}
