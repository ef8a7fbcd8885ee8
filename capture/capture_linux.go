//go:build linux

package capture

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/bpf"
	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/netns"
)

var nativeEndian = binary.NativeEndian

// errStop ends a reader loop without an error: the count was reached.
var errStop = errors.New("capture: stop")

// Stats describe a capture so far.
type Stats struct {
	// Frames and Bytes are what was written (Bytes: captured bytes, as
	// in the file, without record headers).
	Frames, Bytes uint64
	// Received is the frames the kernel accepted through the filter
	// (PACKET_STATISTICS tp_packets, drops included; with ViaXDP, the
	// frames read from the ring buffer).
	Received uint64
	// KernelDrops is the frames the kernel dropped because the ring or
	// socket buffer (or the XDP ring buffer) was full.
	KernelDrops uint64
	// Filtered is the frames a user-space filter (ViaXDP) rejected.
	Filtered uint64
	// Files is the number of files opened.
	Files int
	// Elapsed is the time since capturing began.
	Elapsed time.Duration
}

// Capture is one capture, from Open to Run's return.
type Capture struct {
	opts    Options
	via     Via // after any fallback
	prog    Program
	live    bool // prog was compiled against the live interface
	chans   []*channel
	ifMAC   net.HardwareAddr
	sink    *sink
	started time.Time
	ended   time.Time // set by finish; guarded by mu

	// mu serialises writing: the sink, OnFrame and the counts.
	mu      sync.Mutex
	written uint64 // frames written; guarded by mu
	wbytes  uint64 // their captured bytes; guarded by mu
	full    bool   // Count frames written; guarded by mu
	scratch []byte // OnFrame's frame; guarded by mu
	rec     record // the record being written; guarded by mu
	stopped atomic.Bool
	stopCh  chan struct{} // closed once, by requestStop
	stopOne sync.Once

	filtered atomic.Uint64
	xdpSeen  atomic.Uint64
	xdpLost  atomic.Uint64

	// fdMu guards the channels' descriptors against being closed while
	// Stats reads their kernel counters: a closed descriptor's number may
	// already belong to another socket, whose counters reading would reset.
	fdMu      sync.RWMutex
	fdsClosed bool // guarded by fdMu
}

// channel is one AF_PACKET socket of a capture.
type channel struct {
	idx  int
	fd   int
	ring *dataplane.RingReader // ViaMMap
	rx   *recvReader           // ViaRecvMMsg
	// Kernel counters, accumulated: PACKET_STATISTICS resets on read.
	packets, drops atomic.Uint64
	// pendingDrops are drops not yet reported on a frame (epb_dropcount).
	pendingDrops atomic.Uint64
	vnet         bool
}

// Open checks opts, compiles the filter, opens the sockets (or prepares
// the XDP capture) and the output, so that every error a user can fix is
// reported before capturing starts. Frames are captured from the moment
// Open returns; Run writes them. The caller must call Run or Close.
func Open(ctx context.Context, opts Options) (_ *Capture, err error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	c := &Capture{opts: opts, via: opts.Via, stopCh: make(chan struct{})}
	defer func() {
		if err != nil {
			c.closeSockets()
		}
	}()
	if err := c.compile(ctx); err != nil {
		return nil, err
	}
	if err := c.lookupInterface(); err != nil {
		return nil, err
	}
	if c.via != ViaXDP {
		if err := c.openSockets(); err != nil {
			return nil, err
		}
	}
	c.sink = newSink(sinkConfig{
		output:    opts.Output,
		stdout:    opts.Stdout,
		fileSize:  opts.FileSize,
		every:     opts.RotateEvery,
		fileCount: opts.FileCount,
		info:      c.fileInfo(),
		stats:     c.trailerStats,
	}, newEncoder(opts.Format, opts.Snaplen, opts.Precision == Nano, c.via))
	c.started = time.Now()
	if err := c.sink.open(c.started); err != nil {
		return nil, err
	}
	if c.via != ViaXDP {
		// From here on frames are captured.
		for _, ch := range c.chans {
			if err := attachFilter(ch.fd, c.prog); err != nil {
				return nil, fmt.Errorf("capture: attach filter (interface %s): %w", opts.Interface, err)
			}
		}
	}
	return c, nil
}

// Via returns the way frames are read, after any fallback.
func (c *Capture) Via() Via { return c.via }

// Filter returns the compiled filter and whether it was compiled against the
// live interface.
func (c *Capture) Filter() (Program, bool) { return c.prog, c.live }

