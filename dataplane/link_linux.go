//go:build linux

package dataplane

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/rawfile"
)

// Link moves frames between a set of descriptors (its channels) and a
// Deliverer. Create it with New, start its goroutines with Start, stop them
// with Close and join them with Wait. WriteBatch, Stats, Counters, Mode and
// NumChannels are safe to call from any goroutine at any time.
//
// Threading: each channel has one reader goroutine and, when
// ProcessorsPerChannel > 1, that many processor goroutines. Each channel
// has one writer state guarded by its own mutex, so concurrent WriteBatch
// calls serialise per channel, not per link.
type Link struct {
	opts     LinkOptions // defaults applied, slices copied; read-only
	d        Deliverer
	counters Counters
	guard    *FaultGuard
	chans    []*channel
	// stopFD is one eventfd for every reader and blocked writer; it is
	// made readable by Close and never read, so it stays readable.
	stopFD int
	// closed is set by Close before stopFD fires. It is read without mu
	// by the readers between batches and by writers under their
	// channel's mutex.
	closed atomic.Bool

	mu       sync.Mutex
	started  bool // guarded by mu
	live     int  // guarded by mu; goroutines started and not yet returned
	released bool // guarded by mu
	wg       sync.WaitGroup
}

// channel is one descriptor of a Link.
type channel struct {
	rx    rxChannel
	mode  Mode
	disp  dispatcher
	procs []*processor // nil when the reader delivers inline
	tx    txQueue
	// fallbackErr is why the requested mode was not used, nil if it was.
	fallbackErr error
}

// New creates a Link over opts.FDs that hands received frames to d. It takes
// a copy of opts; the caller's struct and slices are never modified. The
// descriptors are borrowed: New makes them non-blocking, and they must stay
// open until Wait returns; the Link never closes them. Each channel's
// dispatcher (and, for PacketMMap, its ring) is set up here, so that Mode
// reports the mode in use before Start.
func New(opts LinkOptions, d Deliverer) (*Link, error) {
	opts = opts.withDefaults()
	opts.FDs = slices.Clone(opts.FDs)
	opts.BufferShape = slices.Clone(opts.BufferShape)
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if d == nil {
		return nil, errors.New("dataplane: New: Deliverer is nil")
	}
	stopFD, err := rawfile.NewStopFD()
	if err != nil {
		return nil, fmt.Errorf("dataplane: create stop eventfd: %w", err)
	}
	l := &Link{opts: opts, d: d, stopFD: stopFD}
	faults := opts.Faults
	if faults.Logger == nil {
		faults.Logger = opts.Logger
	}
	l.guard = NewFaultGuard(faults, &l.counters, len(opts.FDs)*opts.ProcessorsPerChannel)
	logged := map[string]bool{}
	for i, fd := range opts.FDs {
		c, err := l.newChannel(i, fd, logged)
		if err != nil {
			for _, c := range l.chans {
				c.disp.release()
			}
			unix.Close(stopFD)
			return nil, err
		}
		l.chans = append(l.chans, c)
	}
	return l, nil
}

// fdKind is what a descriptor turned out to be.
type fdKind struct {
	socket   bool
	sockType int // SOCK_RAW, SOCK_DGRAM...; 0 for non-sockets
	family   int // AF_PACKET, AF_UNIX...; 0 for non-sockets
}

func probeFD(fd int) (fdKind, error) {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if errors.Is(err, unix.ENOTSOCK) {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err != nil {
			return fdKind{}, os.NewSyscallError("fcntl F_GETFL", err)
		}
		return fdKind{}, nil
	}
	if err != nil {
		return fdKind{}, os.NewSyscallError("getsockopt SO_TYPE", err)
	}
	k := fdKind{socket: true, sockType: typ}
	if k.family, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil {
		// SO_DOMAIN is Linux 2.6.32; getsockname says it too.
		sa, err := unix.Getsockname(fd)
		if err != nil {
			return fdKind{}, os.NewSyscallError("getsockname", err)
		}
		if _, ok := sa.(*unix.SockaddrLinklayer); ok {
			k.family = unix.AF_PACKET
		}
	}
	return k, nil
}

