//go:build ignore
// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// xdp_pass passes every frame to the host stack and counts it. It is also the
// minimal program sluice puts on a veth's peer so that frames XDP-redirected
// into that veth are delivered (in native mode the kernel drops them
// silently otherwise: veth_xdp_xmit needs the peer's XDP rx queues, which
// exist only while the peer has a program or GRO on).

#include "common.h"

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return count(ctx, XDP_PASS);
}

char __license[] SEC("license") = "Dual BSD/GPL";
