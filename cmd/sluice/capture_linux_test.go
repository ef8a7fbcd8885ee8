package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicenet/sluice/capture"
	"github.com/sluicenet/sluice/internal/netns"
	"github.com/sluicenet/sluice/internal/testenv"
)

// These tests run `sluice capture` on a veth pair (quietVeth) while ping
// crosses it: as a subprocess for signals and pipes, through runCapture
// otherwise. Pings are bounded by count, captures by count or a deadline.

// pingAsync pings 192.0.2.2 from v.NSA count times, 50 ms apart.
func pingAsync(t *testing.T, v *testenv.Veth, count string) chan error {
	t.Helper()
	testenv.RequireTool(t, "ping", "nsenter")
	done := make(chan error, 1)
	go func() {
		_, err := testenv.Output("nsenter", "--net="+netns.Path(v.NSA), "--", "ping", "-n", "-q", "-c", count, "-i", "0.05", "-W", "1", "192.0.2.2")
		done <- err
	}()
	return done
}

// fileFrames counts the frames of a capture file with the capture reader.
func fileFrames(t *testing.T, path string) (int, capture.FileInfo) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	fi, err := capture.ReadFile(f, func(*capture.FileRecord) error { n++; return nil })
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return n, fi
}

// TestCaptureSIGINT runs sluice capture as a process, pings through the
// interface and interrupts it: it exits 0 with a summary, and the pcapng
// file is complete (statistics block included) for the capture reader,
// tcpdump and tshark.
func TestCaptureSIGINT(t *testing.T) {
	testenv.RequireTool(t, "tcpdump", "tshark")
	v := quietVeth(t)
	bin := buildSluice(t)
	out := filepath.Join(t.TempDir(), "int.pcapng")
	cmd := exec.Command(bin, "capture", "-i", v.B, "--netns", v.NSB, "-w", out, "--format", "pcapng", "--tstamp-precision", "nano", "icmp")
	var stderr bytes.Buffer
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(pr)
	started := make(chan struct{})
	go func() {
		for sc.Scan() {
			stderr.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "capturing on") {
				close(started)
			}
		}
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatalf("sluice capture did not start:\n%s", stderr.String())
	}
	if err := <-pingAsync(t, v, "5"); err != nil {
		t.Fatalf("ping: %v", err)
	}
	time.Sleep(50 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("sluice capture after SIGINT: %v\n%s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("sluice capture did not exit after SIGINT:\n%s", stderr.String())
	}
	time.Sleep(10 * time.Millisecond) // the scanner goroutine reads the last lines
	n, fi := fileFrames(t, out)
	if n != 10 || !fi.HasStats || fi.Delivered != 10 || !fi.Nano || fi.Filter != "icmp" {
		t.Errorf("file: %d frames, info %+v; want 10 echo requests and replies and a statistics block", n, fi)
	}
	for _, s := range []string{"capture interrupted", "10 frames captured", "10 frames received by filter", "0 frames dropped by kernel"} {
		if !strings.Contains(stderr.String(), s) {
			t.Errorf("summary lacks %q:\n%s", s, stderr.String())
		}
	}
	tb, err := exec.Command("tcpdump", "-nn", "-r", out).CombinedOutput()
	if err != nil || strings.Count(string(tb), "ICMP echo") != 10 {
		t.Errorf("tcpdump -r: %v\n%s", err, tb)
	}
	sb, err := exec.Command("tshark", "-r", out, "-Y", "icmp").Output()
	if err != nil || strings.Count(string(sb), "Echo (ping)") != 10 {
		t.Errorf("tshark -r: %v\n%s", err, sb)
	}
}

