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
package dataplane
