package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sluicenet/sluice/internal/syncbuf"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/capture"
	"github.com/sluicenet/sluice/internal/netns"
)

const (
	// captureSettle is how long the capture keeps running after the sender
	// stopped: tcpdump's ring hands over a partly filled block only after
	// libpcap's 1000 ms timeout, and a capturer that is interrupted before
	// reads what the kernel accepted, but not what it never got.
	captureSettle = 1500 * time.Millisecond
	// captureStartTimeout bounds a capturer's start (netsniff-ng spends
	// seconds allocating its ring).
	captureStartTimeout = 30 * time.Second
	// captureIdlePolls: a capturer is ready when it printed its ready line
	// and then used no CPU for this many 100 ms polls in a row.
	captureIdlePolls = 3
	// clockTicks is USER_HZ, the unit of /proc/PID/stat times: 100 on
	// every Linux architecture sluice runs on.
	clockTicks = 100
	// senderCPU is the CPU the sender is pinned to; "separate" capturers
	// get captureCPU.
	senderCPU  = 0
	captureCPU = 1
)

// captureDstMAC is the benchmark frames' destination: nobody's, so the
// capturing veth sees PACKET_OTHERHOST frames and its kernel drops them
// right after the taps, at the least cost.
var captureDstMAC = net.HardwareAddr{0x02, 0x53, 0x4c, 0x00, 0x00, 0x0c}

// RunCapture runs the capture scenario (see the package doc): for each CPU
// placement, each way in of sluice's, and tcpdump and netsniff-ng, 64-byte
// frames are sent as fast as one pinned thread can across the veth for the
// window, captured on va by the capturer running as a process of its own,
// and counted. A measurement that fails is reported on Progress and in the
// returned error, and the others still run. The topology and capture files
// are removed in every case.
func RunCapture(ctx context.Context, opts CaptureOptions) (*Report, error) {
	opts = opts.withDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("bench: capture %w", ErrNeedRoot)
	}
	if runtime.NumCPU() < 2 && slices.Contains(opts.CPUs, CPUSeparate) {
		return nil, fmt.Errorf("bench: capture: cpu=separate needs 2 CPUs, this machine has %d: use --cpus shared", runtime.NumCPU())
	}
	for _, tool := range []string{"nsenter", "taskset"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("bench: capture needs %s (util-linux) on PATH", tool)
		}
	}
	var impls []string
	for _, impl := range opts.Impls {
		if impl != ImplSluice {
			if _, err := exec.LookPath(impl); err != nil {
				fmt.Fprintf(opts.Progress, "bench: capture: %s is not on PATH, not measured (apt-get install %s)\n", impl, map[string]string{ImplTcpdump: "tcpdump", ImplNetsniffNG: "netsniff-ng"}[impl])
				continue
			}
		}
		impls = append(impls, impl)
	}
	dir := opts.Dir
	if dir == "" {
		dir = os.TempDir()
	}
	topo, err := newTopology(topologyOptions{})
	if err != nil {
		return nil, err
	}
	defer topo.close()

	frames := make([][]byte, numFlows)
	for i := range frames {
		frames[i] = udpFrame(macB, captureDstMAC, kernelAddr, stackAddr, uint16(srcPortBase+i), discardPort)
	}
	var runs []captureRun
	for _, cpu := range opts.CPUs {
		for _, impl := range impls {
			vias := []string{"mmap"}
			if impl == ImplSluice {
				vias = opts.Vias
			}
			for _, via := range vias {
				runs = append(runs, captureRun{impl: impl, via: via, cpu: cpu, window: opts.Duration})
			}
		}
	}
	// Rounds run every measurement in turn, so that a burst of load from
	// elsewhere hits one round of each rather than every round of one.
	results := make([][]captureResult, len(runs))
	var errs []error
	for round := range opts.Rounds {
		for i, m := range runs {
			if err := ctx.Err(); err != nil {
				return captureReport(runs, results), fmt.Errorf("bench: capture: %w", err)
			}
			res, err := measureCapture(ctx, topo, opts, m, frames, dir)
			name := fmt.Sprintf("%s impl=%s", captureConfig(m.via, m.cpu), m.impl)
			if opts.Rounds > 1 {
				name += fmt.Sprintf(" round %d", round+1)
			}
			if err != nil {
				if ctx.Err() != nil {
					return captureReport(runs, results), fmt.Errorf("bench: capture: %w", ctx.Err())
				}
				fmt.Fprintf(opts.Progress, "bench: capture %s: %v\n", name, err)
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				continue
			}
			results[i] = append(results[i], res)
			fmt.Fprintf(opts.Progress, "bench: capture %s: %d frames reached va (sender sent %d), %d captured, %d lost, %.3f us CPU/frame (%.2f s while capturing, %.2f s in all); other processes used %.2f CPUs meanwhile\n",
				name, res.sent, res.senderSent, res.captured, res.dropped(), res.cpuPerFrame(), res.cpu.Seconds(), res.cpuTotal.Seconds(), res.otherLoad)
			// The capturer's own last words (its drop count).
			fmt.Fprintf(opts.Progress, "  %s\n", strings.ReplaceAll(res.tail, "\n", "\n  "))
		}
	}
	return captureReport(runs, results), errors.Join(errs...)
}

