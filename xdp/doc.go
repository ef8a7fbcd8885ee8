// Package xdp is sluice's AF_XDP engine: sockets with their UMEM and rings,
// a gVisor stack.LinkEndpoint over them, and the three XDP modes of the
// reference (runsc's --xdp): ns, redirect:IFACE and tunnel:IFACE.
//
// # Sockets and memory
//
// Open binds one AF_XDP socket per rx queue of a device. The sockets share
// one UMEM, registered by the first; the others bind with XDP_SHARED_UMEM
// and, being on other queues, have fill and completion rings of their own.
// The UMEM is cut into fixed slices: each socket owns Options.NumFrames
// chunks, half of them for receiving (they cycle fill ring -> kernel -> rx
// ring -> reader -> fill ring) and half for sending (free -> tx ring ->
// kernel -> completion ring -> free). No chunk is ever shared between
// goroutines, so the data path takes no lock on the receive side and one
// lock per socket on the send side. Every chunk's owner is tracked: an
// address coming back from the kernel that is outside the UMEM, runs past
// its chunk, is empty, or names a chunk the kernel was not given is counted
// (Socket.BadDescs, Endpoint.Stats RxErrors) and dropped, never followed.
//
// Binding asks for zero-copy where the driver has it and falls back to
// copy mode (BindAuto); Sockets.Mode says which. veth has no zero-copy
// (KERNEL-NOTES item 5), so every mode on veth runs in copy mode, where the
// kernel copies each frame into the UMEM on receive and into an skb on
// send, and every send needs a sendto(2) kick.
//
// # Rings
//
// The four rings (ring.go) follow libxdp's xsk.h: Reserve and Submit on the
// rings we produce (fill, tx), Peek, Release and Cancel on those we consume
// (rx, completion), and NeedsWakeup. The shared producer and consumer
// indices are read with atomic loads and published with atomic stores, and
// each side caches the other's index, reading it again only when the cache
// runs short. A ring is used by one goroutine at a time.
//
// # Endpoint
//
// Endpoint runs one reader per socket (started by the first Attach): it
// takes a batch of frames from the rx ring, copies them into netstack
// views, optionally through GRO, gives the chunks straight back through the
// fill ring, and then delivers the batch to the stack, so that the kernel
// keeps receiving while the stack works. Outbound packets go to the socket
// their flow hash picks; a run of packets for one socket is copied into send
// chunks (large TCP segments cut into frames on the way, when GSOMaxSize is
// set) and the kernel kicked once. When every send chunk is in flight, a
// write waits a little for completions rather than dropping (backpressure).
// Close stops the readers and fences the writers; the sockets belong to
// whoever opened them (a Link) and outlive the endpoint.
//
// # On veth
//
// AF_XDP on a veth does not beat PACKET_MMAP, and this package does not
// pretend otherwise (bench: `sluice bench dispatch --modes mmap,xdp`):
//
//   - a veth has no zero-copy, so the kernel copies every frame into the
//     UMEM, as PACKET_MMAP copies it into its ring;
//   - a frame sent into a veth is already an skb, and native XDP first
//     moves it into a page of its own when it lacks 256 bytes of headroom,
//     which locally built frames do (veth_convert_skb_to_xdp_buff): a second
//     copy and an allocation that PACKET_MMAP does not make;
//   - a native XDP program on a veth turns TSO off on its peer (KERNEL-NOTES
//     item 4), so a local TCP sender sends MTU-sized frames instead of 64 KiB
//     ones: EndpointOptions.GRO rebuilds them for the stack, and GSOMaxSize
//     lets the stack send large segments the other way.
//
// What AF_XDP brings is the modes a packet socket cannot do: redirect and
// tunnel modes take a NIC's traffic, or part of it, away from the host
// stack before any skb exists, and drivers with zero-copy support skip the
// copy into the UMEM.
//
// # Modes
//
// OpenNS, OpenRedirect and OpenTunnel set up a mode and return a Link: the
// bpf package's programs attached through bpf links, the sockets in the
// redirect program's XSKMAP, and the endpoint. Nothing is pinned, and every
// resource is held by a descriptor of the process (in tunnel mode the veth's
// far end lives in a namespace held only by a descriptor), so the kernel
// removes it all when the process exits, even by SIGKILL. IPv4 and IPv6 work
// in every mode, and every rx queue of the device gets a socket.
//
// The kernel resolves interface indexes in the network namespace of the
// socket or thread that names them, so everything that binds or attaches
// runs through internal/netns on a thread inside the device's namespace.
package xdp
