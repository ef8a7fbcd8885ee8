package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Scenario "capture": see RunCapture and the package doc.

// Implementations the capture scenario compares.
const (
	ImplTcpdump    = "tcpdump"
	ImplNetsniffNG = "netsniff-ng"
)

// MetricSentFrames is the frames that reached the capture point (the
// capturing veth's rx_packets) during a capture measurement.
const MetricSentFrames = "sent_frames"

// CaptureImpls are the capturers, sluice first (ratios are sluice/tcpdump).
var CaptureImpls = []string{ImplSluice, ImplTcpdump, ImplNetsniffNG}

// CaptureVias are sluice capture's ways in. tcpdump and netsniff-ng read a
// PACKET_MMAP ring, so their rows are on the via=mmap lines.
var CaptureVias = []string{"mmap", "recvmmsg", "xdp"}

// CPU placements of the capturer relative to the sender.
const (
	// CPUSeparate pins the capturer to a CPU of its own.
	CPUSeparate = "separate"
	// CPUShared pins it to the sender's CPU: the CPU-starved case.
	CPUShared = "shared"
)

// CaptureCPUs lists the placements, in the order they run.
var CaptureCPUs = []string{CPUSeparate, CPUShared}

// CaptureOptions configure RunCapture. Zero fields take the defaults.
type CaptureOptions struct {
	// Duration is each measurement's window, after a warm-up of a fifth of
	// it. Default 3s; MinDuration..MaxDuration.
	Duration time.Duration
	// Vias are sluice's ways in to measure. Default: all.
	Vias []string
	// Impls are the capturers. Default: all of CaptureImpls.
	Impls []string
	// CPUs are the placements. Default: both.
	CPUs []string
	// Sluice is the sluice binary to run as a capturer (required when
	// Impls has sluice): os.Executable() for `sluice bench capture`.
	Sluice string
	// Rounds is how many times every measurement runs, in turn; rows
	// hold the median of each metric. Default 1.
	Rounds int
	// Dir is where capture files go, removed after counting. Default
	// os.TempDir().
	Dir string
	// Progress receives a line per measurement. nil discards.
	Progress io.Writer
}

func (o CaptureOptions) withDefaults() CaptureOptions {
	if o.Duration == 0 {
		o.Duration = 3 * time.Second
	}
	if len(o.Vias) == 0 {
		o.Vias = slices.Clone(CaptureVias)
	}
	if len(o.Impls) == 0 {
		o.Impls = slices.Clone(CaptureImpls)
	}
	if len(o.CPUs) == 0 {
		o.CPUs = slices.Clone(CaptureCPUs)
	}
	if o.Rounds == 0 {
		o.Rounds = 1
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	return o
}

// Validate checks the options as RunCapture uses them.
func (o CaptureOptions) Validate() error {
	o = o.withDefaults()
	if o.Duration < MinDuration || o.Duration > MaxDuration {
		return fmt.Errorf("bench: CaptureOptions.Duration %v: must be between %v and %v", o.Duration, MinDuration, MaxDuration)
	}
	for _, list := range []struct {
		name       string
		got, valid []string
	}{{"Vias", o.Vias, CaptureVias}, {"Impls", o.Impls, CaptureImpls}, {"CPUs", o.CPUs, CaptureCPUs}} {
		for _, v := range list.got {
			if !slices.Contains(list.valid, v) {
				return fmt.Errorf("bench: CaptureOptions.%s: unknown %q (want some of %s)", list.name, v, strings.Join(list.valid, ", "))
			}
		}
	}
	if o.Rounds < 1 || o.Rounds > 100 {
		return fmt.Errorf("bench: CaptureOptions.Rounds %d: want 1 to 100", o.Rounds)
	}
	if slices.Contains(o.Impls, ImplSluice) && o.Sluice == "" {
		return fmt.Errorf("bench: CaptureOptions.Sluice: the sluice binary is needed to measure sluice")
	}
	return nil
}

// ParseCaptureVias, ParseCaptureImpls and ParseCaptureCPUs parse the flag
// lists of `sluice bench capture`.
func ParseCaptureVias(list []string) ([]string, error) {
	return parseNames("--vias", "way in", list, CaptureVias)
}

// ParseCaptureImpls parses --impls.
func ParseCaptureImpls(list []string) ([]string, error) {
	return parseNames("--impls", "capturer", list, CaptureImpls)
}

// ParseCaptureCPUs parses --cpus.
func ParseCaptureCPUs(list []string) ([]string, error) {
	return parseNames("--cpus", "placement", list, CaptureCPUs)
}

// captureConfig is the Row.Config of a capture measurement.
func captureConfig(via, cpu string) string { return "via=" + via + ",cpu=" + cpu }

// captureRun is one measurement.
type captureRun struct {
	impl, via, cpu string
	window         time.Duration
}

// captureResult is what one measurement found.
type captureResult struct {
	sent, captured, senderSent uint64
	cpu                        time.Duration // user+sys while capturing
	cpuTotal                   time.Duration // user+sys, start-up included
	tail                       string        // the capturer's last output lines
	// otherLoad is the CPU the rest of the machine used while the sender
	// sent, in CPUs (0 to NumCPU): busy time from /proc/stat less this
	// process's (sender, kernel receive work) and the capturer's.
	otherLoad float64
}

// captureReport turns the rounds of each measurement into rows: the median
// of each metric over the rounds that succeeded.
func captureReport(runs []captureRun, results [][]captureResult) *Report {
	rep := &Report{}
	for i, m := range runs {
		rs := results[i]
		if len(rs) == 0 {
			continue
		}
		med := func(f func(captureResult) float64) float64 {
			v := make([]float64, len(rs))
			for k, r := range rs {
				v[k] = f(r)
			}
			return Median(v)
		}
		cfg := captureConfig(m.via, m.cpu)
		row := func(metric string, v float64, unit string) Row {
			return Row{Scenario: "capture", Impl: m.impl, Config: cfg, Metric: metric, Value: v, Unit: unit}
		}
		rep.Add(
			row(MetricSentFrames, med(func(r captureResult) float64 { return float64(r.sent) }), UnitFrames),
			row(MetricCapturedFrames, med(func(r captureResult) float64 { return float64(r.captured) }), UnitFrames),
			row(MetricDroppedFrames, med(func(r captureResult) float64 { return float64(r.dropped()) }), UnitFrames),
		)
		var withFrames []captureResult
		for _, r := range rs {
			if r.captured > 0 {
				withFrames = append(withFrames, r)
			}
		}
		if len(withFrames) > 0 {
			rs = withFrames
			rep.Add(row(MetricCPUPerFrame, med(captureResult.cpuPerFrame), UnitMicros))
		}
	}
	return rep
}

func (r captureResult) dropped() uint64 {
	if r.captured >= r.sent {
		return 0
	}
	return r.sent - r.captured
}

func (r captureResult) cpuPerFrame() float64 {
	if r.captured == 0 {
		return 0
	}
	return float64(r.cpu.Microseconds()) / float64(r.captured)
}
