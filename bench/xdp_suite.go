package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sluicenet/sluice/dataplane"
)

// xdpScenario runs the dispatch figures over AF_XDP in the suite: one step
// per metric and channel count, each measuring on a topology of its own
// sluice's AF_XDP endpoint ("sluice"), gVisor's ("gvisor", one channel
// only) and, for the AF_XDP against AF_PACKET question, sluice's
// PACKET_MMAP endpoint ("sluice-mmap"), so that the summary's ratios of
// sluice to each peer are xdp/gvisor-xdp and xdp/mmap.
type xdpScenario struct{}

// xdpStep is an xdp Step's Arg.
type xdpStep struct {
	metric   string
	channels int
}

// ImplSluiceMMap names sluice's PACKET_MMAP endpoint in the xdp scenario,
// where "sluice" is its AF_XDP endpoint.
const ImplSluiceMMap = "sluice-mmap"

// xdpSetup is a step's cost beyond its measurements: two topologies, XDP
// attach and detach, and the kernel's release of the sockets' queues.
const xdpSetup = 500 * time.Millisecond

func (xdpScenario) Name() string { return "xdp" }

func (xdpScenario) Description() string {
	return "sluice's AF_XDP endpoint (copy mode, redirect program on a veth) against gVisor's AF_XDP endpoint and against sluice's PACKET_MMAP endpoint, " +
		"per channel count: 64-byte frames/s in (rx_pps) and out (tx_pps), TCP into a netstack sink (tcp_gbps), peak RSS during each (rss_mib)"
}

func (xdpScenario) Plan(opts SuiteOptions) ([]Step, string) {
	if skip := needNamespaces(); skip != "" {
		return nil, skip
	}
	channels := []int{1, 2}
	if opts.Quick {
		channels = channels[:1]
	}
	perImpl := warmupFor(opts.Duration) + opts.Duration
	var steps []Step
	for _, metric := range DispatchMetrics {
		for _, ch := range channels {
			impls := 3
			if ch > 1 {
				impls = 2 // gVisor's endpoint reads one queue
			}
			cfg := fmt.Sprintf("channels=%d", ch)
			steps = append(steps, Step{
				Label:    metric + " " + cfg,
				Config:   "metric=" + metric + "," + cfg,
				Estimate: time.Duration(impls)*perImpl + xdpSetup,
				Arg:      xdpStep{metric: metric, channels: ch},
			})
		}
	}
	return steps, ""
}

func (xdpScenario) Run(ctx context.Context, opts SuiteOptions, step Step, out *StepOutput) error {
	a, ok := step.Arg.(xdpStep)
	if !ok {
		return fmt.Errorf("bench: xdp: step %q has no xdp arguments", step.Label)
	}
	var progress strings.Builder
	var errs []error
	for _, run := range []struct {
		mode  dataplane.Mode
		impls []string
	}{
		{ModeXDP, []string{ImplSluice, ImplGVisor}},
		{dataplane.PacketMMap, []string{ImplSluice}},
	} {
		if err := ctx.Err(); err != nil {
			return err
		}
		rep, err := RunDispatch(ctx, DispatchOptions{
			Duration: opts.Duration,
			Modes:    []dataplane.Mode{run.mode},
			Channels: []int{a.channels},
			Metrics:  []string{a.metric},
			Impls:    run.impls,
			Progress: &progress,
		})
		if rep != nil {
			for _, r := range rep.Rows {
				r.Scenario = "xdp"
				r.Config = fmt.Sprintf("channels=%d", a.channels)
				if run.mode == dataplane.PacketMMap {
					r.Impl = ImplSluiceMMap
				}
				out.Row(r)
			}
		}
		errs = append(errs, err)
	}
	if strings.Contains(progress.String(), errNotMeasured.Error()) {
		out.Skip(ImplGVisor, fmt.Sprintf("channels=%d", a.channels), "gVisor's xdp endpoint reads a single rx queue")
	}
	return errors.Join(errs...)
}