// compile turns the filter into c.prog.
func (c *Capture) compile(ctx context.Context) error {
	o := c.opts
	if o.Filter == "" {
		c.prog = snapProgram(o.Snaplen)
		return nil
	}
	// The savefile view first: it needs no interface, so a bad
	// expression is reported as such.
	dead, err := compileDead(ctx, o.TcpdumpPath, o.Filter, o.Snaplen)
	if err != nil {
		if errors.Is(err, ErrNoTcpdump) {
			return fmt.Errorf("capture: filter %q: %w", o.Filter, err)
		}
		return fmt.Errorf("capture: invalid filter %q: %w", o.Filter, err)
	}
	c.prog = dead
	if c.via == ViaXDP {
		// XDP frames still carry their VLAN tags: the savefile view
		// is the right one, run in user space.
		return nil
	}
	var live Program
	err = netns.Do(o.NetNS, func() error {
		var err error
		live, err = compileLive(ctx, o.TcpdumpPath, o.Filter, o.Interface, o.Snaplen)
		return err
	})
	if err != nil {
		o.Logger.Warn("capture: could not compile the filter against the live interface; using the savefile compilation, in which vlan matches tags in the frame (the kernel strips received tags before the filter runs)",
			"interface", o.Interface, "err", err.Error())
		return nil
	}
	c.prog, c.live = live, true
	return nil
}

// lookupInterface checks that the interface exists (for XDP, which opens no
// socket) and finds its MAC address, which tells XDP frames addressed to
// the host from others.
func (c *Capture) lookupInterface() error {
	return netns.Do(c.opts.NetNS, func() error {
		ifi, err := net.InterfaceByName(c.opts.Interface)
		if err != nil {
			return fmt.Errorf("capture: interface %q (netns %s): %w", c.opts.Interface, nsName(c.opts.NetNS), err)
		}
		c.ifMAC = ifi.HardwareAddr
		return nil
	})
}

func nsName(ns string) string {
	if ns == "" {
		return "current"
	}
	return ns
}

// openSockets opens the channels' sockets, each with a drop-everything
// filter and an empty queue, in one fanout group, with their rings or
// recvmmsg readers.
func (c *Capture) openSockets() error {
	o := c.opts
	so := dataplane.SocketOptions{NetNS: o.NetNS, Interface: o.Interface, VnetHdr: !o.NoGSOInfo}
	if c.via == ViaRecvMMsg {
		so.RcvBufBytes = o.BufferBytes
	}
	var group uint16
	timestamps := false
	for i := range o.Channels {
		fd, err := dataplane.OpenPacketSocket(so)
		if err != nil {
			return fmt.Errorf("capture: %w", err)
		}
		ch := &channel{idx: i, fd: fd, vnet: so.VnetHdr}
		c.chans = append(c.chans, ch)
		// Nothing reaches the socket until its real filter is in
		// place, which happens once the output is open.
		if err := attachFilter(fd, Program{{Op: bpfRet | bpfK, K: 0}}); err != nil {
			return fmt.Errorf("capture: attach drop-all filter: %w", err)
		}
		if o.Channels > 1 {
			if group, err = joinFanout(fd, i == 0, group); err != nil {
				return fmt.Errorf("capture: channel %d: %w", i, err)
			}
		}
		dataplane.DrainSocketQueue(fd)
	}
	for _, ch := range c.chans {
		if c.via == ViaMMap {
			r, err := dataplane.NewRingReader(ch.fd, dataplane.RingOptions{
				BlockSize:     min(dataplane.DefaultReaderBlockSize, o.BufferBytes/4),
				Blocks:        max(4, o.BufferBytes/min(dataplane.DefaultReaderBlockSize, o.BufferBytes/4)),
				RetireTimeout: o.RingRetire,
			})
			if err == nil {
				ch.ring = r
				continue
			}
			if !errors.Is(err, dataplane.ErrNotSupported) || ch.idx > 0 {
				return fmt.Errorf("capture: channel %d: %w", ch.idx, err)
			}
			o.Logger.Warn("capture: no PACKET_RX_RING; reading with recvmmsg instead", "reason", err.Error())
			c.via = ViaRecvMMsg
		}
		vnetLen := 0
		if ch.vnet {
			vnetLen = dataplane.VnetHdrLen
		}
		rx, err := newRecvReader(ch.fd, o.Snaplen, vnetLen)
		if err != nil {
			return fmt.Errorf("capture: channel %d: %w", ch.idx, err)
		}
		ch.rx = rx
		timestamps = true
	}
	if timestamps {
		// SO_TIMESTAMPNS makes the kernel stamp frames as they arrive,
		// but it switches that on from a workqueue (net_enable_timestamp
		// in net/core/dev.c). Until then frames are stamped when read,
		// later than the ones that follow: give it a moment before the
		// filter lets frames in.
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// joinFanout joins fd to a PACKET_FANOUT_HASH group: a new one with an id
// the kernel picks when first, else group. Hash mode keeps each flow on one
// socket, so in order. No PACKET_FANOUT_FLAG_DEFRAG: it would reassemble IP
// fragments before the sockets see them (see the package doc).
func joinFanout(fd int, first bool, group uint16) (uint16, error) {
	flags := unix.PACKET_FANOUT_HASH
	if first {
		flags |= unix.PACKET_FANOUT_FLAG_UNIQUEID
	}
	v := int32(uint32(group) | uint32(flags)<<16)
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT, int(v)); err != nil {
		return 0, fmt.Errorf("join fanout group %d: %w", group, os.NewSyscallError("setsockopt PACKET_FANOUT", err))
	}
	if !first {
		return group, nil
	}
	g, err := unix.GetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT)
	if err != nil {
		return 0, os.NewSyscallError("getsockopt PACKET_FANOUT", err)
	}
	return uint16(g), nil
}