func (l *Link) newChannel(i, fd int, logged map[string]bool) (*channel, error) {
	kind, err := probeFD(fd)
	if err != nil {
		return nil, fmt.Errorf("dataplane: LinkOptions.FDs[%d] = %d: %w", i, fd, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("dataplane: LinkOptions.FDs[%d] = %d: %w", i, fd, os.NewSyscallError("fcntl O_NONBLOCK", err))
	}
	c := &channel{}
	c.rx = rxChannel{
		index:    i,
		fd:       fd,
		stopFD:   l.stopFD,
		opts:     &l.opts,
		counters: &l.counters,
		alloc:    l.opts.Allocator,
	}
	c.rx.deliver = c.deliverInline(l)
	if p := l.opts.ProcessorsPerChannel; p > 1 {
		c.procs = make([]*processor, p)
		for j := range c.procs {
			c.procs[j] = newProcessor(l.deliverCounted, l.dropFrame, l.closed.Load)
		}
		c.rx.deliver = c.deliverSteered(l)
	}
	c.tx.init(fd, kind.socket, l.opts.SendBatchSize)
	l.pickDispatcher(c, kind, logged)
	return c, nil
}

// pickDispatcher sets c's dispatcher: the requested mode if the descriptor
// supports it, else the next one down (PacketMMap -> RecvMMsg -> Readv),
// logging each reason once per link.
func (l *Link) pickDispatcher(c *channel, k fdKind, logged map[string]bool) {
	fallback := func(from, to Mode, reason error) {
		if c.fallbackErr == nil {
			c.fallbackErr = reason
		}
		key := from.String() + to.String() + reason.Error()
		if logged[key] {
			return
		}
		logged[key] = true
		l.opts.Logger.Warn("dataplane: dispatch mode falls back",
			"requested", from.String(), "using", to.String(), "channel", c.rx.index, "fd", c.rx.fd, "reason", reason.Error())
	}
	// A zero-byte read is end of file unless datagrams can be empty.
	eofOnZero := !k.socket || k.sockType == unix.SOCK_STREAM || k.sockType == unix.SOCK_SEQPACKET
	mode := l.opts.Mode
	if mode == PacketMMap {
		if k.family == unix.AF_PACKET {
			d, err := newMMapDispatcher(&c.rx)
			if err == nil {
				c.disp, c.mode = d, PacketMMap
				return
			}
			fallback(PacketMMap, RecvMMsg, err)
		} else {
			fallback(PacketMMap, RecvMMsg, fmt.Errorf("descriptor is not an AF_PACKET socket: %w", ErrNotSupported))
		}
		mode = RecvMMsg
	}
	if mode == RecvMMsg {
		if k.socket {
			c.disp, c.mode = newRecvMMsgDispatcher(&c.rx, eofOnZero), RecvMMsg
			return
		}
		fallback(RecvMMsg, Readv, fmt.Errorf("descriptor is not a socket: %w", ErrNotSupported))
	}
	c.disp, c.mode = newReadvDispatcher(&c.rx, eofOnZero), Readv
}

// deliverInline is the rxChannel.deliver of a channel without processors.
func (c *channel) deliverInline(l *Link) func([]Frame) {
	return func(frames []Frame) {
		c.stamp(frames)
		l.deliverCounted(frames)
	}
}

// deliverSteered is the rxChannel.deliver of a channel with processors:
// each frame goes to processor Hash % P.
func (c *channel) deliverSteered(l *Link) func([]Frame) {
	touched := make([]bool, len(c.procs))
	return func(frames []Frame) {
		c.stamp(frames)
		p := uint32(len(c.procs))
		base := c.rx.index * len(c.procs)
		for i := range frames {
			f := &frames[i]
			j := f.Hash % p
			f.Processor = base + int(j)
			if !c.procs[j].push(f) {
				l.dropFrame(f)
				continue
			}
			touched[j] = true
		}
		for j, t := range touched {
			if t {
				c.procs[j].notify()
				touched[j] = false
			}
		}
	}
}

// stamp sets the fields the dispatchers leave to the link. Processor is set
// here for inline delivery (channel i's reader is deliverer i, since
// ProcessorsPerChannel is 1) and overwritten by deliverSteered.
func (c *channel) stamp(frames []Frame) {
	o := c.rx.opts
	for i := range frames {
		f := &frames[i]
		f.Channel = c.rx.index
		f.Processor = c.rx.index
		f.Hash = FlowHash(f.Head(), o.EthernetHeader, o.HashSeed)
	}
}

// deliverCounted counts frames as received and hands them over, containing
// a panic to the frame that raised it (FaultGuard).
func (l *Link) deliverCounted(frames []Frame) {
	var n uint64
	for i := range frames {
		n += uint64(frames[i].Len)
	}
	l.counters.RxPackets.Add(uint64(len(frames)))
	l.counters.RxBytes.Add(n)
	l.guard.Deliver(l.d, frames)
}

// dropFrame frees a received frame that will not be delivered and counts
// it in RxDropped.
func (l *Link) dropFrame(f *Frame) {
	for _, b := range f.Data {
		l.opts.Allocator.Free(b)
	}
	l.counters.RxDropped.Add(1)
}

// Start starts the reader goroutine of every channel and its processors.
// Calling it again, or after Close, does nothing.
func (l *Link) Start() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.started || l.closed.Load() {
		return
	}
	l.started = true
	for _, c := range l.chans {
		for _, p := range c.procs {
			l.spawnLocked(p.run)
		}
		l.spawnLocked(func() { l.read(c) })
	}
}

