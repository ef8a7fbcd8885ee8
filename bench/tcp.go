package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/sluicenet/sluice/dataplane"
)

// ScenarioTCP is the Row.Scenario of the tcp scenario.
const ScenarioTCP = "tcp"

// MaxFlows bounds the parallel connections of one tcp measurement: beyond a
// few per CPU they only add scheduling noise.
const MaxFlows = 64

// GSOKind is how a tcp measurement's endpoint sends segments larger than
// the MTU.
type GSOKind int

const (
	// GSONone: the stack writes MTU-sized frames (Options.GSOMaxSize 0).
	GSONone GSOKind = iota
	// GSOHost: the stack writes 64 KiB segments, which the kernel
	// segments (GSOMaxSize 64 KiB, sockets with PACKET_VNET_HDR).
	GSOHost
	// GSOSoftware: the stack hands over 64 KiB segments and they are cut
	// into MTU-sized frames in user space (GSOMaxSize 64 KiB,
	// GVisorGSOEnabled).
	GSOSoftware
)

// GSOKinds lists every GSOKind in flag order.
var GSOKinds = []GSOKind{GSONone, GSOHost, GSOSoftware}

// String returns the kind's flag spelling.
func (g GSOKind) String() string {
	switch g {
	case GSONone:
		return "none"
	case GSOHost:
		return "host"
	case GSOSoftware:
		return "software"
	}
	return fmt.Sprintf("GSOKind(%d)", int(g))
}

// Direction is which way a tcp measurement's data flows.
type Direction int

const (
	// Up: a kernel sender in the peer namespace, a netstack sink.
	Up Direction = iota
	// Down: a netstack sender, a kernel sink in the peer namespace.
	Down
)

// Directions lists both directions in flag order.
var Directions = []Direction{Up, Down}

// String returns the direction's flag spelling.
func (d Direction) String() string {
	switch d {
	case Up:
		return "up"
	case Down:
		return "down"
	}
	return fmt.Sprintf("Direction(%d)", int(d))
}

// TCPConfig is one configuration of the tcp scenario. Each is measured once
// per implementation.
type TCPConfig struct {
	GSO   GSOKind
	GRO   bool
	Mode  dataplane.Mode
	Flows int
	Dir   Direction
	// PeerTSO is the peer veth's TSO and GSO: on, the kernel sends 64 KiB
	// super-frames across the veth; off, MTU-sized segments.
	PeerTSO bool
	// IPv6 runs the flows over 2001:db8::/64 instead of 192.0.2.0/24.
	IPv6 bool
}

