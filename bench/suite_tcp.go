package bench

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/sluicenet/sluice/dataplane"
)

// tcpScenario runs the tcp scenario (RunTCP) in the suite: one step per
// configuration of DefaultTCPOptions, each measuring both implementations
// on a topology of its own, with the throughput of every 100 ms of each
// window passed on as samples for the report's plots over time.
type tcpScenario struct{}

// tcpSetup is a tcp step's cost beyond its windows: namespaces, a veth,
// IPv6 addresses, peer TSO set, connections opened and checked.
const tcpSetup = 300 * time.Millisecond

func (tcpScenario) Name() string { return ScenarioTCP }

func (tcpScenario) Description() string {
	return "TCP throughput between a netstack on sluice's fdbased endpoint and a kernel peer across a veth, against gVisor's endpoint, " +
		"per GSO kind, GRO, dispatch mode, flows, direction and peer TSO: tcp_gbps, with peak RSS (rss_mib) and the senders' retransmissions (retrans) during each"
}

func (tcpScenario) Plan(opts SuiteOptions) ([]Step, string) {
	if skip := needNamespaces(); skip != "" {
		return nil, skip
	}
	t := DefaultTCPOptions()
	t.Duration = opts.Duration
	if opts.Quick {
		// Both directions with and without host GSO, one flow, GRO
		// on, the peer's TSO on, over PACKET_MMAP (where the endpoints
		// differ most, see DefaultTCPOptions): the gain of host GSO on
		// the way down, the most telling figure of the scenario.
		t.GSO = []GSOKind{GSONone, GSOHost}
		t.GRO = []bool{true}
		t.Flows = []int{1}
		t.PeerTSO = []bool{true}
		if slices.Contains(t.Modes, dataplane.PacketMMap) {
			t.Modes = []dataplane.Mode{dataplane.PacketMMap}
		}
	}
	perImpl := warmupFor(opts.Duration) + opts.Duration
	var steps []Step
	for _, c := range t.Configs() {
		steps = append(steps, Step{
			Label:    c.String(),
			Config:   c.String(),
			Estimate: time.Duration(len(t.Impls))*perImpl + tcpSetup,
			Arg:      c,
		})
	}
	return steps, ""
}

func (tcpScenario) Run(ctx context.Context, opts SuiteOptions, step Step, out *StepOutput) error {
	c, ok := step.Arg.(TCPConfig)
	if !ok {
		return fmt.Errorf("bench: tcp: step %q has no tcp configuration", step.Label)
	}
	ip := 4
	if c.IPv6 {
		ip = 6
	}
	rep, err := RunTCP(ctx, TCPOptions{
		Duration:   opts.Duration,
		GSO:        []GSOKind{c.GSO},
		GRO:        []bool{c.GRO},
		Modes:      []dataplane.Mode{c.Mode},
		Flows:      []int{c.Flows},
		Directions: []Direction{c.Dir},
		PeerTSO:    []bool{c.PeerTSO},
		IPVersions: []int{ip},
		OnSample: func(s TCPSample) {
			out.Sample(Sample{
				Impl: s.Impl, Config: s.Config.String(), Metric: MetricTCPGbps,
				TimeSec: s.At.Seconds(), Value: s.Gbps, Unit: UnitGbps,
			})
		},
	})
	if rep != nil {
		for _, r := range rep.Rows {
			out.Row(r)
		}
	}
	return err
}