func (l *Link) spawnLocked(fn func()) {
	l.live++
	l.wg.Add(1)
	go func() {
		defer l.exited()
		fn()
	}()
}

// exited accounts for a goroutine's end; the last one out after Close
// releases the link's resources.
func (l *Link) exited() {
	l.mu.Lock()
	l.live--
	if l.live == 0 && l.closed.Load() {
		l.releaseLocked()
	}
	l.mu.Unlock()
	l.wg.Done()
}

// read is a channel's reader goroutine.
func (l *Link) read(c *channel) {
	defer func() {
		for _, p := range c.procs {
			p.close()
		}
	}()
	// closed is checked between batches too, because a descriptor that
	// always has data never makes the dispatcher wait on stopFD.
	for !l.closed.Load() {
		err := c.disp.dispatch()
		if err == nil {
			continue
		}
		if !errors.Is(err, ErrClosed) {
			l.opts.Logger.Error("dataplane: reader stopped", "channel", c.rx.index, "fd", c.rx.fd, "mode", c.mode.String(), "err", err.Error())
			if l.opts.Closed != nil {
				l.opts.Closed(err)
			}
		}
		return
	}
}

// Close stops the link: blocked readers and writers return, later
// WriteBatch calls return ErrClosed. It does not wait; Wait does. Close is
// idempotent and never closes the descriptors.
func (l *Link) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed.Load() {
		return nil
	}
	l.closed.Store(true)
	err := rawfile.Stop(l.stopFD)
	if l.live == 0 {
		l.releaseLocked()
	}
	if err != nil {
		return fmt.Errorf("dataplane: close link: %w", err)
	}
	return nil
}

// releaseLocked frees what the link holds once no goroutine uses it:
// undelivered buffers, rings, the stop eventfd. l.mu is held.
func (l *Link) releaseLocked() {
	if l.released {
		return
	}
	l.released = true
	for _, c := range l.chans {
		// A writer that saw the link open may still be inside, polling
		// stopFD; it returns promptly since stopFD fired. Later ones
		// see closed under the lock and do not touch stopFD.
		c.tx.mu.Lock()
		c.tx.mu.Unlock()
		c.disp.release()
	}
	unix.Close(l.stopFD)
}

// Wait blocks until every goroutine Start started has returned: after Close,
// or when every reader stopped on an unusable descriptor. Once Wait has
// returned after Close, every undelivered buffer has been freed and the
// descriptors may be closed. Before Start, it returns at once.
func (l *Link) Wait() { l.wg.Wait() }

// Stats returns a snapshot of the link's counters.
func (l *Link) Stats() Stats { return l.counters.Snapshot() }

// Counters returns the link's live counters, for callers that count their
// own drops and errors (a consumer that refuses a frame, for example) in the
// same place.
func (l *Link) Counters() *Counters { return &l.counters }

// Faults returns the link's fault guard: a Deliverer reports the frame it is
// handling to it (FaultGuard.Handling), so that a panic costs only that
// frame.
func (l *Link) Faults() *FaultGuard { return l.guard }

// NumDeliverers returns the number of goroutines that call Deliver:
// NumChannels * ProcessorsPerChannel. Frame.Processor is below it.
func (l *Link) NumDeliverers() int { return len(l.chans) * l.opts.ProcessorsPerChannel }

// NumChannels returns the number of channels (descriptors).
func (l *Link) NumChannels() int { return len(l.chans) }

// Mode returns the dispatch mode channel i uses, after any fallback; Mode(-1)
// for a channel that does not exist.
func (l *Link) Mode(i int) Mode {
	if i < 0 || i >= len(l.chans) {
		return Mode(-1)
	}
	return l.chans[i].mode
}