// attachFilter attaches p to fd with SO_ATTACH_FILTER, replacing the
// previous one atomically.
func attachFilter(fd int, p Program) error {
	insns := make([]unix.SockFilter, len(p))
	for i, in := range p {
		insns[i] = unix.SockFilter{Code: in.Op, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	prog := unix.SockFprog{Len: uint16(len(insns)), Filter: &insns[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
		return os.NewSyscallError("setsockopt SO_ATTACH_FILTER", err)
	}
	return nil
}

func (c *Capture) fileInfo() fileInfo {
	o := c.opts
	desc := fmt.Sprintf("%s (netns %s), captured by sluice via %s", o.Interface, nsName(o.NetNS), c.via)
	if len(c.chans) > 1 {
		desc += fmt.Sprintf(" on %d channels", len(c.chans))
	}
	info := fmt.Sprintf("mode=%s channels=%d netns=%s gso_info=%t", c.via, max(1, len(c.chans)), nsName(o.NetNS), c.via != ViaXDP && !o.NoGSOInfo)
	return fileInfo{
		iface:       o.Interface,
		description: desc,
		filter:      o.Filter,
		snaplen:     o.Snaplen,
		nano:        o.Precision == Nano,
		userAppl:    "sluice",
		sluiceInfo:  info,
	}
}

// trailerStats are the numbers of a pcapng statistics block, now.
func (c *Capture) trailerStats() trailerStats {
	s := c.statsLocked()
	return trailerStats{
		start:      c.started.UnixNano(),
		end:        time.Now().UnixNano(),
		accepted:   s.Received,
		kernelDrop: s.KernelDrops,
		delivered:  s.Frames,
	}
}

// Stats returns the capture's counters so far. Safe from any goroutine.
func (c *Capture) Stats() Stats {
	c.collectAll()
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.statsLocked()
	if c.sink != nil {
		s.Files = c.sink.files
	}
	return s
}

// statsLocked adds the counters up without reading the kernel's. c.mu is
// held.
func (c *Capture) statsLocked() Stats {
	s := Stats{
		Frames:   c.written,
		Bytes:    c.wbytes,
		Filtered: c.filtered.Load(),
		Elapsed:  time.Since(c.started),
	}
	if !c.ended.IsZero() {
		s.Elapsed = c.ended.Sub(c.started)
	}
	if c.via == ViaXDP {
		s.Received = c.xdpSeen.Load()
		s.KernelDrops = c.xdpLost.Load()
		return s
	}
	for _, ch := range c.chans {
		s.Received += ch.packets.Load()
		s.KernelDrops += ch.drops.Load()
	}
	return s
}

// collectAll reads every channel's kernel counters, unless the sockets are
// closed.
func (c *Capture) collectAll() {
	c.fdMu.RLock()
	defer c.fdMu.RUnlock()
	if c.fdsClosed {
		return
	}
	for _, ch := range c.chans {
		ch.collect()
	}
}

// collect reads the channel's PACKET_STATISTICS (which the kernel then
// resets) into its counters.
func (ch *channel) collect() {
	st, err := unix.GetsockoptTpacketStats(ch.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return
	}
	ch.packets.Add(uint64(st.Packets))
	if st.Drops > 0 {
		ch.drops.Add(uint64(st.Drops))
		ch.pendingDrops.Add(uint64(st.Drops))
	}
}

// takeDrops returns the drops not yet reported on a frame.
func (ch *channel) takeDrops() uint64 {
	if ch.pendingDrops.Load() == 0 {
		return 0
	}
	return ch.pendingDrops.Swap(0)
}

// requestStop asks every reader to stop.
func (c *Capture) requestStop() {
	c.stopOne.Do(func() {
		c.stopped.Store(true)
		close(c.stopCh)
		for _, ch := range c.chans {
			if ch.ring != nil {
				_ = ch.ring.Stop()
			}
			if ch.rx != nil {
				_ = ch.rx.stop()
			}
		}
	})
}

// statusTick is how often Run collects kernel statistics, checks the
// duration and writes out an idle buffer.
const statusTick = 100 * time.Millisecond

// Run captures until ctx is done, Count frames were written, Duration
// passed, the interface is removed or writing fails, then completes and
// closes the output. It returns nil when the capture ended as asked (ctx,
// Count, Duration, -W); otherwise the error, with the file complete up to
// the last whole frame.
func (c *Capture) Run(ctx context.Context) error {
	defer c.closeSockets()
	if c.via == ViaXDP {
		return c.finish(c.runXDP(ctx))
	}
	if c.opts.Ready != nil {
		c.opts.Ready()
	}
	errc := make(chan error, len(c.chans))
	var wg sync.WaitGroup
	for _, ch := range c.chans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- c.read(ch)
		}()
	}
	runErr := c.supervise(ctx, errc, len(c.chans))
	c.requestStop()
	wg.Wait()
	close(errc)
	for err := range errc {
		if runErr == nil && err != nil {
			runErr = err
		}
	}
	if runErr == nil || errors.Is(runErr, dataplane.ErrDeviceGone) {
		// Collect what the kernel still holds: the blocks it was
		// filling are handed over within the retire timeout.
		c.drain()
	}
	return c.finish(runErr)
}

// supervise waits for the end of the capture, collecting statistics and
// writing out an idle buffer meanwhile. It returns the first reader error.
func (c *Capture) supervise(ctx context.Context, errc chan error, readers int) error {
	tick := time.NewTicker(statusTick)
	defer tick.Stop()
	var deadline <-chan time.Time
	if c.opts.Duration > 0 {
		t := time.NewTimer(c.opts.Duration)
		defer t.Stop()
		deadline = t.C
	}
	flushEvery := time.Second
	if c.opts.Output == "-" {
		flushEvery = 200 * time.Millisecond
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-deadline:
			return nil
		case <-c.stopCh:
			return nil
		case err := <-errc:
			readers--
			if err != nil {
				return err
			}
			if readers == 0 {
				return nil
			}
		case <-tick.C:
			c.collectAll()
			c.mu.Lock()
			err := c.sink.flushIfIdle(flushEvery)
			c.mu.Unlock()
			if err != nil {
				return err
			}
		}
	}
}

