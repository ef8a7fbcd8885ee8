//go:build linux

package dataplane

// The PacketMMap dispatcher: frames are read out of a PACKET_RX_RING that the
// kernel fills in place, with no system call per frame or per batch while the
// ring has data, and one copy out of the ring into the Allocator's buffer.
//
// # Which TPACKET version
//
// TPACKET_V3, with a 1 ms block retire timeout, chosen by BenchmarkMMapRing
// and BenchmarkMMapRingRTT (dispatch_mmap_linux_test.go) on Linux 6.18, a
// veth pair between two namespaces, 2 vCPUs. Every ring is the default 4 MiB
// (32 blocks of 128 KiB); medians of 5 interleaved rounds, each run after a
// 2-second window with at least 95% idle CPU, from
//
//	go test ./dataplane -run '^$' -bench 'BenchmarkMMapRing$' -benchtime 5x
//	go test ./dataplane -run '^$' -bench 'BenchmarkMMapRingRTT' -benchtime 500x
//
//	                      64 B frames, open loop        64 KiB TCPv4 GSO, 16 in flight   round trip
//	                      rx pkts/s  drops  reader CPU  rx Gbit/s  reader CPU            p50      p99
//	V3, 128 KiB blocks    1.25 M     0 %    144 ns/pkt  14.3       20.5 us/frame         998 us   1.1-2 ms
//	V2, 1584 B slots      0.65 M     12 %   886 ns/pkt  0 (every super-frame truncated)   12 us    127 us
//	V2, 65744 B slots     0.35 M     60 %   1676 ns/pkt 9.6        27.6 us/frame         (as V2)
//	recvmmsg (no ring)    0.59 M     41 %   1163 ns/pkt 7.8        33.6 us/frame         14 us    130 us
//
// Why V3:
//
//   - It packs frames of any size into a block (64-byte frames take 144
//     bytes: about 29000 fit in 4 MiB) and still holds a whole 64 KiB GSO
//     super-frame, which a veth with TSO delivers. A V2 slot has one fixed
//     size: slots big enough for super-frames leave 32 of them in 4 MiB, so
//     a burst of small frames overflows the ring (60 % dropped above), and
//     MTU-sized slots truncate every super-frame, which breaks host GSO.
//   - The kernel hands over a block, not a frame, so the reader wakes once
//     per block: 6x less CPU per small frame than V2 (which wakes per frame or
//     few) and 8x less than recvmmsg, at twice their rate with no drops.
//
// What it costs: latency. The kernel gives a block to user space only when
// it is full or tp_retire_blk_tov has passed since it was opened; it wakes
// no reader for a frame in a block it is still filling, and nothing in the
// block says which of its frames are complete until it is retired, so the
// reader cannot take a lone frame early. A lone frame therefore waits for
// the timeout: a request/response round trip through the ring takes about
// 1 ms (p50 998 us) instead of 12 us. 1 ms is the smallest timeout:
// tp_retire_blk_tov is in whole milliseconds, and 0 lets the kernel derive
// one from the link speed (af_packet.c prb_calc_retire_blk_tmo: block Mbit
// per link Gbit/s, plus 1; 1 ms on a 10 Gbit/s veth with 128 KiB blocks, 8 ms
// on links below 1 Gbit/s or of unknown speed), so it is set explicitly. The
// kernel keeps it precisely (2 ms gave a 1999 us p50). Links that carry
// latency-sensitive request/response traffic should use RecvMMsg, which
// matches V2's latency without a ring; PacketMMap is the mode for
// throughput. Switching to V2 is a matter of mmapTPacketVersion: the V2 path
// is kept and tested.

import (
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/rawfile"
)

