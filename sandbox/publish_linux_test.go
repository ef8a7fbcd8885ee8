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
