package sandbox_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicenet/sluice/internal/testenv"
)

// TestPublish runs an HTTP server and a UDP echo server in the sandbox and
// reaches them from the uplink namespace through --publish: curl for TCP, a
// UDP client for UDP. A published port already in use fails before the
// command starts.
func TestPublish(t *testing.T) {
	testenv.RequireTool(t, "curl")
	testenv.RequireTool(t, "python3")
	ns := serverNS(t)
	dir := t.TempDir()
	done := filepath.Join(dir, "done")
	os.WriteFile(filepath.Join(dir, "index.html"), []byte("hello from the sandbox\n"), 0o644)
	script := `cd ` + dir + ` && python3 -m http.server 8080 >/dev/null 2>&1 &
python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5353))
while True:
    d, a = s.recvfrom(2048)
    s.sendto(d.upper(), a)
' &
i=0; while [ ! -e ` + done + ` ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done`
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, sluiceBin, "run", "--uplink-netns", ns, "--publish", "127.0.0.1:18080:8080",
		"--publish", "127.0.0.1:15353:5353/udp", "--", "sh", "-c", script)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		os.WriteFile(done, nil, 0o644)
		if err := cmd.Wait(); err != nil {
			t.Errorf("sluice: %v\nstderr: %s", err, stderr.String())
		}
	}()

	// curl from the uplink namespace, retried while the server starts.
	var out []byte
	for i := 0; i < 100; i++ {
		var err error
		out, err = exec.Command("ip", "netns", "exec", ns, "curl", "-sS", "--max-time", "5", "http://127.0.0.1:18080/index.html").CombinedOutput()
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if string(out) != "hello from the sandbox\n" {
		t.Errorf("curl through --publish: %q", out)
	}

	// A UDP client, from the uplink namespace.
	var got string
	testenv.Do(t, ns, func() error {
		c, err := net.Dial("udp", "127.0.0.1:15353")
		if err != nil {
			return err
		}
		defer c.Close()
		buf := make([]byte, 100)
		for i := 0; i < 50 && got == ""; i++ {
			_, _ = c.Write([]byte("ping"))
			_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if n, err := c.Read(buf); err == nil {
				got = string(buf[:n])
			}
		}
		return nil
	})
	if got != "PING" {
		t.Errorf("UDP through --publish: got %q, want PING", got)
	}
}

// TestPublishPortInUse checks that a host port already taken fails the run
// before the command starts, and that malformed values are refused.
func TestPublishPortInUse(t *testing.T) {
	ns := serverNS(t)
	testenv.Do(t, ns, func() error {
		l, err := net.Listen("tcp", "127.0.0.1:18081")
		if err == nil {
			t.Cleanup(func() { l.Close() })
		}
		return err
	})
	marker := filepath.Join(t.TempDir(), "ran")
	r := runSluice(t, "run", "--uplink-netns", ns, "--publish", "127.0.0.1:18081:80", "--", "touch", marker)
	if r.code == 0 || !strings.Contains(r.stderr, "--publish") || !strings.Contains(r.stderr, "address already in use") {
		t.Errorf("port in use: exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Errorf("the command ran although --publish failed")
	}
	for _, bad := range []string{"80", "8080:80/sctp", "x:1:2"} {
		r := runSluice(t, "run", "--uplink-netns", ns, "--publish", bad, "--", "true")
		if r.code == 0 || !strings.Contains(r.stderr, "--publish") {
			t.Errorf("--publish %s: exit %d, stderr %q", bad, r.code, r.stderr)
		}
	}
}

// peerServer is a server for the sandbox that answers each TCP connection
// (as HTTP) and each UDP datagram with the peer's address as it sees it,
// on dual-stack sockets.
const peerServer = `import socket, sys, threading
def peer(a):
    return a[0][7:] if a[0].startswith("::ffff:") else a[0]
def tcp():
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", int(sys.argv[1])))
    s.listen(16)
    while True:
        c, a = s.accept()
        c.recv(4096)
        body = peer(a) + "\n"
        c.sendall(("HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)).encode())
        c.close()
threading.Thread(target=tcp, daemon=True).start()
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
u.bind(("::", int(sys.argv[2])))
while True:
    d, a = u.recvfrom(2048)
    u.sendto(peer(a).encode(), a)
`

// TestPublishClientAddress publishes a TCP and a UDP port on the default
// dual-stack host address and reaches them from the uplink namespace over
// IPv4 and IPv6 (curl -g 'http://[fd99::1]:PORT/'): the server in the
// sandbox sees the client's own address, and the gateway's for a loopback
// client, which it could not answer.
func TestPublishClientAddress(t *testing.T) {
	testenv.RequireTool(t, "curl")
	testenv.RequireTool(t, "python3")
	ns := serverNS(t)
	dir := t.TempDir()
	done := filepath.Join(dir, "done")
	server := filepath.Join(dir, "peer.py")
	if err := os.WriteFile(server, []byte(peerServer), 0o644); err != nil {
		t.Fatal(err)
	}
	script := `python3 ` + server + ` 8080 5353 &
i=0; while [ ! -e ` + done + ` ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done`
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, sluiceBin, "run", "--uplink-netns", ns, "--publish", "18090:8080",
		"--publish", "18091:5353/udp", "--", "sh", "-c", script)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		os.WriteFile(done, nil, 0o644)
		if err := cmd.Wait(); err != nil {
			t.Errorf("sluice: %v\nstderr: %s", err, stderr.String())
		}
	}()

	for _, tc := range []struct{ url, want string }{
		{"http://10.99.0.1:18090/", "10.99.0.1"},
		{"http://[fd99::1]:18090/", "fd99::1"},
		{"http://127.0.0.1:18090/", "10.0.2.2"}, // loopback: the gateway
		{"http://[::1]:18090/", "fd00:51ce::2"}, // loopback: the gateway
	} {
		var out []byte
		var err error
		for i := 0; i < 100; i++ { // while the server starts
			out, err = exec.Command("ip", "netns", "exec", ns, "curl", "-gsS", "--max-time", "5", tc.url).CombinedOutput()
			if err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if got := strings.TrimSpace(string(out)); got != tc.want {
			t.Errorf("curl %s: the sandbox saw the peer %q (%v), want %q", tc.url, got, err, tc.want)
		}
	}

	for _, tc := range []struct{ addr, want string }{
		{"10.99.0.1:18091", "10.99.0.1"},
		{"[fd99::1]:18091", "fd99::1"},
		{"127.0.0.1:18091", "10.0.2.2"},
	} {
		var got string
		testenv.Do(t, ns, func() error {
			c, err := net.Dial("udp", tc.addr)
			if err != nil {
				return err
			}
			defer c.Close()
			buf := make([]byte, 100)
			for i := 0; i < 50 && got == ""; i++ {
				_, _ = c.Write([]byte("who"))
				_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				if n, err := c.Read(buf); err == nil {
					got = string(buf[:n])
				}
			}
			return nil
		})
		if got != tc.want {
			t.Errorf("UDP to %s: the sandbox saw the peer %q, want %q", tc.addr, got, tc.want)
		}
	}
}