// TestCaptureStdoutPipe: -w - | tcpdump -r - shows the frames as they come.
func TestCaptureStdoutPipe(t *testing.T) {
	testenv.RequireTool(t, "tcpdump")
	v := quietVeth(t)
	bin := buildSluice(t)
	sl := exec.Command(bin, "capture", "-i", v.B, "--netns", v.NSB, "-w", "-", "-c", "6", "icmp")
	td := exec.Command("tcpdump", "-nn", "-r", "-")
	pipe, err := sl.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	td.Stdin = pipe
	var tdOut, slErr bytes.Buffer
	td.Stdout, td.Stderr, sl.Stderr = &tdOut, &tdOut, &slErr
	if err := sl.Start(); err != nil {
		t.Fatal(err)
	}
	defer sl.Process.Kill()
	if err := td.Start(); err != nil {
		t.Fatal(err)
	}
	defer td.Process.Kill()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(slErr.String(), "capturing on") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	ping := pingAsync(t, v, "5")
	done := make(chan error, 2)
	go func() { done <- sl.Wait() }()
	go func() { done <- td.Wait() }()
	for range 2 {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("pipeline: %v\nsluice: %s\ntcpdump: %s", err, slErr.String(), tdOut.String())
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("pipeline did not end\nsluice: %s\ntcpdump: %s", slErr.String(), tdOut.String())
		}
	}
	<-ping
	if n := strings.Count(tdOut.String(), "ICMP echo"); n != 6 {
		t.Errorf("tcpdump read %d echo frames, want 6:\n%s", n, tdOut.String())
	}
}

// TestCaptureVerboseCount: -c stops at the count and -v prints one decoded
// line per frame.
func TestCaptureVerboseCount(t *testing.T) {
	testenv.RequireTool(t, "tcpdump")
	v := quietVeth(t)
	out := filepath.Join(t.TempDir(), "v.pcap")
	var stdout, stderr bytes.Buffer
	var ping chan error
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	o := captureOptions{iface: v.B, netns: v.NSB, write: out, count: 4, verbose: true, filter: []string{"icmp"},
		bufferKiB: 1024, channels: 1, ready: func() { ping = pingAsync(t, v, "3") }}
	if err := runCapture(ctx, &stdout, &stderr, o); err != nil {
		t.Fatalf("runCapture: %v\n%s", err, stderr.String())
	}
	<-ping
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 4 || !strings.Contains(lines[0], "In  ch0 IP 192.0.2.1 > 192.0.2.2: ICMP EchoRequest") ||
		!strings.Contains(lines[1], "Out ch0 IP 192.0.2.2 > 192.0.2.1: ICMP EchoReply") {
		t.Errorf("-v printed:\n%s", stdout.String())
	}
	if n, _ := fileFrames(t, out); n != 4 {
		t.Errorf("file holds %d frames, want 4", n)
	}
	if !strings.Contains(stderr.String(), "capture count reached") {
		t.Errorf("summary:\n%s", stderr.String())
	}
}

// TestCaptureFlagErrors: mistakes are reported, naming the flag, before
// anything is captured.
func TestCaptureFlagErrors(t *testing.T) {
	testenv.RequireTool(t, "tcpdump")
	v := quietVeth(t)
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-i", v.B, "--netns", v.NSB, "-w", filepath.Join(dir, "a"), "tcp", "and", "and"}, "invalid filter"},
		{[]string{"-i", v.B, "--netns", v.NSB, "-w", filepath.Join(dir, "b"), "-W", "3"}, "-W 3 needs -C or -G"},
		{[]string{"-i", v.B, "--netns", v.NSB, "-w", filepath.Join(dir, "c"), "--via", "xdp", "-s", "9000"}, "--via xdp"},
		{[]string{"-i", v.B, "--netns", v.NSB, "-w", filepath.Join(dir, "d"), "--via", "readv"}, "--via"},
		{[]string{"-i", v.B, "--netns", v.NSB, "-w", filepath.Join(dir, "e"), "-C", "lots"}, "-C"},
		{[]string{"-i", "nope0", "--netns", v.NSB, "-w", filepath.Join(dir, "f")}, "nope0"},
		{[]string{"-w", filepath.Join(dir, "g")}, "interface"},
	} {
		var out, errb bytes.Buffer
		code := execute(context.Background(), append([]string{"capture"}, c.args...), &out, &errb)
		if code == 0 || !strings.Contains(errb.String(), c.want) {
			t.Errorf("sluice capture %s: exit %d, stderr %q; want an error naming %q", strings.Join(c.args, " "), code, errb.String(), c.want)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("failed captures left files: %v", ents)
	}
}

func TestParseFileSize(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "1": 1_000_000, "250": 250_000_000, "64k": 64 << 10, "10M": 10 << 20, "2g": 2 << 30} {
		if got, err := parseFileSize(in); err != nil || got != want {
			t.Errorf("parseFileSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"x", "-1", "0", "k", "1.5"} {
		if _, err := parseFileSize(bad); err == nil {
			t.Errorf("parseFileSize(%q) accepted", bad)
		}
	}
}
