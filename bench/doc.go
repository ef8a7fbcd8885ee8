// Package bench measures sluice's packet path against gVisor's on a topology
// it builds for itself: two network namespaces joined by a veth pair,
// removed again when the run ends, fails or is cancelled. It never attaches
// to or sends through the machine's real interfaces, and every address it
// uses is in 192.0.2.0/24 (TEST-NET-1) or 2001:db8::/32 (documentation)
// inside those namespaces.
//
// # Topology
//
//	ns slb<pid>-<n>-a                  ns slb<pid>-<n>-b
//	endpoint under test -- va ==veth== vb -- kernel, 192.0.2.2/24
//	(netstack 192.0.2.1, va has no kernel address)   (tcp: and 2001:db8::2/64)
//
// IPv6 is disabled in both namespaces so that no neighbour discovery or MLD
// frame is counted as benchmark traffic, and vb has a permanent neighbour
// entry for 192.0.2.1 so that the kernel never waits on ARP that no stack
// answers during rx_pps and tx_pps. The tcp scenario leaves IPv6 on in ns B
// and gives vb 2001:db8::2/64 (without duplicate address detection) and a
// permanent neighbour entry for the netstack's 2001:db8::1. A run also
// removes namespaces left by an earlier run whose process is gone (killed
// with SIGKILL).
//
// # Scenario "dispatch"
//
// For every dispatch mode (readv, recvmmsg, mmap), channel count and
// implementation (sluice's fdbased endpoint and gVisor's), each on fresh
// AF_PACKET sockets on the same veth, in one run:
//
//   - rx_pps: 64-byte UDP frames (14 Ethernet + 20 IPv4 + 8 UDP + 22 payload
//     bytes, without FCS) are sent as fast as one thread can from ns B with
//     sendmmsg on an AF_PACKET socket, over 64 flows (source ports) so that
//     the PACKET_FANOUT_HASH group spreads them over the channels. The
//     endpoint is attached to a dispatcher that only counts
//     DeliverNetworkPacket calls, so the figure is the cost of the
//     dispatcher and the endpoint alone: frames delivered per second over
//     the measurement window, after a warm-up that is discarded.
//   - tx_pps: prebuilt 64-byte UDP packets (network and transport headers as
//     a stack builds them, the Ethernet header added by the endpoint's
//     AddHeader) are written with WritePackets in batches of 47, one flow
//     per batch. The figure is the frames that reached vb (its rx_packets
//     counter, read over netlink in ns B) per second.
//   - tcp_gbps: a gVisor netstack (IPv4, ARP, TCP; SACK and receive buffer
//     moderation on, as runsc sets them) on the endpoint owns 192.0.2.1/24
//     and runs a TCP sink that reads and discards. A kernel TCP socket in
//     ns B writes 64 KiB chunks to it. The figure is the payload the sink
//     received, in Gbit/s. The endpoint has MTU 1500, RX checksum offload on
//     and no GSO: vb keeps TSO on, so the endpoint receives 64 KiB
//     super-frames with partial checksums, as runsc's does.
//   - rss_mib: the process's peak resident set (VmHWM) during each of the
//     measurements above; the high-water mark is reset (clear_refs 5) just
//     before the measurement's sockets are opened, after a GC, so the
//     endpoint's buffers and rings are included.
//
// Each implementation runs with its own defaults apart from the options
// named above (ProcessorsPerChannel, for one, is left at each one's
// default). gVisor's endpoint never frees its dispatchers' stop eventfds
// or its mmap ring, whose mapping keeps the socket alive and receiving
// after close; the benchmark releases both once that endpoint has stopped,
// so that no measurement pays for an earlier one's leftovers.
//
// Every traffic loop stops at the end of its window or when the context is
// cancelled, and is also bounded in count. Speed is reported, never asserted.
//
// # Scenario "tcp"
//
// TCP throughput between a gVisor netstack (IPv4, IPv6, ARP, TCP; SACK and
// receive buffer moderation on, as runsc sets them; 192.0.2.1/24 and
// 2001:db8::1/64) on the endpoint under test and the kernel in ns B, for
// every combination of:
//
//   - gso: none (GSOMaxSize 0: the stack writes MTU-sized frames), host
//     (GSOMaxSize 64 KiB and sockets with PACKET_VNET_HDR: 64 KiB segments
//     cross to the kernel whole and it segments them), software (GSOMaxSize
//     64 KiB and GVisorGSOEnabled: the stack hands over 64 KiB segments and
//     they are cut into frames in user space);
//   - gro: the endpoint's Options.GRO (in gVisor's endpoint, its stack/gro);
//   - mode: the dispatch mode: readv, recvmmsg, mmap, or, when asked for,
//     xdp (ModeXDP: sluice's xdp endpoint against gVisor's
//     pkg/tcpip/link/xdp, made as in the dispatch scenario on one queue of
//     va, with the configuration's GRO; sluice's is given GSOMaxSize 64 KiB
//     with software GSO. Host GSO is not measured in xdp, AF_XDP carrying
//     no virtio-net header, nor software GSO for gVisor's endpoint, which
//     has no GSO: the reason goes to the progress output);
//   - flows: parallel connections, reported as their total;
//   - dir: up, a kernel TCP sender in ns B writing 64 KiB chunks to a
//     netstack sink (gonet) that reads and discards; down, a netstack
//     sender (gonet) writing 64 KiB chunks as fast as it can to a kernel
//     sink in ns B;
//   - peer_tso: vb's TSO and GSO on (the default: the kernel sends 64 KiB
//     super-frames across the veth) or off (set with the ethtool ioctl, as
//     `ethtool -K vb tso off gso off`: the kernel sends MTU-sized segments,
//     the case GRO is for). Off is measured in the up direction only: going
//     down, the peer sends nothing but ACKs;
//   - ip: 4 by default, or 6.
//
// Both implementations get the same options: one AF_PACKET socket (or
// AF_XDP socket in xdp), MTU
// 1500, RX checksum offload on (the super-frames a TSO veth passes up carry
// partial checksums), TX checksum offload off, the rest at each one's
// default. Each measurement has fresh sockets, a fresh endpoint and a fresh
// stack; the connections are made before the clock starts, and the figure
// is the payload the receivers got during the window, in Gbit/s. The
// stream of every flow is a fixed pseudo-random sequence that the receiver
// compares with what it reads, so corruption, loss or duplication in either
// endpoint fails the measurement rather than counting as throughput. At
// the end the kernel's sockets are reset, so no TIME_WAIT or FIN outlives
// a measurement into the next.
//
//   - tcp_gbps: payload Gbit/s received over the window, all flows.
//   - retrans: segments the senders retransmitted during the window: the
//     kernel's sockets' TCP_INFO tcpi_total_retrans going up, the
//     netstack's TCP.Retransmits going down.
//   - rss_mib: as in dispatch.
//
// # Output
//
// A Report holds Rows. Report.WriteTable prints one line per (metric,
// configuration) with a column per implementation, the ratio of the first
// implementation to the second (sluice/gvisor), and the resource metrics
// taken during that measurement (rss_mib, retrans) for each implementation,
// counts (retrans) as whole numbers:
//
//	metric    unit      mode  channels  sluice  gvisor  sluice/gvisor  rss_mib sluice  rss_mib gvisor
//	rx_pps    frames/s  mmap  2         412345  398765  1.03           21.4            22.0
//
// Report.WriteJSON prints one JSON object per line and per Row:
//
//	{"scenario":"dispatch","impl":"sluice","config":"mode=mmap,channels=2","metric":"rx_pps","value":412345,"unit":"frames/s"}
//	{"scenario":"dispatch","impl":"sluice","config":"mode=mmap,channels=2","metric":"rss_mib","value":21.4,"unit":"MiB","during":"rx_pps"}
//
// and for the tcp scenario:
//
//	{"scenario":"tcp","impl":"sluice","config":"gso=host,gro=on,mode=mmap,flows=4,dir=down,peer_tso=on","metric":"tcp_gbps","value":8.1,"unit":"Gbit/s"}
//	{"scenario":"tcp","impl":"sluice","config":"gso=host,gro=on,mode=mmap,flows=4,dir=down,peer_tso=on","metric":"retrans","value":12,"unit":"segments","during":"tcp_gbps"}
//
// (IPv6 configurations end in ",ip=6"; a tcp configuration without an ip
// key is IPv4.)
//
// scenario names the scenario; impl is "sluice" or "gvisor"; config lists
// the configuration as comma-separated key=value pairs; metric is one of
// rx_pps (frames/s), tx_pps (frames/s), tcp_gbps (Gbit/s), rss_mib (MiB),
// retrans (segments), and, for later scenarios, rr_us (us),
// captured_frames and dropped_frames (frames), cpu_us_per_frame (us). A
// resource metric such as rss_mib or retrans carries "during", the metric
// whose measurement it was taken over; other rows omit it. A measurement
// that failed has no row.
package bench
