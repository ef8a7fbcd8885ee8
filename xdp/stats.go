package xdp

import "github.com/sluicenet/sluice/gro"

// KernelStats are a socket's counters kept by the kernel (struct
// xdp_statistics, <linux/if_xdp.h>).
type KernelStats struct {
	// RxDropped: frames dropped for lack of room in the chunk (longer
	// than FrameSize-256) or other receive errors.
	RxDropped uint64 `json:"rx_dropped"`
	// RxInvalidDescs and TxInvalidDescs: descriptors the kernel refused.
	RxInvalidDescs uint64 `json:"rx_invalid_descs"`
	TxInvalidDescs uint64 `json:"tx_invalid_descs"`
	// RxRingFull: frames dropped because the rx ring was full (the reader
	// fell behind).
	RxRingFull uint64 `json:"rx_ring_full"`
	// RxFillRingEmpty: frames dropped because the fill ring had no chunk.
	RxFillRingEmpty uint64 `json:"rx_fill_ring_empty_descs"`
	// TxRingEmpty: times the kernel found the tx ring empty when woken.
	TxRingEmpty uint64 `json:"tx_ring_empty_descs"`
}

// Add returns k + o, field by field.
func (k KernelStats) Add(o KernelStats) KernelStats {
	return KernelStats{
		RxDropped: k.RxDropped + o.RxDropped, RxInvalidDescs: k.RxInvalidDescs + o.RxInvalidDescs,
		TxInvalidDescs: k.TxInvalidDescs + o.TxInvalidDescs, RxRingFull: k.RxRingFull + o.RxRingFull,
		RxFillRingEmpty: k.RxFillRingEmpty + o.RxFillRingEmpty, TxRingEmpty: k.TxRingEmpty + o.TxRingEmpty,
	}
}

// XDPStats are an endpoint's AF_XDP-specific counters, summed over its
// sockets.
type XDPStats struct {
	// Mode is how the sockets are bound: copy or zerocopy.
	Mode string `json:"mode"`
	// Queues is the number of sockets (rx queues).
	Queues int `json:"queues"`
	// BadDescs counts refused descriptors by reason (DescError names).
	BadDescs map[string]uint64 `json:"bad_descs,omitempty"`
	// Kicks counts sendto calls made to send; KickErrors those that failed.
	Kicks      uint64 `json:"kicks"`
	KickErrors uint64 `json:"kick_errors"`
	// Kernel are the kernel's own counters (XDP_STATISTICS).
	Kernel KernelStats `json:"kernel"`
	// GRO counts what GRO did, when on.
	GRO *gro.Stats `json:"gro,omitempty"`
}
