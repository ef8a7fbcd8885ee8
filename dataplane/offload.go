package dataplane

import (
	"fmt"
	"strings"
)

// Offload names, as they appear in an OffloadReport. They follow what the
// offload does, not a tool's spelling: an endpoint may get the same effect
// from the kernel (host) or do it itself (software).
const (
	// OffloadVnetHdr: every frame carries a virtio_net_hdr
	// (PACKET_VNET_HDR, IFF_VNET_HDR), which is what carries the others.
	OffloadVnetHdr = "virtio-net-hdr"
	// OffloadTxChecksum: outbound TCP and UDP checksums are left partial
	// (NEEDS_CSUM) for the kernel or the peer to complete.
	OffloadTxChecksum = "tx-checksum"
	// OffloadRxChecksum: inbound checksums the kernel vouches for
	// (DATA_VALID, NEEDS_CSUM) or that were verified once are not
	// verified again.
	OffloadRxChecksum = "rx-checksum"
	// OffloadHostGSOTCPv4 and OffloadHostGSOTCPv6: large TCP segments go
	// to the kernel whole, to be segmented there (or by the peer).
	OffloadHostGSOTCPv4 = "host-gso-tcpv4"
	OffloadHostGSOTCPv6 = "host-gso-tcpv6"
	// OffloadSoftwareGSO: the endpoint segments large TCP segments itself.
	OffloadSoftwareGSO = "software-gso"
	// OffloadGRO: inbound TCP segments are coalesced before the stack.
	OffloadGRO = "gro"
	// OffloadUSO: UDP segmentation (virtio UDP_L4).
	OffloadUSO = "uso"
)

// Probe verdicts, in OffloadState.Probe.
const (
	ProbeOK      = "ok"      // the kernel did what the offload promises
	ProbeFailed  = "failed"  // it did not; the offload is off (Reason says why)
	ProbeSkipped = "skipped" // the probe could not run; Reason says why
)

// OffloadState is what an endpoint decided about one offload.
type OffloadState struct {
	Name string `json:"name"`
	// Requested says the endpoint's options asked for it.
	Requested bool `json:"requested"`
	// Effective says it is in use.
	Effective bool `json:"effective"`
	// Probe is the start-up probe's verdict (ProbeOK, ProbeFailed,
	// ProbeSkipped), empty when the offload was not probed.
	Probe string `json:"probe,omitempty"`
	// Reason explains a difference between Requested and Effective, a
	// failed or skipped probe, or how the offload is provided.
	Reason string `json:"reason,omitempty"`
}

// String returns "name=on", "name=off" or with a reason "name=off (reason)".
func (s OffloadState) String() string {
	v := "off"
	if s.Effective {
		v = "on"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s=%s", s.Name, v)
	if s.Requested != s.Effective || s.Probe == ProbeFailed {
		if s.Requested {
			b.WriteString(" (requested")
		} else {
			b.WriteString(" (not requested")
		}
		if s.Reason != "" {
			b.WriteString(": " + s.Reason)
		}
		b.WriteString(")")
	}
	return b.String()
}

// OffloadReport is what an endpoint decided about each of its offloads and
// why: the answer to "is host GSO really on?". It is part of Stats so that
// it shows wherever the counters do.
type OffloadReport struct {
	// Device and Driver name the device the descriptors are bound to,
	// when known.
	Device string `json:"device,omitempty"`
	Driver string `json:"driver,omitempty"`
	// Probed says the start-up probe ran; ProbeSkipped says why it did
	// not, when it was wanted.
	Probed       bool   `json:"probed"`
	ProbeSkipped string `json:"probe_skipped,omitempty"`
	// Offloads lists every offload the endpoint knows, requested or not.
	Offloads []OffloadState `json:"offloads"`
}

// Get returns the state of the named offload.
func (r *OffloadReport) Get(name string) (OffloadState, bool) {
	if r == nil {
		return OffloadState{}, false
	}
	for _, s := range r.Offloads {
		if s.Name == name {
			return s, true
		}
	}
	return OffloadState{}, false
}

// Effective reports whether the named offload is in use.
func (r *OffloadReport) Effective(name string) bool {
	s, ok := r.Get(name)
	return ok && s.Effective
}

// String returns the states on one line, for logs.
func (r *OffloadReport) String() string {
	if r == nil {
		return "<none>"
	}
	parts := make([]string, 0, len(r.Offloads))
	for _, s := range r.Offloads {
		parts = append(parts, s.String())
	}
	return strings.Join(parts, ", ")
}

// Clone returns a deep copy, so that a caller may keep or change it.
func (r *OffloadReport) Clone() *OffloadReport {
	if r == nil {
		return nil
	}
	c := *r
	c.Offloads = append([]OffloadState(nil), r.Offloads...)
	return &c
}
