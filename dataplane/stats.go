package dataplane

import "sync/atomic"

// Stats are a link's counters, the fields of the reference's per-interface
// network stats. All fields are monotonically increasing.
type Stats struct {
	RxPackets uint64 `json:"rx_packets"`
	RxBytes   uint64 `json:"rx_bytes"`
	RxErrors  uint64 `json:"rx_errors"`
	RxDropped uint64 `json:"rx_dropped"`
	TxPackets uint64 `json:"tx_packets"`
	TxBytes   uint64 `json:"tx_bytes"`
	TxErrors  uint64 `json:"tx_errors"`
	TxDropped uint64 `json:"tx_dropped"`
	// Faults counts panics contained while handling an inbound frame
	// (the frame is dropped; see FaultGuard) or a flow that came in over
	// the link.
	Faults uint64 `json:"faults"`
	// Offloads is what the endpoint decided about its offloads (see
	// OffloadReport), set by endpoints that have offloads; nil from a
	// bare Link. It is shared: do not modify it.
	Offloads *OffloadReport `json:"offloads,omitempty"`
}

// Add returns s + o, field by field; Offloads is s's, or o's when s has
// none.
func (s Stats) Add(o Stats) Stats {
	offloads := s.Offloads
	if offloads == nil {
		offloads = o.Offloads
	}
	return Stats{
		Offloads:  offloads,
		RxPackets: s.RxPackets + o.RxPackets, RxBytes: s.RxBytes + o.RxBytes,
		RxErrors: s.RxErrors + o.RxErrors, RxDropped: s.RxDropped + o.RxDropped,
		TxPackets: s.TxPackets + o.TxPackets, TxBytes: s.TxBytes + o.TxBytes,
		TxErrors: s.TxErrors + o.TxErrors, TxDropped: s.TxDropped + o.TxDropped,
		Faults: s.Faults + o.Faults,
	}
}

// Counters is the live, concurrency-safe form of Stats. The zero value is
// ready to use.
type Counters struct {
	RxPackets, RxBytes, RxErrors, RxDropped atomic.Uint64
	TxPackets, TxBytes, TxErrors, TxDropped atomic.Uint64
	Faults                                  atomic.Uint64
}

// Snapshot reads every counter.
func (c *Counters) Snapshot() Stats {
	return Stats{
		RxPackets: c.RxPackets.Load(), RxBytes: c.RxBytes.Load(),
		RxErrors: c.RxErrors.Load(), RxDropped: c.RxDropped.Load(),
		TxPackets: c.TxPackets.Load(), TxBytes: c.TxBytes.Load(),
		TxErrors: c.TxErrors.Load(), TxDropped: c.TxDropped.Load(),
		Faults: c.Faults.Load(),
	}
}