// read is a channel's reader goroutine.
func (c *Capture) read(ch *channel) error {
	for !c.stopped.Load() {
		var err error
		if ch.ring != nil {
			_, err = ch.ring.WithFrames(func(fs []dataplane.RingFrame) error { return c.writeRing(ch, fs) })
		} else {
			_, err = ch.rx.read(true, func(fs []recvFrame) error { return c.writeRecv(ch, fs) })
		}
		switch {
		case err == nil:
		case errors.Is(err, dataplane.ErrClosed), errors.Is(err, errStop):
			return nil
		case errors.Is(err, dataplane.ErrDeviceGone):
			return fmt.Errorf("capture: interface %s is gone (removed while capturing): %w", c.opts.Interface, err)
		default:
			return err
		}
	}
	return nil
}

// drain writes what the kernel still holds after the readers stopped, unless
// the count was reached or writing failed.
func (c *Capture) drain() {
	c.mu.Lock()
	done := c.full || c.sink.err != nil
	c.mu.Unlock()
	if done {
		return
	}
	hasRing := false
	for _, ch := range c.chans {
		hasRing = hasRing || ch.ring != nil
	}
	if hasRing {
		// The kernel retires a block that holds frames within the
		// timeout; wait a little longer for the timer to run.
		time.Sleep(c.opts.RingRetire + c.opts.RingRetire/2 + time.Millisecond)
	}
	for _, ch := range c.chans {
		if ch.ring != nil {
			_, _ = ch.ring.Drain(func(fs []dataplane.RingFrame) error { return c.writeRing(ch, fs) })
			continue
		}
		for k := 0; k < 1<<12; k++ {
			n, err := ch.rx.read(false, func(fs []recvFrame) error { return c.writeRecv(ch, fs) })
			if n == 0 || err != nil {
				break
			}
		}
	}
}