const (
	// mmapTPacketVersion is the TPACKET version of every PacketMMap ring;
	// see the file comment for why.
	mmapTPacketVersion = tpacketV3
	// mmapRetireTOVms is tp_retire_blk_tov: how long the kernel keeps
	// filling a V3 block that is not full before handing it over. It
	// is the latency a lone frame sees; 1 ms is the smallest value. See
	// the file comment.
	mmapRetireTOVms = 1
	// mmapV2BatchPerRecv: a V2 dispatch walks at most
	// RecvBatchSize*mmapV2BatchPerRecv ready slots (64 by default) before
	// delivering. Walking slots costs no system call, so the batch can be
	// larger than a recvmmsg one; the bound keeps the frames a consumer
	// receives at once, and the buffers held, modest.
	mmapV2BatchPerRecv = 8
)

// mmapConfig is what newMMapDispatcher fixes and the benchmark varies.
type mmapConfig struct {
	version     int // tpacketV2 or tpacketV3
	retireTOVms int // V3 tp_retire_blk_tov
}

// mmapDispatcher reads one PACKET_RX_RING. Single goroutine; not safe for
// concurrent use.
type mmapDispatcher struct {
	ch      *rxChannel
	version int
	geo     tpacketGeometry
	ring    []byte // the mapping; nil after release
	hdrLen  int    // frame header size of version
	lim     frameLimits
	slots   int // blocks (V3) or frame slots (V2) in the ring
	next    int // the block or slot the kernel fills next, in ring order
	batch   int // V2: most slots per dispatch

	frames []Frame  // the batch being built, reused
	bufs   []Buffer // frames[i].Data is bufs[i:i+1]

	spurious int // wake-ups in a row that found nothing to read
}

// newMMapDispatcher sets up a PACKET_RX_RING on ch.fd, which must be an
// AF_PACKET socket on which the opener has already set PACKET_VNET_HDR when
// ch.opts.VnetHdr (the kernel refuses it once a ring exists). Errors that
// mean "use another mode" wrap ErrNotSupported.
func newMMapDispatcher(ch *rxChannel) (dispatcher, error) {
	return newMMapDispatcherConfig(ch, mmapConfig{version: mmapTPacketVersion, retireTOVms: mmapRetireTOVms})
}

