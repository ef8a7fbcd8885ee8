//go:build ignore
// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// xdp_drop drops every frame and counts it.

#include "common.h"

SEC("xdp")
int xdp_drop(struct xdp_md *ctx)
{
	return count(ctx, XDP_DROP);
}

char __license[] SEC("license") = "Dual BSD/GPL";
