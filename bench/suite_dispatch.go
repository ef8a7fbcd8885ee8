package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/sluicenet/sluice/dataplane"
)

// dispatchScenario runs the dispatch scenario (RunDispatch) in the suite:
// one step per metric, mode and channel count, each measuring both
// implementations side by side on a topology of its own.
type dispatchScenario struct{}

// dispatchStep is a dispatch Step's Arg.
type dispatchStep struct {
	metric   string
	mode     dataplane.Mode
	channels int
}

// dispatchSetup is a step's cost beyond its measurements: two namespaces,
// a veth pair, sockets and endpoints, about 0.1 s on a 2-vCPU VM.
const dispatchSetup = 150 * time.Millisecond

func (dispatchScenario) Name() string { return "dispatch" }

func (dispatchScenario) Description() string {
	return "sluice's fdbased endpoint against gVisor's on AF_PACKET sockets on a veth, per dispatch mode and channel count: " +
		"64-byte frames/s in (rx_pps) and out (tx_pps), TCP into a netstack sink (tcp_gbps), peak RSS during each (rss_mib)"
}

func (dispatchScenario) Plan(opts SuiteOptions) ([]Step, string) {
	if skip := needNamespaces(); skip != "" {
		return nil, skip
	}
	d := DefaultDispatchOptions()
	if opts.Quick {
		// Every metric and mode, on one channel: the side-by-side
		// figures that matter most, in about a third of the time.
		d.Channels = d.Channels[:1]
	}
	perImpl := warmupFor(opts.Duration) + opts.Duration
	var steps []Step
	for _, metric := range d.Metrics {
		for _, mode := range d.Modes {
			for _, ch := range d.Channels {
				cfg := dispatchConfig(mode, ch)
				steps = append(steps, Step{
					Label:    metric + " " + cfg,
					Config:   "metric=" + metric + "," + cfg,
					Estimate: time.Duration(len(d.Impls))*perImpl + dispatchSetup,
					Arg:      dispatchStep{metric: metric, mode: mode, channels: ch},
				})
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
	rep, err := RunDispatch(ctx, DispatchOptions{
		Duration: opts.Duration,
		Modes:    []dataplane.Mode{a.mode},
		Channels: []int{a.channels},
		Metrics:  []string{a.metric},
		// Failures come back in err, and progress is the suite's.
	})
	if rep != nil {
		for _, r := range rep.Rows {
			out.Row(r)
		}
	}
	return err
}