// captureArgv returns the capturer's command line, writing to file.
func captureArgv(opts CaptureOptions, m captureRun, file string) []string {
	switch m.impl {
	case ImplSluice:
		return []string{opts.Sluice, "capture", "-i", ifA, "-w", file, "--via", m.via}
	case ImplTcpdump:
		// -Z root: Debian's tcpdump otherwise switches to the tcpdump
		// user, which sluice does not do either.
		return []string{"tcpdump", "-i", ifA, "-w", file, "-n", "-Z", "root"}
	case ImplNetsniffNG:
		// -A and -Q keep it from changing the machine: core socket
		// memory sysctls and IRQ affinities.
		return []string{"netsniff-ng", "--in", ifA, "--out", file, "--silent", "-A", "-Q"}
	}
	return nil
}

// readyLine is what each capturer prints once its socket is open.
func readyLine(impl string) string {
	switch impl {
	case ImplSluice:
		return "capturing on"
	case ImplTcpdump:
		return "listening on"
	}
	return "Running!"
}

// measureCapture runs one capturer while the sender sends.
func measureCapture(ctx context.Context, topo *topology, opts CaptureOptions, m captureRun, frames [][]byte, dir string) (res captureResult, err error) {
	file := filepath.Join(dir, fmt.Sprintf("slb-capture-%d-%s-%s-%s.pcap", os.Getpid(), m.impl, m.via, m.cpu))
	defer os.Remove(file)
	cpu := captureCPU
	if m.cpu == CPUShared {
		cpu = senderCPU
	}
	// nsenter and taskset exec the capturer (no fork), so the process
	// waited for, and its rusage, is the capturer's own.
	argv := append([]string{"--net=" + netns.Path(topo.nsA), "--", "taskset", "-c", strconv.Itoa(cpu)}, captureArgv(opts, m, file)...)
	cmd := exec.Command("nsenter", argv...)
	var out syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	g, err := startGroup(cmd)
	if err != nil {
		return res, fmt.Errorf("start %s: %w", m.impl, err)
	}
	exited := make(chan error, 1)
	go func() { <-g.Exited(); exited <- g.Err() }()
	// Also after a clean exit: nothing of the capturer's group may
	// outlive the measurement.
	defer func() {
		if serr := g.Stop(groupGrace); serr != nil && err == nil {
			err = fmt.Errorf("stop %s: %w", m.impl, serr)
		}
	}()
	base, err := waitCapturerReady(ctx, cmd.Process.Pid, readyLine(m.impl), &out, exited)
	if err != nil {
		return res, fmt.Errorf("%w\n%s", err, lastLines(out.String(), 5))
	}
	rx0, err := rxPackets(topo, ifA)
	if err != nil {
		return res, err
	}
	busy0, _ := machineBusy()
	self0 := selfCPU()
	capt0, _ := procCPU(cmd.Process.Pid)
	t0 := time.Now()

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg      sync.WaitGroup
		sendErr error
	)
	deadline := time.Now().Add(m.window)
	wg.Go(func() {
		res.senderSent, sendErr = sendPinned(sctx, topo, frames, deadline, uint64(m.window.Seconds()*maxPPS)+uint64(len(frames)))
	})
	if err := waitTimeout(&wg, m.window+stopGrace); err != nil {
		return res, err
	}
	if sendErr != nil {
		return res, sendErr
	}
	if busy1, err := machineBusy(); err == nil && busy0 > 0 {
		capt1, _ := procCPU(cmd.Process.Pid)
		other := busy1 - busy0 - (selfCPU() - self0) - (capt1 - capt0)
		res.otherLoad = max(0, other.Seconds()/time.Since(t0).Seconds())
	}
	select {
	case <-time.After(captureSettle):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	rx1, err := rxPackets(topo, ifA)
	if err != nil {
		return res, err
	}
	res.sent = rx1 - rx0
	_ = g.Signal(syscall.SIGINT)
	select {
	case err = <-exited:
	case <-time.After(30 * time.Second):
		return res, fmt.Errorf("%s did not exit within 30 s of SIGINT\n%s", m.impl, lastLines(out.String(), 5))
	}
	res.tail = lastLines(out.String(), 4)
	if err != nil {
		return res, fmt.Errorf("%s: %w\n%s", m.impl, err, res.tail)
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return res, errors.New("no rusage for the capturer")
	}
	res.cpuTotal = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	res.cpu = max(0, res.cpuTotal-base)
	if res.captured, err = countCaptured(file); err != nil {
		return res, fmt.Errorf("read %s's file: %w", m.impl, err)
	}
	return res, nil
}