// String is the configuration as it appears in Row.Config, for example
// "gso=host,gro=on,mode=mmap,flows=4,dir=down,peer_tso=on". IPv6
// configurations end in ",ip=6"; a configuration without an ip key is
// IPv4.
func (c TCPConfig) String() string {
	s := fmt.Sprintf("gso=%s,gro=%s,mode=%s,flows=%d,dir=%s,peer_tso=%s", c.GSO, onOff(c.GRO), modeName(c.Mode), c.Flows, c.Dir, onOff(c.PeerTSO))
	if c.IPv6 {
		s += ",ip=6"
	}
	return s
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// TCPOptions configure RunTCP. Zero fields take the defaults of
// DefaultTCPOptions. The configurations measured are every combination of
// the lists (see Configs).
type TCPOptions struct {
	// Duration is each measurement's window, after a warm-up of a fifth
	// of it (50 to 500 ms). Default 2s; MinDuration..MaxDuration.
	Duration time.Duration
	// GSO are the GSO kinds measured. Default: all three.
	GSO []GSOKind
	// GRO are the endpoint's GRO settings measured. Default: on and off.
	GRO []bool
	// Modes are the dispatch modes measured: dataplane's AF_PACKET modes
	// and ModeXDP. Default: recvmmsg and mmap (see DefaultTCPOptions);
	// xdp only when asked for.
	Modes []dataplane.Mode
	// Flows are the numbers of parallel connections measured,
	// 1..MaxFlows. Default 1 and 4.
	Flows []int
	// Directions are the directions measured. Default: up and down.
	Directions []Direction
	// PeerTSO are the peer veth's TSO/GSO settings measured. Default: on
	// and off. Off is measured with Up only.
	PeerTSO []bool
	// IPVersions are the IP versions measured, 4 and/or 6. Default 4.
	IPVersions []int
	// Impls are the implementations measured, a subset of Impls. Default:
	// both.
	Impls []string
	// Progress receives one line per measurement as it completes. nil
	// discards.
	Progress io.Writer
	// OnSample, if set, receives the throughput of every TCPSampleInterval
	// of each measurement's window as it passes, for plots over time.
	// Called from the measurement's goroutines; it must return quickly.
	// The samples of a measurement that then fails are not withdrawn.
	OnSample func(TCPSample)
}

// TCPSampleInterval is the interval of the samples TCPOptions.OnSample
// receives.
const TCPSampleInterval = 100 * time.Millisecond

// TCPSample is the throughput of one interval of a tcp measurement.
type TCPSample struct {
	Impl   string
	Config TCPConfig
	// At is the end of the interval, from the start of the window.
	At time.Duration
	// Gbps is the payload the receivers got in the interval, all flows,
	// in Gbit/s.
	Gbps float64
}

// DefaultTCPOptions returns the options of `sluice bench tcp` without
// flags: every GSO kind, GRO on and off, 1 and 4 flows, both directions and
// both peer TSO settings, over the recvmmsg and mmap dispatch modes, 2 s
// windows. That is 72 configurations and 144 measurements, about six
// minutes on a 2-vCPU machine. recvmmsg is the mode runsc uses; mmap is
// where the endpoints differ most (ring depth decides whether MTU-sized
// segments from a peer without TSO are dropped). readv, one system call
// per frame, is left to --modes: with a TSO peer it is within noise of the
// others for TCP (../shared/FIELD-NOTES.md), and measuring it would take
// the default run past ten minutes.
func DefaultTCPOptions() TCPOptions {
	return TCPOptions{
		Duration:   2 * time.Second,
		GSO:        slices.Clone(GSOKinds),
		GRO:        []bool{true, false},
		Modes:      []dataplane.Mode{dataplane.RecvMMsg, dataplane.PacketMMap},
		Flows:      []int{1, 4},
		Directions: slices.Clone(Directions),
		PeerTSO:    []bool{true, false},
		IPVersions: []int{4},
		Impls:      slices.Clone(Impls),
	}
}

func (o TCPOptions) withDefaults() TCPOptions {
	d := DefaultTCPOptions()
	if o.Duration == 0 {
		o.Duration = d.Duration
	}
	if len(o.GSO) == 0 {
		o.GSO = d.GSO
	}
	if len(o.GRO) == 0 {
		o.GRO = d.GRO
	}
	if len(o.Modes) == 0 {
		o.Modes = d.Modes
	}
	if len(o.Flows) == 0 {
		o.Flows = d.Flows
	}
	if len(o.Directions) == 0 {
		o.Directions = d.Directions
	}
	if len(o.PeerTSO) == 0 {
		o.PeerTSO = d.PeerTSO
	}
	if len(o.IPVersions) == 0 {
		o.IPVersions = d.IPVersions
	}
	if len(o.Impls) == 0 {
		o.Impls = d.Impls
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	return o
}

// Validate checks the options as RunTCP will use them (defaults applied),
// naming the field and value at fault.
func (o TCPOptions) Validate() error {
	o = o.withDefaults()
	if o.Duration < MinDuration || o.Duration > MaxDuration {
		return fmt.Errorf("bench: TCPOptions.Duration %v: must be between %v and %v", o.Duration, MinDuration, MaxDuration)
	}
	for _, g := range o.GSO {
		if !slices.Contains(GSOKinds, g) {
			return fmt.Errorf("bench: TCPOptions.GSO: unknown GSO kind %v", g)
		}
	}
	for _, m := range o.Modes {
		if !slices.Contains(dataplane.Modes, m) && m != ModeXDP {
			return fmt.Errorf("bench: TCPOptions.Modes: unknown mode %v", m)
		}
	}
	for _, f := range o.Flows {
		if f < 1 || f > MaxFlows {
			return fmt.Errorf("bench: TCPOptions.Flows: %d flows: must be 1..%d", f, MaxFlows)
		}
	}
	for _, d := range o.Directions {
		if !slices.Contains(Directions, d) {
			return fmt.Errorf("bench: TCPOptions.Directions: unknown direction %v", d)
		}
	}
	for _, v := range o.IPVersions {
		if v != 4 && v != 6 {
			return fmt.Errorf("bench: TCPOptions.IPVersions: IP version %d: want 4 or 6", v)
		}
	}
	for _, i := range o.Impls {
		if !slices.Contains(Impls, i) {
			return fmt.Errorf("bench: TCPOptions.Impls: unknown implementation %q (want %s)", i, strings.Join(Impls, ", "))
		}
	}
	if len(o.Configs()) == 0 {
		return fmt.Errorf("bench: TCPOptions: nothing to measure: peer TSO off is measured only in the up direction (in the down direction the peer sends nothing but ACKs); add up to the directions or on to the peer TSO settings")
	}
	return nil
}

// Configs returns the configurations RunTCP measures, in order: every
// combination of the options' lists, with the peer TSO setting outermost
// (it is a device setting, changed as seldom as possible), then direction,
// GSO, GRO, mode, flows and IP version. Peer TSO off is combined with Up
// only: in the down direction the peer sends nothing but ACKs, so its TSO
// setting changes nothing.
func (o TCPOptions) Configs() []TCPConfig {
	o = o.withDefaults()
	var out []TCPConfig
	for _, tso := range o.PeerTSO {
		for _, dir := range o.Directions {
			if !tso && dir != Up {
				continue
			}
			for _, gso := range o.GSO {
				for _, gro := range o.GRO {
					for _, mode := range o.Modes {
						for _, flows := range o.Flows {
							for _, ip := range o.IPVersions {
								out = append(out, TCPConfig{
									GSO: gso, GRO: gro, Mode: mode, Flows: flows,
									Dir: dir, PeerTSO: tso, IPv6: ip == 6,
								})
							}
						}
					}
				}
			}
		}
	}
	return out
}

// ParseTCPModes parses the dispatch modes of the tcp scenario for --modes:
// readv, recvmmsg, mmap (AF_PACKET sockets for both implementations) and
// xdp (ModeXDP: sluice's xdp endpoint against gVisor's pkg/tcpip/link/xdp,
// both on AF_XDP sockets sluice's redirect program feeds). Each element may
// itself be a comma-separated list; duplicates are dropped.
func ParseTCPModes(list []string) ([]dataplane.Mode, error) {
	return parseList("--modes", list, "some of readv, recvmmsg, mmap, xdp", func(s string) (dataplane.Mode, error) {
		if strings.EqualFold(s, "xdp") {
			return ModeXDP, nil
		}
		m, err := dataplane.ParseMode(s)
		if err != nil {
			return 0, fmt.Errorf("unknown dispatch mode %q (want readv, recvmmsg, mmap or xdp)", s)
		}
		return m, nil
	})
}

// ParseGSO parses GSO kinds (none, host, software) for --gso. Each element
// may itself be a comma-separated list; duplicates are dropped and the
// order given is kept.
func ParseGSO(list []string) ([]GSOKind, error) {
	return parseEnum("--gso", "GSO kind", list, GSOKinds)
}

// ParseDirections parses directions (up, down) for --directions.
func ParseDirections(list []string) ([]Direction, error) {
	return parseEnum("--directions", "direction", list, Directions)
}

// ParseOnOff parses a list of on/off settings for flag (--gro,
// --peer-tso): on, off, true, false, 1, 0.
func ParseOnOff(flag string, list []string) ([]bool, error) {
	return parseList(flag, list, "on, off or on,off", func(s string) (bool, error) {
		switch strings.ToLower(s) {
		case "on", "true", "1":
			return true, nil
		case "off", "false", "0":
			return false, nil
		}
		return false, fmt.Errorf("%q: want on or off (or both: on,off)", s)
	})
}

// ParseFlows parses numbers of parallel connections for --flows, each
// 1..MaxFlows.
func ParseFlows(list []string) ([]int, error) {
	return parseList("--flows", list, "counts such as 1,4", parseCount("connections", MaxFlows))
}

// ParseIPVersions parses IP versions for --ip: 4, 6 (or ipv4, ipv6).
func ParseIPVersions(list []string) ([]int, error) {
	return parseList("--ip", list, "4, 6 or 4,6", func(s string) (int, error) {
		switch strings.ToLower(s) {
		case "4", "ipv4", "v4":
			return 4, nil
		case "6", "ipv6", "v6":
			return 6, nil
		}
		return 0, fmt.Errorf("%q: want 4 or 6 (or both: 4,6)", s)
	})
}
