package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicenet/sluice/bench"
)

// benchTCPOptions are the flags of `sluice bench tcp`, as typed.
type benchTCPOptions struct {
	duration   time.Duration
	gso        []string
	gro        []string
	modes      []string
	flows      []string
	directions []string
	peerTSO    []string
	ip         []string
	impls      []string
	json       bool
}

func newBenchTCPCmd(stdout, stderr io.Writer) *cobra.Command {
	opts := benchTCPOptions{
		duration:   2 * time.Second,
		gso:        []string{"none", "host", "software"},
		gro:        []string{"on", "off"},
		modes:      []string{"recvmmsg", "mmap"},
		flows:      []string{"1", "4"},
		directions: []string{"up", "down"},
		peerTSO:    []string{"on", "off"},
		ip:         []string{"4"},
		impls:      slices.Clone(bench.Impls),
	}
	cmd := &cobra.Command{
		Use:   "tcp [flags]",
		Short: "Compare TCP throughput through sluice's and gVisor's fdbased endpoints, per GSO/GRO setting",
		Long: `tcp measures TCP throughput between a gVisor netstack and a kernel peer across a
veth between two namespaces it creates (and removes): the netstack owns
192.0.2.1/24 and 2001:db8::1/64 on side A over the endpoint under test, the
kernel has 192.0.2.2 and 2001:db8::2 on side B. Each configuration is measured
in the same run with sluice's fdbased endpoint and with gVisor's, given the
equivalent options:

  --gso none      no GSO: the stack writes MTU-sized (1500) frames
  --gso host      GSOMaxSize 64 KiB, sockets with PACKET_VNET_HDR: 64 KiB
                  segments go to the kernel whole and it segments them
  --gso software  GSOMaxSize 64 KiB and GVisorGSOEnabled: segmented in user space
  --gro on|off    the endpoint's GRO option (gVisor's stack/gro in gVisor's)
  --modes         the dispatch mode: readv, recvmmsg, mmap (AF_PACKET), or xdp:
                  sluice's xdp endpoint against gVisor's pkg/tcpip/link/xdp,
                  both on an AF_XDP socket (copy mode, one queue) fed by
                  sluice's redirect program. Opt-in, never in the default run.
                  --gso host has no xdp figures (AF_XDP carries no
                  virtio-net header for the kernel to segment by), and
                  --gso software none for gVisor (its xdp endpoint has no
                  GSO): those are reported on stderr as not measured
  --flows N       N parallel connections; the figure is their total
  --directions    up: a kernel sender in side B, a netstack sink that reads
                  and discards; down: a netstack sender (gonet), a kernel sink
  --peer-tso off  side B's veth with tso and gso off (as "ethtool -K vb tso
                  off gso off"), so the kernel sends MTU-sized segments: the
                  case GRO is for. Measured in the up direction only (going
                  down, the peer sends nothing but ACKs)
  --ip 4|6        the IP version of the flows

Every combination of the values given is measured. Every receiver checks the
bytes it gets against the stream the senders write, so a corrupted transfer
fails its measurement instead of counting. Each measurement runs for --duration
after a warm-up of a fifth of it (50 to 500 ms), on fresh sockets and a fresh
stack. The default run is 72 configurations x 2 implementations, about six
minutes: recvmmsg (runsc's mode) and mmap; add readv with --modes
readv,recvmmsg,mmap. Progress goes to stderr. Speeds on a shared machine are
noisy: compare the columns of one run, not runs with each other.

Output (stdout): a table with one line per configuration, columns sluice,
gvisor, sluice/gvisor (ratio), and per implementation the peak RSS (MiB) and the
segments the senders retransmitted during the window (the kernel's TCP_INFO
going up, the netstack's stats going down). With --json, one JSON object per
line and figure instead:

  {"scenario":"tcp","impl":"sluice","config":"gso=host,gro=on,mode=mmap,flows=4,dir=down,peer_tso=on","metric":"tcp_gbps","value":8.1,"unit":"Gbit/s"}
  {"scenario":"tcp","impl":"sluice","config":"gso=host,gro=on,mode=mmap,flows=4,dir=down,peer_tso=on","metric":"rss_mib","value":31.2,"unit":"MiB","during":"tcp_gbps"}
  {"scenario":"tcp","impl":"sluice","config":"gso=host,gro=on,mode=mmap,flows=4,dir=down,peer_tso=on","metric":"retrans","value":12,"unit":"segments","during":"tcp_gbps"}

IPv6 configurations end in ",ip=6". A measurement that fails has no line, and
the command exits non-zero after printing the rest.

Needs root (CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN).`,
		Example: `  sudo sluice bench tcp
  sudo sluice bench tcp --gso host --gro on --flows 1 --directions down --duration 5s
  sudo sluice bench tcp --gso none --gro on,off --peer-tso off --directions up
  sudo sluice bench tcp --modes readv,recvmmsg,mmap --ip 4,6 --json > tcp.jsonl
  sudo sluice bench tcp --modes recvmmsg,xdp --gso none,software --flows 1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBenchTCP(cmd.Context(), opts, stdout, stderr)
		},
	}
	f := cmd.Flags()
	f.DurationVar(&opts.duration, "duration", opts.duration, fmt.Sprintf("length of each measurement window (%v to %v)", bench.MinDuration, bench.MaxDuration))
	f.StringSliceVar(&opts.gso, "gso", opts.gso, "GSO settings to measure: none, host, software")
	f.StringSliceVar(&opts.gro, "gro", opts.gro, "GRO settings to measure: on, off")
	f.StringSliceVar(&opts.modes, "modes", opts.modes, "dispatch modes to measure: readv, recvmmsg, mmap, xdp (AF_XDP; opt-in)")
	f.StringSliceVar(&opts.flows, "flows", opts.flows, fmt.Sprintf("numbers of parallel connections to measure, 1 to %d", bench.MaxFlows))
	f.StringSliceVar(&opts.directions, "directions", opts.directions, "directions to measure: up (kernel sends to the netstack), down (netstack sends to the kernel)")
	f.StringSliceVar(&opts.peerTSO, "peer-tso", opts.peerTSO, "TSO/GSO settings of the kernel peer's veth to measure: on, off (off: up direction only)")
	f.StringSliceVar(&opts.ip, "ip", opts.ip, "IP versions to measure: 4, 6")
	f.StringSliceVar(&opts.impls, "impls", opts.impls, "implementations to measure: sluice, gvisor (the ratio needs both)")
	f.BoolVar(&opts.json, "json", false, "print one JSON object per line instead of a table")
	return cmd
}

// toBench checks the flags and turns them into bench's options; every error
// names the flag at fault.
func (o benchTCPOptions) toBench(progress io.Writer) (bench.TCPOptions, error) {
	var (
		t   = bench.TCPOptions{Duration: o.duration, Progress: progress}
		err error
	)
	if o.duration < bench.MinDuration || o.duration > bench.MaxDuration {
		return t, fmt.Errorf("--duration %v: must be between %v and %v", o.duration, bench.MinDuration, bench.MaxDuration)
	}
	if t.GSO, err = bench.ParseGSO(o.gso); err != nil {
		return t, err
	}
	if t.GRO, err = bench.ParseOnOff("--gro", o.gro); err != nil {
		return t, err
	}
	if t.Modes, err = bench.ParseTCPModes(o.modes); err != nil {
		return t, err
	}
	if t.Flows, err = bench.ParseFlows(o.flows); err != nil {
		return t, err
	}
	if t.Directions, err = bench.ParseDirections(o.directions); err != nil {
		return t, err
	}
	if t.PeerTSO, err = bench.ParseOnOff("--peer-tso", o.peerTSO); err != nil {
		return t, err
	}
	if t.IPVersions, err = bench.ParseIPVersions(o.ip); err != nil {
		return t, err
	}
	if t.Impls, err = bench.ParseImpls(o.impls); err != nil {
		return t, err
	}
	if len(t.Configs()) == 0 {
		return t, fmt.Errorf("--peer-tso off is measured in the up direction only (going down, the peer sends nothing but ACKs): add up to --directions or on to --peer-tso")
	}
	return t, t.Validate()
}

// runBenchTCP is `sluice bench tcp` without cobra.
func runBenchTCP(ctx context.Context, o benchTCPOptions, stdout, stderr io.Writer) error {
	t, err := o.toBench(stderr)
	if err != nil {
		return err
	}
	rep, runErr := bench.RunTCP(ctx, t)
	return writeBenchReport(stdout, rep, o.json, runErr, nil)
}
