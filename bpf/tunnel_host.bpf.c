//go:build ignore
// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// xdp_tunnel_host runs on a host NIC whose traffic a user-space stack owns:
// every frame goes through tx_port to a veth (read by the stack on the far
// end), except control traffic, TCP or UDP to a destination port listed in
// pass_ports (SSH, 22, by default), which stays with the host stack so the
// machine stays reachable. ARP and NDP go to the stack too: it owns the
// address.

#include "common.h"

// Entry 0 is the veth's ifindex, resolved in the netns of the thread that
// writes it (the loader does that inside the NIC's netns).
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} tx_port SEC(".maps");

// Destination ports (host byte order) whose TCP and UDP traffic is passed to
// the host stack.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u16);
	__type(value, __u8);
} pass_ports SEC(".maps");

SEC("xdp")
int xdp_tunnel_host(struct xdp_md *ctx)
{
	struct l4info info = {};
	parse_frame((void *)(long)ctx->data, (void *)(long)ctx->data_end, &info);
	// A frame too short for an Ethernet header is the host's to drop.
	if (info.eth_proto == 0)
		return count(ctx, XDP_PASS);
	if (info.has_port && bpf_map_lookup_elem(&pass_ports, &info.dport))
		return count(ctx, XDP_PASS);
	// No veth configured yet: the host keeps everything.
	return count(ctx, bpf_redirect_map(&tx_port, 0, XDP_PASS));
}

char __license[] SEC("license") = "Dual BSD/GPL";
