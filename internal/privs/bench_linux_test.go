package privs

import (
	"encoding/json"
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// benchChildEnv makes the re-executed test binary time system calls
// before and after installing the filter (see BenchmarkFilterCost).
const benchChildEnv = "SLUICE_PRIVS_BENCH_CHILD"

// filterCost is the cost of system calls without and with the filter, in
// ns per call, measured back to back in one process.
type filterCost struct {
	GetppidBefore, GetppidAfter float64
	SendtoBefore, SendtoAfter   float64
}

func timeCalls(n int, fn func()) float64 {
	start := time.Now()
	for range n {
		fn()
	}
	return float64(time.Since(start).Nanoseconds()) / float64(n)
}

func benchChild() int {
	const n = 2_000_000
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 1
	}
	// A datagram to a closed port on loopback: a real network system
	// call, as the data path's sendmmsg is, that never blocks.
	to := &unix.SockaddrInet4{Port: 9, Addr: [4]byte{127, 0, 0, 1}}
	msg := []byte("x")
	getppid := func() { unix.Getppid() }
	sendto := func() { _ = unix.Sendto(fd, msg, unix.MSG_DONTWAIT, to) }
	var c filterCost
	timeCalls(n/10, getppid) // warm up
	c.GetppidBefore = timeCalls(n, getppid)
	c.SendtoBefore = timeCalls(n/10, sendto)
	if _, err := Drop(Options{KeepAllCaps: true, Seccomp: true}); err != nil {
		return 1
	}
	c.GetppidAfter = timeCalls(n, getppid)
	c.SendtoAfter = timeCalls(n/10, sendto)
	_ = json.NewEncoder(os.Stdout).Encode(c)
	return 0
}

// BenchmarkFilterCost reports what the seccomp filter adds to a system
// call the data path makes: a child process times getppid and a UDP sendto
// before and after installing it. The kernel caches the filter's verdict
// for system calls whose verdict does not depend on their arguments (every
// call the data path makes), so the difference should be noise.
func BenchmarkFilterCost(b *testing.B) {
	bin, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		cmd := exec.Command(bin, "-test.run=^$")
		cmd.Env = append(os.Environ(), benchChildEnv+"=1")
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("child: %v\n%s", err, out)
		}
		var c filterCost
		if err := json.Unmarshal(out, &c); err != nil {
			b.Fatalf("child: %v\n%s", err, out)
		}
		b.ReportMetric(c.GetppidBefore, "ns/getppid-before")
		b.ReportMetric(c.GetppidAfter, "ns/getppid-after")
		b.ReportMetric(c.SendtoBefore, "ns/sendto-before")
		b.ReportMetric(c.SendtoAfter, "ns/sendto-after")
	}
}
