package dataplane

// Buffer is one piece of memory a frame is read into. Ref is an opaque handle
// the Allocator may use to find its own bookkeeping again (a gVisor
// *buffer.View, for example); the dataplane never looks at it.
type Buffer struct {
	Data []byte
	Ref  any
}

// Allocator supplies the memory that dispatchers read frames into, so that a
// consumer can have frames read straight into its own buffers.
//
// Alloc and Free are called from reader goroutines, concurrently when a Link
// has several channels.
type Allocator interface {
	// Alloc returns a buffer with len(Data) == size.
	Alloc(size int) Buffer
	// Free returns a buffer that was never delivered (at Close, or when a
	// frame is dropped).
	Free(Buffer)
}

// Frame is one received frame.
type Frame struct {
	// Data holds the frame's bytes in order, spread over one or more
	// buffers; the last buffer is cut to the frame's length. The Buffer
	// memory is owned by the Deliverer from Deliver on; the Data slice
	// itself is only valid during the Deliver call.
	Data []Buffer
	// Len is the frame's length in bytes (the sum of len(Data[i].Data)),
	// not counting the virtio_net_hdr.
	Len int
	// Vnet is the frame's virtio_net_hdr when the link reads with
	// PACKET_VNET_HDR (HasVnet), zero otherwise.
	Vnet    VnetHdr
	HasVnet bool
	// Channel is the index of the channel (file descriptor) the frame was
	// read from.
	Channel int
	// Processor identifies the goroutine that delivers the frame, among
	// all of the link's delivering goroutines: Channel *
	// ProcessorsPerChannel + the processor's index in its channel (0 when
	// the reader delivers inline). It is below Link.NumDeliverers, and
	// every frame of one Deliver call has the same Processor, so a
	// Deliverer can keep per-goroutine state (a GRO table, scratch
	// memory) in a slice indexed by it without locking it against other
	// deliverers.
	Processor int
	// Hash is the frame's flow hash (see FlowHash).
	Hash uint32
}

// Head returns the first buffer's bytes: at least the link, network and
// transport headers of every frame read with the default buffer shape.
func (f *Frame) Head() []byte {
	if len(f.Data) == 0 {
		return nil
	}
	return f.Data[0].Data
}

// CopyTo copies the frame's bytes into dst and returns the count copied.
func (f *Frame) CopyTo(dst []byte) int {
	n := 0
	for _, b := range f.Data {
		n += copy(dst[n:], b.Data)
	}
	return n
}

// Deliverer takes received frames. Deliver is called by one goroutine per
// processor (or per channel when ProcessorsPerChannel is 1), concurrently
// across processors; all frames of one flow go through the same goroutine, in
// order. Frame.Processor says which goroutine is calling.
type Deliverer interface {
	Deliver(frames []Frame)
}

// DelivererFunc adapts a function to Deliverer.
type DelivererFunc func([]Frame)

// Deliver calls f(frames).
func (f DelivererFunc) Deliver(frames []Frame) { f(frames) }

// HeapAllocator allocates with make and lets the garbage collector reclaim
// buffers: the "--buffer-pooling=false" behaviour.
type HeapAllocator struct{}

// Alloc returns a fresh buffer of size bytes.
func (HeapAllocator) Alloc(size int) Buffer { return Buffer{Data: make([]byte, size)} }

// Free does nothing; the garbage collector reclaims the buffer.
func (HeapAllocator) Free(Buffer) {}
