//go:build ignore
// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Shared pieces of sluice's XDP programs: the per-CPU counters every program
// keeps, and bounds-checked header parsing. Every pointer is checked against
// data_end before it is read, because the verifier rejects anything else and
// because a frame may be truncated or malformed.

#ifndef SLUICE_COMMON_H
#define SLUICE_COMMON_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// Counter slots: the first five are indexed by the XDP action a program
// returned (XDP_ABORTED=0 ... XDP_REDIRECT=4, <linux/bpf.h> enum xdp_action),
// as xdp-tools' xdp_stats does, so every program counts the same way.
// STAT_LOST counts frames a program wanted to hand over but could not (the
// capture ring buffer was full).
#define STAT_LOST 5
#define STAT_MAX 6

struct datarec {
	__u64 packets;
	__u64 bytes;
};

// Per-CPU so that counting needs no atomic operation; user space sums the
// CPUs when it reads.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, struct datarec);
} stats SEC(".maps");

static __always_inline __u32 count(struct xdp_md *ctx, __u32 slot)
{
	struct datarec *rec = bpf_map_lookup_elem(&stats, &slot);
	if (rec) {
		rec->packets++;
		rec->bytes += ctx->data_end - ctx->data;
	}
	return slot;
}

// struct l4info is what the programs need to know about a frame.
struct l4info {
	__u16 eth_proto; // host byte order; 0 if the frame is too short
	__u8 l4_proto;   // IPPROTO_TCP, IPPROTO_UDP, ...; 0 if unknown
	__u8 has_port;   // dport is valid (first fragment of TCP/UDP)
	__u16 dport;     // host byte order
	__u8 daddr[16];  // IPv4 as the v4-mapped address ::ffff:a.b.c.d
	__u8 has_daddr;
};

// IPv6 extension headers walked before giving up on finding the L4 header.
// Four covers hop-by-hop + routing + fragment + destination options, the
// usual chain; deeper chains are treated as "no port", that is not control.
#define MAX_EXT_HDRS 4

static __always_inline void parse_ports(void *l4, void *data_end, __u8 proto,
					struct l4info *info)
{
	if (proto == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;
		if ((void *)(tcp + 1) > data_end)
			return;
		info->dport = bpf_ntohs(tcp->dest);
		info->has_port = 1;
	} else if (proto == IPPROTO_UDP) {
		struct udphdr *udp = l4;
		if ((void *)(udp + 1) > data_end)
			return;
		info->dport = bpf_ntohs(udp->dest);
		info->has_port = 1;
	}
}

static __always_inline void parse_frame(void *data, void *data_end,
					struct l4info *info)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return;
	info->eth_proto = bpf_ntohs(eth->h_proto);

	if (info->eth_proto == ETH_P_IP) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > data_end)
			return;
		__builtin_memset(info->daddr, 0, 10);
		info->daddr[10] = 0xff;
		info->daddr[11] = 0xff;
		__builtin_memcpy(&info->daddr[12], &ip->daddr, 4);
		info->has_daddr = 1;
		info->l4_proto = ip->protocol;
		// A non-first fragment carries no L4 header (RFC 791): its
		// bytes at the L4 offset are payload, not ports.
		if (ip->frag_off & bpf_htons(0x1fff))
			return;
		__u32 ihl = ip->ihl * 4;
		if (ihl < sizeof(*ip))
			return;
		parse_ports((void *)ip + ihl, data_end, ip->protocol, info);
		return;
	}

	if (info->eth_proto == ETH_P_IPV6) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end)
			return;
		__builtin_memcpy(info->daddr, &ip6->daddr, 16);
		info->has_daddr = 1;
		__u8 nexthdr = ip6->nexthdr;
		void *p = ip6 + 1;
#pragma unroll
		for (int i = 0; i < MAX_EXT_HDRS; i++) {
			if (nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
			    nexthdr == IPPROTO_DSTOPTS) {
				__u8 *ext = p;
				if ((void *)(ext + 2) > data_end)
					return;
				nexthdr = ext[0];
				p += (ext[1] + 1) * 8;
			} else if (nexthdr == IPPROTO_FRAGMENT) {
				__u8 *ext = p;
				if ((void *)(ext + 8) > data_end)
					return;
				nexthdr = ext[0];
				// Fragment offset non-zero: no L4 header here.
				if (((ext[2] << 8) | ext[3]) & 0xfff8) {
					info->l4_proto = nexthdr;
					return;
				}
				p += 8;
			} else {
				break;
			}
		}
		info->l4_proto = nexthdr;
		parse_ports(p, data_end, nexthdr, info);
	}
}

#endif
