//go:build ignore
// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// xdp_redirect, neighbour-aware: the redirect program for a NIC that the
// host shares with a user-space stack owning some addresses on it. Frames
// whose IPv4/IPv6 destination is in dst_addrs go to the AF_XDP socket of
// their rx queue, and so do the frames that resolve those addresses: ARP
// whose target protocol address is one of them, and IPv6 neighbour
// solicitations and advertisements whose target is one of them (a
// solicitation goes to the target's solicited-node multicast address, not
// to the target itself). Everything else, and every frame on a queue with
// no socket, goes to the host stack.
//
// redirect.bpf.c with filter_dst set matches on the IP destination only, so
// the stack never sees the ARP requests and neighbour solicitations for its
// own addresses and nobody answers them; this is that program plus the
// neighbour cases. Its function has the same name, so that sluice's tools
// (List, `sluice xdp status`) know it as the redirect program.

#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

// The stack's addresses, 16 bytes, IPv4 v4-mapped as parse_frame builds them.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u8[16]);
	__type(value, __u8);
} dst_addrs SEC(".maps");

// An Ethernet/IPv4 ARP packet (RFC 826), which <linux/if_arp.h> only
// declares up to the opcode.
struct arp_eth_ipv4 {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 op;
	__u8 sha[6];
	__u8 spa[4];
	__u8 tha[6];
	__u8 tpa[4];
} __attribute__((packed));

#define ICMPV6_NS 135
#define ICMPV6_NA 136
// An NS or NA: type, code, checksum, 4 bytes of flags/reserved, then the
// 16-byte target address (RFC 4861 sections 4.3 and 4.4).
#define ND_TARGET_OFF 8
#define ND_MIN_LEN 24

// neigh_target finds the address an ARP or NDP frame is about and writes
// it to key, v4-mapped for ARP. It returns 0 for other frames.
static __always_inline int neigh_target(void *data, void *data_end, __u8 key[16])
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return 0;
	if (eth->h_proto == bpf_htons(ETH_P_ARP)) {
		struct arp_eth_ipv4 *arp = (void *)(eth + 1);
		if ((void *)(arp + 1) > data_end)
			return 0;
		if (arp->ptype != bpf_htons(ETH_P_IP) || arp->hlen != 6 || arp->plen != 4)
			return 0;
		__builtin_memset(key, 0, 10);
		key[10] = 0xff;
		key[11] = 0xff;
		__builtin_memcpy(&key[12], arp->tpa, 4);
		return 1;
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end)
			return 0;
		// Neighbour discovery carries no extension headers: a node
		// must accept it only with hop limit 255 and ICMPv6 right
		// after the IPv6 header is how every sender builds it.
		if (ip6->nexthdr != IPPROTO_ICMPV6)
			return 0;
		__u8 *icmp = (void *)(ip6 + 1);
		if ((void *)(icmp + ND_MIN_LEN) > data_end)
			return 0;
		if (icmp[0] != ICMPV6_NS && icmp[0] != ICMPV6_NA)
			return 0;
		__builtin_memcpy(key, icmp + ND_TARGET_OFF, 16);
		return 1;
	}
	return 0;
}

SEC("xdp")
int xdp_redirect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct l4info info = {};
	parse_frame(data, data_end, &info);
	if (!info.has_daddr || !bpf_map_lookup_elem(&dst_addrs, info.daddr)) {
		__u8 target[16];
		if (!neigh_target(data, data_end, target) || !bpf_map_lookup_elem(&dst_addrs, target))
			return count(ctx, XDP_PASS);
	}
	// XDP_PASS in the flags: the action when the queue has no socket
	// (kernel >= 5.12).
	return count(ctx, bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS));
}

char __license[] SEC("license") = "Dual BSD/GPL";
