// Package dataplane is sluice's packet I/O engine core: it moves Ethernet
// frames (or IP packets on a TUN) between file descriptors and a consumer, in
// batches, with no gVisor dependency.
//
// # Reading
//
// A Link owns one channel per file descriptor. Each channel has one reader
// goroutine running a dispatcher (readv, recvmmsg or a PACKET_RX_RING, see
// Mode) that reads a batch of frames into memory supplied by the caller's
// Allocator and hands it over. When ProcessorsPerChannel > 1, the reader
// steers each frame to a processor goroutine chosen by FlowHash so that one
// flow is always delivered by the same goroutine, in order; otherwise the
// reader delivers inline. Several channels on one device are expected to be
// AF_PACKET sockets in one PACKET_FANOUT_HASH group, which keeps a flow on a
// single channel (see OpenPacketSocket).
//
// # Ownership
//
// Buffers returned by Allocator.Alloc belong to the dispatcher until they are
// delivered in a Frame; from then on they belong to the Deliverer, which must
// eventually release them (or let the garbage collector do so, depending on
// the allocator). The []Frame slice and each Frame.Data slice are only valid
// during the Deliver call.
//
// # Writing
//
// Outbound frames are collected in a TxBatch and written with sendmmsg on
// sockets (writev on other descriptors). Link.WriteBatch spreads the frames
// of a batch over every channel by their flow hash. Frames that cannot be
// written are counted as dropped, never lost silently.
//
// # Offloads
//
// The virtio_net_hdr that carries GSO and checksum offload between the
// kernel and user space (PACKET_VNET_HDR on packet sockets, IFF_VNET_HDR on
// TUN, see OpenTUN) is parsed and built in vnethdr.go only. Every dispatcher
// checks a received header against its frame (VnetHdr.ValidateFrame) and
// drops and counts a frame whose header lies, so a consumer may act on
// gso_type, gso_size and the checksum flags. Frame.Processor tells a
// consumer which delivering goroutine it is on, for per-goroutine state such
// as GRO tables. ProbeOffloads checks, on a veth or TUN device, what the
// kernel really does with each offload before an endpoint relies on it, and
// OffloadReport (in Stats) says what an endpoint decided and why.
package dataplane