func newMMapDispatcherConfig(ch *rxChannel, cfg mmapConfig) (_ *mmapDispatcher, err error) {
	fd := ch.fd
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		// The kernel writes ring headers in host order; tpacket.go
		// reads little-endian.
		return nil, fmt.Errorf("dataplane: mmap setup (fd %d): big-endian host: %w", fd, ErrNotSupported)
	}
	if cfg.version != tpacketV2 && cfg.version != tpacketV3 {
		return nil, fmt.Errorf("dataplane: mmap setup (fd %d): TPACKET version %d: %w", fd, cfg.version, ErrNotSupported)
	}
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return nil, fmt.Errorf("dataplane: mmap setup (fd %d): not a socket: %w: %w", fd, ErrNotSupported, os.NewSyscallError("getsockopt SO_DOMAIN", err))
	}
	if domain != unix.AF_PACKET {
		return nil, fmt.Errorf("dataplane: mmap setup (fd %d): socket domain %d is not AF_PACKET: %w", fd, domain, ErrNotSupported)
	}

	// The virtio_net_hdr the kernel writes before each frame must be the
	// one the link expects: a mismatch would shift every frame.
	vnet, err := unix.GetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR)
	if err != nil {
		return nil, fmt.Errorf("dataplane: mmap setup (fd %d): %w", fd, os.NewSyscallError("getsockopt PACKET_VNET_HDR", err))
	}
	if (vnet != 0) != ch.opts.VnetHdr {
		return nil, fmt.Errorf("dataplane: mmap setup (fd %d): LinkOptions.VnetHdr is %t but the socket's PACKET_VNET_HDR is %d; set PACKET_VNET_HDR before the ring exists",
			fd, ch.opts.VnetHdr, vnet)
	}
	vnetLen := 0
	if vnet != 0 {
		vnetLen = VnetHdrLen
		// PACKET_VNET_HDR_SZ (Linux 6.8) may have made it longer (12
		// bytes with num_buffers); the header still starts at
		// tp_mac - size. Older kernels do not know the option.
		if sz, err := unix.GetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR_SZ); err == nil && sz >= VnetHdrLen {
			vnetLen = sz
		}
	}

	geo, err := newTPacketGeometry(cfg.version, ch.opts.RingBlockSize, ch.opts.RingBlocks, ch.opts.MaxFrameSize,
		vnetLen, os.Getpagesize(), cfg.retireTOVms)
	if err != nil {
		return nil, fmt.Errorf("dataplane: mmap setup (fd %d, LinkOptions.RingBlockSize %d, RingBlocks %d, MaxFrameSize %d): %w",
			fd, ch.opts.RingBlockSize, ch.opts.RingBlocks, ch.opts.MaxFrameSize, err)
	}

	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, cfg.version); err != nil {
		return nil, fmt.Errorf("dataplane: mmap set PACKET_VERSION (fd %d, TPACKET_V%d): %w: %w",
			fd, cfg.version+1, ErrNotSupported, os.NewSyscallError("setsockopt", err))
	}
	if err := setRxRing(fd, cfg.version, geo); err != nil {
		return nil, fmt.Errorf("dataplane: mmap set PACKET_RX_RING (fd %d, TPACKET_V%d, %d blocks of %d bytes, %d-byte frames): %w: %w",
			fd, cfg.version+1, geo.blockNr, geo.blockSize, geo.frameSize, ErrNotSupported, os.NewSyscallError("setsockopt", err))
	}
	defer func() {
		if err != nil {
			// Without this the kernel would keep filling a ring
			// nobody reads, and the fallback mode's recvmmsg
			// would see nothing.
			_ = setRxRing(fd, cfg.version, tpacketGeometry{})
		}
	}()
	ring, err := mmapRing(fd, geo.ringSize())
	if err != nil {
		return nil, fmt.Errorf("dataplane: mmap ring (fd %d, %d bytes): %w: %w", fd, geo.ringSize(), ErrNotSupported, err)
	}

	d := &mmapDispatcher{
		ch:      ch,
		version: cfg.version,
		geo:     geo,
		ring:    ring,
		hdrLen:  tpacketHdrLen(cfg.version),
		// The same length rules as the readv and recvmmsg dispatchers.
		lim: frameLimits{vnetLen: vnetLen, minLen: minFrameLen(ch.opts), maxLen: ch.opts.MaxFrameSize, ethernet: ch.opts.EthernetHeader},
	}
	if cfg.version == tpacketV3 {
		d.slots = geo.blockNr
	} else {
		d.slots = geo.frameNr
		d.batch = min(geo.frameNr, max(1, ch.opts.RecvBatchSize)*mmapV2BatchPerRecv)
		d.frames = make([]Frame, 0, d.batch)
		d.bufs = make([]Buffer, 0, d.batch)
	}
	return d, nil
}

// setRxRing sets PACKET_RX_RING to g; a zero g removes the ring (which the
// kernel allows only while it is not mapped).
func setRxRing(fd, version int, g tpacketGeometry) error {
	if version == tpacketV3 {
		return unix.SetsockoptTpacketReq3(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &unix.TpacketReq3{
			Block_size:       uint32(g.blockSize),
			Block_nr:         uint32(g.blockNr),
			Frame_size:       uint32(g.frameSize),
			Frame_nr:         uint32(g.frameNr),
			Retire_blk_tov:   uint32(g.retireTOVms),
			Sizeof_priv:      0,
			Feature_req_word: 0, // FlowHash is ours; TP_FT_REQ_FILL_RXHASH is not needed
		})
	}
	return unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &unix.TpacketReq{
		Block_size: uint32(g.blockSize),
		Block_nr:   uint32(g.blockNr),
		Frame_size: uint32(g.frameSize),
		Frame_nr:   uint32(g.frameNr),
	})
}

// dispatch implements dispatcher.
func (d *mmapDispatcher) dispatch() error {
	for {
		var n int
		if d.version == tpacketV3 {
			n = d.readBlock()
		} else {
			n = d.readSlots()
		}
		if n > 0 {
			// While the ring always has data this never blocks,
			// so never sees stopFD: the Link checks its closed
			// flag between batches for that.
			d.spurious = 0
			return nil
		}
		if err := d.wait(); err != nil {
			return err
		}
	}
}

