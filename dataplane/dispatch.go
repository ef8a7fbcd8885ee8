package dataplane

// This file is the contract between a Link and its inbound dispatchers
// (dispatch_readv_linux.go, dispatch_recvmmsg_linux.go,
// dispatch_mmap_linux.go).

// rxChannel is what a dispatcher gets from its Link: one descriptor and
// everything needed to account for and hand over what it reads.
type rxChannel struct {
	index    int          // channel number, copied into Frame.Channel
	fd       int          // the data descriptor, non-blocking
	stopFD   int          // an eventfd that becomes readable when the link stops
	opts     *LinkOptions // with defaults applied; read-only
	counters *Counters    // the link's counters: RxPackets/RxBytes on delivery, RxErrors for malformed frames, RxDropped for frames thrown away
	alloc    Allocator
	// deliver hands a batch over, steering to processors or delivering
	// inline. It sets Frame.Hash and Frame.Channel itself. After it
	// returns, the frames' buffers belong to the consumer and the
	// dispatcher must not touch them; the []Frame and Data slices may be
	// reused for the next batch.
	deliver func(frames []Frame)
}

// dispatcher reads one channel.
type dispatcher interface {
	// dispatch blocks until frames arrive or stopFD fires, reads at most
	// one batch and passes the good frames to deliver. It returns
	// ErrClosed once stopFD has fired, and any other error only when the
	// descriptor is unusable (the reader goroutine then stops and the
	// link logs the error). Malformed frames are counted and dropped,
	// never returned as errors.
	dispatch() error
	// release frees everything the dispatcher holds (undelivered buffers,
	// rings). It is called once, after the last dispatch.
	release()
}
