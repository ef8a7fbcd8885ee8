package bench

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Every peer the bench starts (pasta, slirp4netns, iperf3, tcpdump,
// netsniff-ng, sluice run, sluice capture) is the leader of a process
// group of its own, and is stopped by signalling the whole group:
//
//   - Waiting for the process the bench started is not enough. pasta
//     forks the command it runs and exits on SIGTERM without passing the
//     signal on, leaving the command (an iperf3 client, say) running for
//     as long as its own timer says.
//   - A ^C at a terminal goes to the foreground process group. Peers in
//     groups of their own do not see it, so the bench alone decides when
//     and in which order they stop, after it has said what it kept.
//
// A member of the group may have left it (setsid) or a peer may start
// processes in groups of their own (sluice run's command and guard): those
// are the peer's to stop, and sluice run does so when it gets SIGTERM.

const (
	// groupGrace is how long a group has between SIGTERM and SIGKILL:
	// sluice run tears its sandbox down in well under a second, and an
	// iperf3 client sends its last report.
	groupGrace = 5 * time.Second
	// groupReap bounds the wait for a group to be gone after SIGKILL.
	// Only a process stuck in the kernel outlasts it.
	groupReap = 5 * time.Second
)

// procGroup is a started peer: the leader of a process group of its own.
type procGroup struct {
	cmd    *exec.Cmd
	pgid   int
	exited chan struct{} // closed once the leader has been waited for
	err    error         // cmd.Wait's result, set before exited closes
}

// startGroup starts cmd as the leader of a new process group with a
// parent-death signal (SIGKILL unless cmd asks for another), so that it
// dies with the bench even when the bench is killed. Pdeathsig fires when the thread that forked the child ends, not
// the process (prctl(2)), so the fork happens on a locked thread that
// lives until the leader has been waited for.
func startGroup(cmd *exec.Cmd) (*procGroup, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pgid = 0
	if cmd.SysProcAttr.Pdeathsig == 0 {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if cmd.WaitDelay == 0 {
		// A process outside the group may hold the leader's output
		// pipes (sluice run's command): don't wait on them for ever.
		cmd.WaitDelay = groupGrace
	}
	g := &procGroup{cmd: cmd, exited: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		g.pgid = cmd.Process.Pid
		started <- nil
		g.err = cmd.Wait()
		close(g.exited)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return g, nil
}

// Exited is closed once the leader has exited and been waited for.
func (g *procGroup) Exited() <-chan struct{} { return g.exited }

// Err is the leader's exit error (exec.Cmd.Wait's); valid once Exited is
// closed.
func (g *procGroup) Err() error { return g.err }

// Signal sends sig to every process of the group. A group already gone is
// not an error.
func (g *procGroup) Signal(sig syscall.Signal) error {
	if err := syscall.Kill(-g.pgid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal process group %d: %w", g.pgid, err)
	}
	return nil
}

// Stop ends the group and waits for it: SIGTERM to every member, SIGKILL
// to the group if anything of it is left after grace, and then until the
// leader has been waited for and no member is left. It returns an error
// naming what is left after that, which only a process stuck in the
// kernel can be. Stop after the leader exited by itself still ends what
// it left in the group.
func (g *procGroup) Stop(grace time.Duration) error {
	if err := g.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	if g.waitGone(grace) {
		return nil
	}
	if err := g.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	if g.waitGone(groupReap) {
		return nil
	}
	return fmt.Errorf("process group %d (%s) is still there %v after SIGKILL: %s",
		g.pgid, filepath.Base(g.cmd.Path), groupReap, describeProcs(groupMembers(g.pgid)))
}

// waitGone waits up to limit for the leader to be waited for and for the
// group to have no live member.
func (g *procGroup) waitGone(limit time.Duration) bool {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	select {
	case <-g.exited:
	case <-deadline.C:
		return false
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for len(groupMembers(g.pgid)) > 0 {
		select {
		case <-tick.C:
		case <-deadline.C:
			return false
		}
	}
	return true
}

// groupMembers lists the live processes of process group pgid, from
// /proc. Zombies are left out: they hold nothing but a pid, and the
// orphans among them are reaped by init, not by the bench.
func groupMembers(pgid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		state, _, pg, ok := procStat(pid)
		if ok && pg == pgid && state != 'Z' && state != 'X' {
			out = append(out, pid)
		}
	}
	return out
}

// procStat reads the state, parent and process group of pid from
// /proc/pid/stat.
func procStat(pid int) (state byte, ppid, pgid int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, 0, false
	}
	// "pid (comm) state ppid pgrp ...": comm may hold spaces and ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 3 || len(f[0]) != 1 {
		return 0, 0, 0, false
	}
	ppid, err1 := strconv.Atoi(f[1])
	pgid, err2 := strconv.Atoi(f[2])
	if err1 != nil || err2 != nil {
		return 0, 0, 0, false
	}
	return f[0][0], ppid, pgid, true
}

// describeProcs names pids with their command names, for errors.
func describeProcs(pids []int) string {
	var s []string
	for _, p := range pids {
		comm, _ := os.ReadFile("/proc/" + strconv.Itoa(p) + "/comm")
		s = append(s, fmt.Sprintf("%d (%s)", p, strings.TrimSpace(string(comm))))
	}
	return strings.Join(s, ", ")
}
