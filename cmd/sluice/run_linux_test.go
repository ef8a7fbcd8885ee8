package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicenet/sluice/internal/testenv"
)

func TestRunInProcess(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want int
		err  string // in stderr (or stdout, where --help goes)
	}{
		// --network host needs no re-executed init, so execute runs it
		// in the test binary.
		{"exit status", []string{"run", "--network=host", "--", "sh", "-c", "exit 5"}, 5, ""},
		{"signal status", []string{"run", "--network=host", "--", "sh", "-c", "kill -INT $$"}, 130, ""},
		{"bad flag", []string{"run", "--qdisc=red", "--", "true"}, 1, `"red"`},
		{"no command", []string{"run"}, 1, "requires at least 1 arg"},
		{"not implemented", []string{"run", "--buffer-pooling=false", "--", "true"}, 1, "--buffer-pooling=false"},
		{"xdp mtu too large", []string{"run", "--xdp=ns", "--mtu=9000", "--", "true"}, 1, "--mtu 9000: with --xdp ns"},
		{"uplink flag in demo", []string{"demo", "--uplink-netns=x"}, 1, "--uplink-netns"},
		{"plugin without its network", []string{"run", "--plugin=netstack", "--", "true"}, 1, "--plugin netstack needs --network plugin"},
		{"plugin network without a plugin", []string{"run", "--network=plugin", "--", "true"}, 1, "--network plugin needs --plugin NAME (registered: bridge, netstack"},
		{"help lists the stacks", []string{"run", "--help"}, 0, "Registered stacks: bridge, netstack"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			got := execute(context.Background(), tc.args, &stdout, &stderr)
			if got != tc.want {
				t.Errorf("execute(%q) = %d, want %d; stderr: %s", tc.args, got, tc.want, stderr.String())
			}
			if tc.err != "" && !strings.Contains(stderr.String()+stdout.String(), tc.err) {
				t.Errorf("stderr %q (stdout %q) lacks %q", stderr.String(), stdout.String(), tc.err)
			}
		})
	}
}

// TestDemo runs `sluice demo` with a small transfer: every check verified,
// and the namespace it made is gone afterwards.
func TestDemo(t *testing.T) {
	testenv.RequireRoot(t)
	// The demo's client is sluice re-executed: it needs the real binary
	// (buildSluice, shared with the xdp tests).
	bin := buildSluice(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "demo", "--size", "5000000")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("sluice demo: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	out := stdout.String()
	if n := strings.Count(out, " verified"); n != 3 {
		t.Errorf("demo verified %d of 3 checks:\n%s", n, out)
	}
	for _, want := range []string{"download  5000000 bytes", "sink received 5000000 bytes", "sluice0", "cleaned up"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	ns := ""
	for _, f := range strings.Fields(out) {
		if strings.HasPrefix(f, "sluice-demo-") {
			ns = strings.TrimSuffix(f, ":")
			break
		}
	}
	if ns == "" {
		t.Fatalf("demo output names no namespace:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join("/var/run/netns", ns)); err == nil {
		t.Errorf("namespace %s is still there", ns)
	}
}
