//go:build ignore
// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// xdp_redirect hands frames to the AF_XDP socket bound to the rx queue they
// arrived on. With filter_dst set, only frames whose IPv4/IPv6 destination is
// in dst_addrs go there (the addresses a user-space stack owns on a shared
// NIC); everything else, and every frame on a queue with no socket, goes to
// the host stack.

#include "common.h"

// Set by the loader before load (a .rodata constant, so the verifier prunes
// the branch that is not taken).
volatile const __u8 filter_dst = 0;

// One entry per rx queue; 64 queues is more than any NIC sluice targets has
// combined channels, and the loader may raise it before load.
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

// Destination addresses (16 bytes, IPv4 v4-mapped) to redirect when
// filter_dst is set.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u8[16]);
	__type(value, __u8);
} dst_addrs SEC(".maps");

SEC("xdp")
int xdp_redirect(struct xdp_md *ctx)
{
	if (filter_dst) {
		struct l4info info = {};
		parse_frame((void *)(long)ctx->data, (void *)(long)ctx->data_end,
			    &info);
		if (!info.has_daddr || !bpf_map_lookup_elem(&dst_addrs, info.daddr))
			return count(ctx, XDP_PASS);
	}
	// The low bits of flags are the action when the queue has no socket
	// (kernel >= 5.12, "xsk: Use bpf_redirect_map flags").
	__u32 act = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
	return count(ctx, act);
}

char __license[] SEC("license") = "Dual BSD/GPL";