// finish writes the last statistics, flushes and closes the output. It
// returns runErr, or the error of closing when the capture ended as asked.
func (c *Capture) finish(runErr error) error {
	c.collectAll()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ended = time.Now()
	if errors.Is(runErr, errFileLimit) {
		runErr = nil
	}
	cerr := c.sink.closeFile()
	var we *WriteError
	if errors.As(runErr, &we) || errors.As(cerr, &we) {
		// What did not reach the file was not captured.
		c.written, c.wbytes = c.sink.total, c.sink.totalB
	}
	if runErr != nil {
		var we *WriteError
		if cerr != nil && !errors.As(runErr, &we) && errors.As(cerr, &we) {
			return errors.Join(runErr, cerr)
		}
		return runErr
	}
	return cerr
}

// Close releases the sockets and closes the output without capturing, for
// a Capture whose Run is never called.
func (c *Capture) Close() error {
	c.closeSockets()
	if c.sink == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sink.closeFile()
}

func (c *Capture) closeSockets() {
	c.fdMu.Lock()
	defer c.fdMu.Unlock()
	if c.fdsClosed {
		return
	}
	c.fdsClosed = true
	for _, ch := range c.chans {
		if ch.ring != nil {
			_ = ch.ring.Close()
		}
		if ch.rx != nil {
			ch.rx.close()
		}
		unix.Close(ch.fd)
	}
}

// writeRing writes frames of a ring block. It runs with the ring's memory
// lent to it: every frame is copied into the write buffer before it returns.
// This is the hot path: one record is reused, and a frame is only looked
// into for its headers when it is a GSO super-frame.
func (c *Capture) writeRing(ch *channel, fs []dataplane.RingFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := &c.rec
	r.queue = uint32(ch.idx)
	if fs[0].Status&dataplane.TPStatusLosing != 0 {
		ch.collect()
	}
	for i := range fs {
		f := &fs[i]
		if c.full {
			return errStop
		}
		r.sec, r.nsec, r.wireLen, r.data, r.pktType = f.Sec, f.Nsec, f.WireLen, f.Data, f.PktType
		r.drops = ch.takeDrops()
		r.hasVLAN = f.HasVLAN
		if f.HasVLAN {
			r.vlanTag = vlanTag(f.VLANTPID, f.VLANTCI)
		}
		r.gsoSegs = 0
		if f.HasVnet {
			r.gsoSegs = 1
			if f.Vnet.IsGSO() {
				r.gsoSegs = gsoSegments(f.Vnet, f.Data, f.WireLen)
			}
		}
		if err := c.writeLocked(r); err != nil {
			return err
		}
	}
	r.data = nil
	return nil
}

// writeRecv writes a recvmmsg batch.
func (c *Capture) writeRecv(ch *channel, fs []recvFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := &c.rec
	r.queue = uint32(ch.idx)
	for i := range fs {
		f := &fs[i]
		if c.full {
			return errStop
		}
		r.sec, r.nsec, r.wireLen, r.data, r.pktType = f.sec, f.nsec, f.wireLen, f.data, f.pktType
		r.drops = ch.takeDrops()
		r.hasVLAN = f.hasVLAN
		if f.hasVLAN {
			r.vlanTag = vlanTag(f.tpid, f.tci)
		}
		r.gsoSegs = 0
		if f.hasVnet {
			r.gsoSegs = gsoSegments(f.vnet, f.data, f.wireLen)
		}
		if err := c.writeLocked(r); err != nil {
			return err
		}
	}
	r.data = nil
	return nil
}

// writeLocked writes r, calls OnFrame and counts. c.mu is held.
func (c *Capture) writeLocked(r *record) error {
	if err := c.sink.write(r); err != nil {
		if errors.Is(err, errFileLimit) {
			c.full = true
			go c.requestStop()
			return errStop
		}
		go c.requestStop()
		return err
	}
	c.written++
	c.wbytes += uint64(r.capLen(c.opts.Snaplen))
	if c.opts.OnFrame != nil {
		c.onFrame(r)
	}
	if c.opts.Count > 0 && c.written >= c.opts.Count {
		c.full = true
		go c.requestStop()
	}
	return nil
}

