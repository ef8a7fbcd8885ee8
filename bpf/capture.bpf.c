//go:build ignore
// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// xdp_capture copies the first snaplen bytes of each frame, with a timestamp,
// the ifindex and the rx queue, into a BPF ring buffer and passes the frame
// on. When the ring is full the frame is still passed and counted in
// stats[STAT_LOST], so a slow reader costs captures, never traffic.

#include "common.h"

// CAPTURE_MAX bounds what one record holds: the ring buffer reserve size must
// be a constant, and XDP without frags support sees at most one page of a
// frame anyway (4096 minus XDP_PACKET_HEADROOM and skb_shared_info).
#define CAPTURE_MAX 4096

// Set by the loader before load; 0 or anything larger means CAPTURE_MAX.
volatile const __u32 snaplen = CAPTURE_MAX;

struct capture_event {
	__u64 ts_ns;    // bpf_ktime_get_ns(): CLOCK_MONOTONIC
	__u32 ifindex;
	__u32 rx_queue;
	__u32 len;      // length of the frame on the wire
	__u32 caplen;   // bytes of data that are valid
	__u8 data[CAPTURE_MAX];
};

// 4 MiB holds about a thousand full-size records.
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

SEC("xdp")
int xdp_capture(struct xdp_md *ctx)
{
	__u32 len = ctx->data_end - ctx->data;
	__u32 caplen = len;
	if (snaplen > 0 && caplen > snaplen)
		caplen = snaplen;
	if (caplen > CAPTURE_MAX)
		caplen = CAPTURE_MAX;

	struct capture_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(ctx, STAT_LOST);
		return count(ctx, XDP_PASS);
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->ifindex = ctx->ingress_ifindex;
	e->rx_queue = ctx->rx_queue_index;
	e->len = len;
	e->caplen = 0;
	// bpf_xdp_load_bytes needs a length the verifier can bound to
	// 1..CAPTURE_MAX. clang drops a plain C mask as redundant and passes
	// a register whose upper 32 bits the verifier cannot bound, so the
	// mask is done in asm where clang cannot remove it.
	__u64 n = caplen;
	asm volatile("%0 &= 0x1fff" : "+r"(n));
	if (n > CAPTURE_MAX)
		n = CAPTURE_MAX;
	if (n > 0 && bpf_xdp_load_bytes(ctx, 0, e->data, n) == 0)
		e->caplen = n;
	bpf_ringbuf_submit(e, 0);
	return count(ctx, XDP_PASS);
}

char __license[] SEC("license") = "Dual BSD/GPL";