// wait blocks until the kernel hands over a block or slot, or stopFD fires.
func (d *mmapDispatcher) wait() error {
	timeout := -1
	if d.spurious > 2 {
		// poll keeps saying "readable" while the slot we expect is
		// not ours (see resync): never spin on that, look again every
		// millisecond instead.
		timeout = 1
	}
	r, e := rawfile.Wait(d.ch.fd, unix.POLLIN, d.ch.stopFD, timeout)
	switch {
	case e == unix.EINTR:
		return nil
	case e != 0:
		return fmt.Errorf("dataplane: mmap poll (fd %d, stop fd %d): %w", d.ch.fd, d.ch.stopFD, os.NewSyscallError("ppoll", e))
	case r == rawfile.Stopped:
		return ErrClosed
	case r == rawfile.TimedOut:
		d.resync()
		return nil
	}
	if d.ready(d.next) {
		return nil
	}
	// Readable with nothing in the ring: a socket error (POLLERR), a
	// closed descriptor (POLLNVAL), or a ring we are out of step with.
	soerr, err := unix.GetsockoptInt(d.ch.fd, unix.SOL_SOCKET, unix.SO_ERROR)
	switch {
	case err != nil:
		return fmt.Errorf("dataplane: mmap wait (fd %d): %w", d.ch.fd, os.NewSyscallError("getsockopt SO_ERROR", err))
	case soerr == int(unix.ENETDOWN):
		// The device went down; the socket rebinds when it comes
		// back up, and reading that getsockopt cleared the error.
		return nil
	case soerr != 0:
		return fmt.Errorf("dataplane: mmap wait (fd %d): %w", d.ch.fd, os.NewSyscallError("socket", unix.Errno(soerr)))
	}
	d.spurious++
	if d.spurious > 2 {
		d.resync()
	}
	return nil
}

// ready reports whether block or slot i has been handed to us.
func (d *mmapDispatcher) ready(i int) bool {
	return loadStatus(d.ring, d.statusOff(i))&tpStatusUser != 0
}

// statusOff returns the offset of the status word of block or slot i.
func (d *mmapDispatcher) statusOff(i int) int {
	if d.version == tpacketV3 {
		return i*d.geo.blockSize + tpacketBlockStatusOff
	}
	return d.geo.frameOffset(i) // tp_status is the V2 header's first field
}

// resync moves next to the first block or slot handed to us, in ring
// order from next. The kernel fills the ring in order and we empty it in
// order, so next should always be the one it hands over first; this only
// matters if that invariant broke, where it keeps frames flowing.
func (d *mmapDispatcher) resync() {
	for k := range d.slots {
		i := (d.next + k) % d.slots
		if d.ready(i) {
			d.next = i
			return
		}
	}
}

// readBlock reads the V3 block at next, if it is ours: it copies out every
// good frame, gives the block back and delivers the frames. It returns the
// number of packets the block held (0: not ours yet).
func (d *mmapDispatcher) readBlock() int {
	off := d.next * d.geo.blockSize
	if !d.ready(d.next) {
		return 0
	}
	block := d.ring[off : off+d.geo.blockSize]
	desc, err := parseTPacketBlock(block)
	if err != nil {
		// num_pkts cannot be trusted; count the block as one error.
		d.ch.counters.RxErrors.Add(1)
		d.giveBack(off + tpacketBlockStatusOff)
		return 1
	}
	if desc.status&tpStatusLosing != 0 {
		d.countKernelDrops()
	}
	it := newTPacketBlockIter(block, desc)
	for {
		pkt, f, ok, err := it.next()
		if err != nil {
			d.ch.counters.RxErrors.Add(uint64(it.remaining()))
			break
		}
		if !ok {
			break
		}
		d.copyOut(pkt, f)
	}
	d.giveBack(off + tpacketBlockStatusOff)
	d.deliver()
	return max(desc.numPkts, 1)
}

