package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/sluicenet/sluice/dataplane"
)

// dispatchScenario runs the dispatch scenario (RunDispatch) in the suite:
// one step per metric, mode and channel count, each measuring both
// implementations side by side on a topology of its own. The modes are
// the AF_PACKET ones and ModeXDP, whose steps are skipped where the kernel
// has no AF_XDP: the xdp figures then sit next to PACKET_MMAP's in the
// same table and chart, which is the comparison that matters for them.
type dispatchScenario struct{}

// dispatchStep is a dispatch Step's Arg.
type dispatchStep struct {
	metric   string
	mode     dataplane.Mode
	channels int
}

// dispatchSetup is a step's cost beyond its measurements: two namespaces,
// a veth pair, sockets and endpoints, about 0.1 s on a 2-vCPU VM (the xdp
// mode adds queues and a program, a little more).
const dispatchSetup = 150 * time.Millisecond

func (dispatchScenario) Name() string { return "dispatch" }

func (dispatchScenario) Description() string {
	return "sluice's fdbased endpoint against gVisor's on AF_PACKET sockets on a veth, per dispatch mode and channel count, " +
		"and in mode xdp sluice's AF_XDP endpoint against gVisor's (which reads one queue, so has no figures for 2 channels): " +
		"64-byte frames/s in (rx_pps) and out (tx_pps), TCP into a netstack sink (tcp_gbps), peak RSS during each (rss_mib)"
}

func (dispatchScenario) Plan(opts SuiteOptions) ([]Step, string) {
	if skip := needNamespaces(); skip != "" {
		return nil, skip
	}
	d := DefaultDispatchOptions()
	if !slices.Contains(d.Modes, ModeXDP) {
		d.Modes = append(d.Modes, ModeXDP)
	}
	if opts.Quick {
		// Every metric and mode, on one channel: the side-by-side
		// figures that matter most, in about a third of the time.
		d.Channels = d.Channels[:1]
	}
	xdpSkip := afXDPSkip()
	perImpl := warmupFor(opts.Duration) + opts.Duration
	var steps []Step
	for _, metric := range d.Metrics {
		for _, mode := range d.Modes {
			for _, ch := range d.Channels {
				cfg := dispatchConfig(mode, ch)
				st := Step{
					Label:    metric + " " + cfg,
					Config:   "metric=" + metric + "," + cfg,
					Estimate: time.Duration(len(d.Impls))*perImpl + dispatchSetup,
					Arg:      dispatchStep{metric: metric, mode: mode, channels: ch},
				}
				if mode == ModeXDP {
					st.Skip = xdpSkip
				}
				steps = append(steps, st)
			}
		}
	}
	return steps, ""
}

func (dispatchScenario) Run(ctx context.Context, opts SuiteOptions, step Step, out *StepOutput) error {
	a, ok := step.Arg.(dispatchStep)
	if !ok {
		return fmt.Errorf("bench: dispatch: step %q has no dispatch arguments", step.Label)
	}
	// Failures come back in err. Progress is read only for the
	// measurements RunDispatch leaves out on purpose (gVisor's xdp
	// endpoint on 2 channels), which become skips with RunDispatch's
	// reason rather than silent gaps.
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if impl, reason, ok := notMeasured(sc.Text()); ok {
				out.Skip(impl, dispatchConfig(a.mode, a.channels), reason)
			}
		}
		io.Copy(io.Discard, pr)
	}()
	rep, err := RunDispatch(ctx, DispatchOptions{
		Duration: opts.Duration,
		Modes:    []dataplane.Mode{a.mode},
		Channels: []int{a.channels},
		Metrics:  []string{a.metric},
		Progress: pw,
	})
	pw.Close()
	<-done
	if rep != nil {
		for _, r := range rep.Rows {
			out.Row(r)
		}
	}
	return err
}

// notMeasured picks the implementation and the reason out of RunDispatch's
// progress line for a measurement left out on purpose:
//
//	bench: dispatch rx_pps mode=xdp,channels=2 impl=gvisor: <reason>: not measured
func notMeasured(line string) (impl, reason string, ok bool) {
	rest, found := strings.CutSuffix(line, ": "+errNotMeasured.Error())
	if !found {
		return "", "", false
	}
	_, rest, found = strings.Cut(rest, " impl=")
	if !found {
		return "", "", false
	}
	impl, reason, found = strings.Cut(rest, ": ")
	return impl, reason, found && impl != ""
}