// onFrame builds the frame as written and hands it to OnFrame.
func (c *Capture) onFrame(r *record) {
	n := r.capLen(c.opts.Snaplen)
	if cap(c.scratch) < n {
		c.scratch = make([]byte, n)
	}
	b := c.scratch[:n]
	r.putFrameBytes(b, n)
	c.opts.OnFrame(FrameInfo{
		Data:        b,
		WireLen:     r.origLen(),
		Time:        int64(r.sec)*1e9 + int64(r.nsec),
		Outbound:    r.pktType == dataplane.PacketOutgoing,
		Channel:     int(r.queue),
		GSOSegments: int(r.gsoSegs),
	})
}

// vlanTag packs a tag for record.vlanTag; TPID 0 (not reported) is 802.1Q.
func vlanTag(tpid, tci uint16) uint32 {
	if tpid == 0 {
		tpid = dataplane.EthPVLAN
	}
	return uint32(tpid)<<16 | uint32(tci)
}

// runXDP captures through the XDP program until ctx ends, the count, the
// duration or the interface goes.
func (c *Capture) runXDP(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-c.stopCh:
		case <-ctx.Done():
		}
		cancel()
	}()
	var deadline <-chan time.Time
	if c.opts.Duration > 0 {
		t := time.NewTimer(c.opts.Duration)
		defer t.Stop()
		deadline = t.C
	}
	gone := make(chan struct{})
	go c.watchXDP(ctx, deadline, gone)
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	st, err := bpf.CaptureFrames(ctx, bpf.CaptureOptions{
		Netns:   c.opts.NetNS,
		Iface:   c.opts.Interface,
		Mode:    bpf.ModeAuto,
		Snaplen: uint32(c.opts.Snaplen),
		Ready: func(*bpf.Attachment) {
			if c.opts.Ready != nil {
				c.opts.Ready()
			}
		},
	}, func(f bpf.Frame) error {
		c.xdpSeen.Add(1)
		data := f.Data
		if c.opts.Filter != "" {
			keep := c.prog.Run(data, Aux{})
			if keep == 0 {
				c.filtered.Add(1)
				return nil
			}
			data = data[:min(len(data), int(keep))]
		}
		r := record{
			sec: uint32(f.Time.Unix()), nsec: uint32(f.Time.Nanosecond()),
			wireLen: f.Length, data: data, queue: f.RxQueue,
			pktType: xdpPktType(data, c.ifMAC, bcast),
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.full {
			return errStop
		}
		return c.writeLocked(&r)
	})
	c.xdpLost.Store(st.Lost)
	select {
	case <-gone:
		return fmt.Errorf("capture: interface %s is gone (removed while capturing): %w", c.opts.Interface, dataplane.ErrDeviceGone)
	default:
	}
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}

// watchXDP stops an XDP capture at the deadline or when the interface is
// removed (the XDP link goes with it and the ring buffer just stays quiet).
func (c *Capture) watchXDP(ctx context.Context, deadline <-chan time.Time, gone chan struct{}) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	flushEvery := time.Second
	if c.opts.Output == "-" {
		flushEvery = 200 * time.Millisecond
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-deadline:
			c.requestStop()
			return
		case <-tick.C:
			c.mu.Lock()
			err := c.sink.flushIfIdle(flushEvery)
			c.mu.Unlock()
			if err != nil {
				c.requestStop()
				return
			}
			if err := c.lookupInterface(); err != nil && strings.Contains(err.Error(), "no such network interface") {
				close(gone)
				c.requestStop()
				return
			}
		}
	}
}

// xdpPktType derives sll_pkttype for an XDP frame from its destination.
func xdpPktType(data []byte, own, bcast net.HardwareAddr) uint8 {
	if len(data) < 6 {
		return dataplane.PacketHost
	}
	dst := net.HardwareAddr(data[:6])
	switch {
	case string(dst) == string(bcast):
		return dataplane.PacketBroadcast
	case dst[0]&1 != 0:
		return dataplane.PacketMulticast
	case len(own) == 6 && string(dst) != string(own):
		return dataplane.PacketOtherHost
	}
	return dataplane.PacketHost
}