var errExited = errors.New("capturer exited before it was ready")

// waitCapturerReady waits until the capturer printed marker and then stayed
// idle for a while (its ring is set up), and returns the CPU time it used
// until then, which the measurement leaves out.
func waitCapturerReady(ctx context.Context, pid int, marker string, out *syncbuf.Buffer, exited chan error) (time.Duration, error) {
	deadline := time.Now().Add(captureStartTimeout)
	idle := 0
	last := time.Duration(-1)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			exited <- err
			return 0, errExited
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if !strings.Contains(out.String(), marker) {
			continue
		}
		cpu, err := procCPU(pid)
		if err != nil {
			return 0, err
		}
		if cpu == last {
			idle++
		} else {
			idle = 0
		}
		last = cpu
		if idle >= captureIdlePolls {
			return cpu, nil
		}
	}
	return 0, fmt.Errorf("capturer not ready within %v", captureStartTimeout)
}

// procCPU returns a process's user+sys time from /proc/PID/stat (fields 14
// and 15, in clock ticks), all its threads included.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name is in parentheses and may hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat times", pid)
	}
	return time.Duration(u+st) * time.Second / clockTicks, nil
}

// machineBusy returns the time every CPU spent busy since boot, from the
// first line of /proc/stat (all but idle and iowait, in clock ticks).
func machineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, errors.New("parse /proc/stat")
	}
	var busy int64
	for i, x := range f[1:min(len(f), 9)] {
		v, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			return 0, errors.New("parse /proc/stat")
		}
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return time.Duration(busy) * time.Second / clockTicks, nil
}

// selfCPU returns this process's user+sys time.
func selfCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// sendPinned runs the frame sender on a thread pinned to senderCPU.
func sendPinned(ctx context.Context, topo *topology, frames [][]byte, deadline time.Time, maxFrames uint64) (uint64, error) {
	snd, err := newFrameSender(topo.nsB, topo.ifindexB, frames)
	if err != nil {
		return 0, err
	}
	defer snd.close()
	// The thread keeps its affinity, so it is never unlocked: the
	// runtime drops it when this goroutine ends.
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(senderCPU)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return 0, fmt.Errorf("bench: pin the sender to CPU %d: %w", senderCPU, os.NewSyscallError("sched_setaffinity", err))
	}
	return snd.run(ctx, deadline, maxFrames)
}

// rxPackets reads an interface's rx_packets in nsA.
func rxPackets(topo *topology, ifname string) (uint64, error) {
	l, err := topo.hA.LinkByName(ifname)
	if err != nil {
		return 0, fmt.Errorf("bench: read %s counters: %w", ifname, err)
	}
	if l.Attrs().Statistics == nil {
		return 0, fmt.Errorf("bench: read %s counters: no statistics", ifname)
	}
	return l.Attrs().Statistics.RxPackets, nil
}

// countCaptured counts the benchmark's frames in a capture file.
func countCaptured(file string) (uint64, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n uint64
	_, err = capture.ReadFile(f, func(r *capture.FileRecord) error {
		if len(r.Data) >= 6 && bytes.Equal(r.Data[:6], captureDstMAC) {
			n++
		}
		return nil
	})
	return n, err
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
