// Package bridge forwards Ethernet frames, unterminated, between two
// devices: the sandbox's veth and an uplink veth whose far end sits in a
// namespace where the kernel routes. It is the engine of the sandbox's
// `bridge` network stack (`sluice run --network plugin --plugin bridge`): no
// user-space TCP/IP stack sits in the path, TCP stays end to end between the
// command and its peer, and GSO super-frames cross whole.
//
//	sandbox netns           stack netns (private)             uplink netns
//	COMMAND -> eth0 ==veth== side A --bridge-- side B ==veth== kernel router
//
// # Forwarding
//
// Each side is a dataplane.Link over AF_PACKET sockets opened with
// PACKET_VNET_HDR: a frame read on one side is written to the other with
// its virtio_net_hdr unchanged, so a 64 KiB TCP super-frame (and its partial
// checksum) crosses as one frame and the kernel on the far side segments it
// only if it must. The frame's buffers are written as they were read
// (TxBatch parts, no copy) and go back to a pool once written.
//
// # Policy
//
// Frames from side A (the sandbox) are egress. The first frame of each TCP
// or UDP flow is handed to Options.Decide once; the verdict is kept in a
// flow table (bounded, with idle expiry) and applied to the flow's later
// frames in both directions. A denied flow is answered, as a router that
// filters answers: a TCP segment with a RST, a UDP datagram with an ICMP or
// ICMPv6 port unreachable (the answer the sandbox's netstack gives too, so a
// program sees ECONNREFUSED either way). Frames from side B (ingress) of a
// TCP or UDP flow the sandbox did not open are dropped: as with the
// netstack, nothing outside reaches the sandbox unless it asked. Other
// frames (ARP, NDP, ICMP, fragments after the first) pass: they carry no
// ports to decide on and are what the sandbox needs to talk to its router.
//
// Options.Hook sees every frame read, both ways, and each answer the bridge
// makes, after the policy; it may drop a frame (and is where --pcap-log and
// --log-packets record).
//
// # Ownership
//
// The bridge borrows the packet socket descriptors of both sides: they must
// stay open until Wait returns. Close stops both links; Wait joins their
// goroutines.
package bridge