// readSlots reads up to batch ready V2 slots from next, giving each back as
// soon as its frame is copied out, then delivers the frames. It returns the
// number of slots read. (TP_STATUS_COPY, a frame cut to its slot with a full
// copy queued to the socket, needs PACKET_COPY_THRESH, which nothing sets: a
// cut frame is counted as truncated.)
func (d *mmapDispatcher) readSlots() int {
	n := 0
	for n < d.batch {
		off := d.geo.frameOffset(d.next)
		st := loadStatus(d.ring, off)
		if st&tpStatusUser == 0 {
			break
		}
		if st&tpStatusLosing != 0 {
			d.countKernelDrops()
		}
		slot := d.ring[off : off+d.geo.frameSize]
		if f, err := parseTPacketHdr(d.version, slot); err != nil {
			d.ch.counters.RxErrors.Add(1)
		} else {
			d.copyOut(slot, f)
		}
		d.giveBack(off)
		n++
	}
	d.deliver()
	return n
}

// giveBack hands the block or slot at next, whose status word is at
// statusOff, back to the kernel and moves on to the following one. Frames
// have been copied out already, so this happens before they are delivered:
// the kernel can refill the memory while the consumer works.
func (d *mmapDispatcher) giveBack(statusOff int) {
	storeStatus(d.ring, statusOff, tpStatusKernel)
	d.next = (d.next + 1) % d.slots
}

// copyOut checks the frame with header f at the start of hdr and copies it
// into a buffer of the Allocator, adding it to the batch; a frame that fails
// the checks is counted in RxErrors.
func (d *mmapDispatcher) copyOut(hdr []byte, f tpacketFrame) {
	data, vh, err := tpacketFrameData(hdr, f, d.hdrLen, d.lim)
	if err != nil {
		d.ch.counters.RxErrors.Add(1)
		return
	}
	b := d.ch.alloc.Alloc(len(data))
	if len(b.Data) < len(data) {
		// The Allocator broke its contract; do not deliver a short
		// frame.
		d.ch.alloc.Free(b)
		d.ch.counters.RxDropped.Add(1)
		return
	}
	b.Data = b.Data[:len(data)]
	copy(b.Data, data)
	d.bufs = append(d.bufs, b)
	d.frames = append(d.frames, Frame{Len: len(data), Vnet: vh, HasVnet: d.lim.vnetLen > 0})
}

// deliver hands the batch over and forgets its buffers, which belong to the
// consumer from now on.
func (d *mmapDispatcher) deliver() {
	if len(d.frames) == 0 {
		return
	}
	for i := range d.frames {
		// bufs may have grown while the batch was built, so Data is
		// set only now.
		d.frames[i].Data = d.bufs[i : i+1 : i+1]
	}
	d.ch.deliver(d.frames)
	clear(d.frames)
	clear(d.bufs)
	d.frames = d.frames[:0]
	d.bufs = d.bufs[:0]
}

// countKernelDrops adds the frames the kernel dropped because the ring was
// full (TP_STATUS_LOSING says there were some) to RxDropped. Reading
// PACKET_STATISTICS resets the kernel's counters and clears the flag.
func (d *mmapDispatcher) countKernelDrops() {
	if d.version == tpacketV3 {
		if s, err := unix.GetsockoptTpacketStatsV3(d.ch.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
			d.ch.counters.RxDropped.Add(uint64(s.Drops))
		}
		return
	}
	if s, err := unix.GetsockoptTpacketStats(d.ch.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
		d.ch.counters.RxDropped.Add(uint64(s.Drops))
	}
}

// release implements dispatcher: it unmaps the ring and removes it from the
// socket, which the Link only borrows.
func (d *mmapDispatcher) release() {
	if d.ring == nil {
		return
	}
	if err := munmapRing(d.ring); err != nil {
		d.ch.opts.Logger.Warn("dataplane: mmap release", "fd", d.ch.fd, "err", err)
		return
	}
	d.ring = nil
	_ = setRxRing(d.ch.fd, d.version, tpacketGeometry{})
}

var _ dispatcher = (*mmapDispatcher)(nil)
