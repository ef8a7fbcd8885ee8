package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// captureScenario runs the capture scenario (RunCapture) in the suite: one
// step per CPU placement, capturer and (for sluice) way in, each on a
// topology of its own. sluice's capturer is the running binary, started
// as `sluice capture`; tcpdump and netsniff-ng are skipped, each with the
// package to install, where they are not on PATH.
type captureScenario struct{}

// captureStep is a capture Step's Arg.
type captureStep struct{ cpu, impl, via string }

// captureSetup is a step's cost beyond its window: a topology, a capturer
// process started and waited for, the capture file counted and removed.
const captureSetup = time.Second

func (captureScenario) Name() string { return "capture" }

func (captureScenario) Description() string {
	return "64-byte frames sent across a veth as fast as one pinned thread can, captured by sluice capture (each way in), " +
		"tcpdump and netsniff-ng as processes on a CPU of their own and on the sender's: frames that reached the veth (sent_frames), " +
		"captured (captured_frames), lost (dropped_frames), and the capturer's CPU per frame (cpu_us_per_frame)"
}

func (captureScenario) Plan(opts SuiteOptions) ([]Step, string) {
	if skip := needNamespaces(); skip != "" {
		return nil, skip
	}
	for _, tool := range []string{"nsenter", "taskset"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, tool + " (util-linux) is not on PATH: apt-get install util-linux"
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Sprintf("cannot find the running binary to start as sluice capture: %v", err)
	}
	if strings.HasSuffix(exe, ".test") {
		return nil, "the running binary is a Go test binary, not sluice (it starts itself as sluice capture): run it through the sluice binary"
	}
	cpus, impls, vias := CaptureCPUs, CaptureImpls, CaptureVias
	if opts.Quick {
		// The CPU-starved placement, where capturers differ, with
		// sluice's default way in against tcpdump.
		cpus, impls, vias = []string{CPUShared}, []string{ImplSluice, ImplTcpdump}, []string{"mmap"}
	}
	xdpSkip := afXDPSkip()
	var steps []Step
	for _, cpu := range cpus {
		for _, impl := range impls {
			vs := []string{"mmap"} // tcpdump and netsniff-ng read a PACKET_MMAP ring
			if impl == ImplSluice {
				vs = vias
			}
			for _, via := range vs {
				st := Step{
					Label:    captureConfig(via, cpu) + " impl=" + impl,
					Config:   captureConfig(via, cpu) + ",impl=" + impl,
					Estimate: warmupFor(opts.Duration) + opts.Duration + captureSetup,
					Arg:      captureStep{cpu: cpu, impl: impl, via: via},
				}
				switch {
				case cpu == CPUSeparate && runtime.NumCPU() < 2:
					st.Skip = fmt.Sprintf("cpu=separate needs 2 CPUs, this machine has %d", runtime.NumCPU())
				case impl != ImplSluice:
					if _, err := exec.LookPath(impl); err != nil {
						st.Skip = impl + " is not on PATH: apt-get install " + impl
					}
				case via == "xdp":
					st.Skip = xdpSkip
				}
				steps = append(steps, st)
			}
		}
	}
	return steps, ""
}

func (captureScenario) Run(ctx context.Context, opts SuiteOptions, step Step, out *StepOutput) error {
	s, ok := step.Arg.(captureStep)
	if !ok {
		return fmt.Errorf("bench: capture: step %q has no capture configuration", step.Label)
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bench: capture: find sluice's executable: %w", err)
	}
	rep, err := RunCapture(ctx, CaptureOptions{
		Duration: opts.Duration,
		Vias:     []string{s.via},
		Impls:    []string{s.impl},
		CPUs:     []string{s.cpu},
		Sluice:   exe,
	})
	if rep != nil {
		for _, r := range rep.Rows {
			out.Row(r)
		}
	}
	return err
}
