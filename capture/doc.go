// Package capture records the frames crossing a network interface into pcap
// or pcapng files that tcpdump, tshark and Wireshark read: `sluice capture`.
//
// # Reading
//
// Three ways in, chosen by Options.Via:
//
//   - ViaMMap (the default): a TPACKET_V3 PACKET_RX_RING per channel, read
//     with dataplane.RingReader. Frames are handed over a block at a time
//     and written to the output buffer straight from ring memory: the only
//     copy in user space is the one into the file's write buffer. V3 is the
//     ring dataplane measured fastest for small frames (one wake-up per
//     block, frames of any size packed together; see
//     dataplane/dispatch_mmap_linux.go).
//   - ViaRecvMMsg: recvmmsg(2) into per-channel buffers, with the frame's
//     metadata from PACKET_AUXDATA and SO_TIMESTAMPNS control messages. One
//     more copy per frame than the ring; for kernels or sandboxes that
//     refuse PACKET_RX_RING (ViaMMap falls back to it, and says so).
//   - ViaXDP: sluice's XDP capture program (bpf.CaptureFrames) copies frames
//     into a BPF ring buffer. It sees received frames only (XDP has no
//     egress hook), at most 4096 bytes of each, and it takes the
//     interface's XDP hook for the capture's duration.
//
// With Channels > 1 the AF_PACKET ways open that many sockets in one
// PACKET_FANOUT_HASH group: the kernel spreads flows over them and keeps
// each flow on one socket, so every flow stays in order in the file. Frames
// of different flows are interleaved block by block, so timestamps across
// flows are not sorted. The group has no PACKET_FANOUT_FLAG_DEFRAG: that
// flag reassembles IP fragments before they reach the sockets, and a
// capture must record the fragments as they crossed the wire.
//
// # Filters
//
// A FILTER is tcpdump's filter language. sluice does not implement it: it
// runs `tcpdump -ddd` to compile the expression to classic BPF (tcpdump is
// the reference for the syntax, and libpcap's compiler is the only complete
// one), and attaches the program to every socket with SO_ATTACH_FILTER so
// the kernel drops unwanted frames before they reach a ring. A filter that
// does not compile is an error before anything is opened. For AF_PACKET the
// expression is compiled against the live interface, inside its namespace,
// exactly as tcpdump -i would: libpcap then tests VLAN tags with the
// kernel's ancillary loads (the kernel strips a received tag before the
// filter runs). For ViaXDP, whose frames still carry their tags, it is
// compiled for a plain Ethernet capture and run in user space on each frame
// (Program.Run). Without tcpdump on PATH a filter is an error that says so;
// capturing without one needs nothing. The program's return value is the
// snap length, so the kernel copies no more of a frame than is kept; without
// a FILTER a one-instruction program does just that.
//
// Before its real filter is in place each socket runs one that drops
// everything, and its queue is drained, so no frame from before the
// capture's start is recorded.
//
// # What a frame record holds
//
// A VLAN tag the kernel took out of a received frame is put back (as libpcap
// does), so the file shows the frame as it was on the wire. Timestamps are
// the kernel's receive times, written with microsecond or nanosecond
// resolution (Options.Precision; pcap's nanosecond magic, pcapng's
// if_tsresol). A frame longer than Options.Snaplen is cut to it and keeps
// its wire length.
//
// pcapng files have one section with one interface description (the
// interface's name, a description naming the namespace, dispatch mode and
// channel count, the filter, the snap length and the timestamp resolution)
// and end with an interface statistics block: frames accepted by the filter
// (isb_filteraccept), dropped by the kernel because the ring or buffer was
// full (isb_osdrop) and written (isb_usrdeliv), with start and end times.
// Each enhanced packet block carries:
//
//   - epb_flags: the direction (inbound or outbound) and the reception type
//     (unicast, multicast, broadcast, promiscuous) from the packet socket's
//     sll_pkttype;
//   - epb_queue: the channel (AF_PACKET) or receive queue (XDP) it came from;
//   - epb_dropcount: when the kernel reported drops on that channel since the
//     previous frame, how many;
//   - a custom binary option (code 2989, copyable) with Private Enterprise
//     Number 32473, the IANA number reserved for documentation (RFC 5612),
//     until sluice has one of its own. Its 8 bytes after the PEN are: a
//     version (1), the dispatch mode (1 mmap, 2 recvmmsg, 3 xdp), the
//     channel as a big-endian uint16, and the number of wire segments the
//     frame stands for as a big-endian uint32: 1 for an ordinary frame,
//     more for a GSO super-frame (from its virtio_net_hdr; AF_PACKET sockets
//     are opened with PACKET_VNET_HDR for this), 0 when unknown.
//
// # Output
//
// Records are appended whole to a large write buffer that is written out when
// full. When a write fails part way (a full disk), the file is truncated to
// the last whole record, so it stays readable; the capture then ends with
// an error that says how many frames the file holds. -C, -G and -W rotate
// files like tcpdump's options of the same letters; every file is complete
// on its own (pcapng files each get a section, interface and statistics
// block).
//
// # Ending
//
// A capture ends when its context is cancelled (SIGINT), after Count frames,
// after Duration, when its interface is removed, or on a write error. In the
// first three cases the blocks the kernel was still filling are collected
// (the reader waits one ring retire timeout for them), the last statistics
// are written and the file is flushed and closed: it is complete.
package capture
