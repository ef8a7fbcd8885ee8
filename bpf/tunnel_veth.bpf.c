//go:build ignore
// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// xdp_tunnel_veth runs on the host end of the tunnel veth: every frame the
// user-space stack sends goes straight out of the host NIC in tx_port.

#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} tx_port SEC(".maps");

SEC("xdp")
int xdp_tunnel_veth(struct xdp_md *ctx)
{
	return count(ctx, bpf_redirect_map(&tx_port, 0, XDP_PASS));
}

char __license[] SEC("license") = "Dual BSD/GPL";
