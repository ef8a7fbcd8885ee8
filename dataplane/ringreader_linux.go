//go:build linux

package dataplane

// RingReader: the zero-copy way to read a PACKET_RX_RING, for consumers that
// only look at frames and let them go (a capture writing them to a file): no
// Allocator, no copy out of the ring. Frames are handed over a block at a
// time, aliasing ring memory, and the block goes back to the kernel when the
// callback returns. The Link's PacketMMap dispatcher copies instead, because
// its consumer (a netstack) keeps frames after delivery.
//
// The ring is TPACKET_V3 for the reasons dispatch_mmap_linux.go gives (frames
// of any size packed into blocks, one wake-up per block: the cheapest way to
// take a high rate of small frames); the blocks are larger than the Link's
// by default because a capture wants throughput and tolerates the latency of
// the retire timeout.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/rawfile"
)

// Ring defaults for RingReader.
const (
	// DefaultReaderBlockSize is 1 MiB: about 6500 64-byte frames (160
	// bytes each with headers) per wake-up, and room for the largest GSO
	// super-frame a veth or NIC without BIG TCP sends (64 KiB).
	DefaultReaderBlockSize = 1 << 20
	// DefaultReaderBlocks makes a 16 MiB ring: about 80 ms of 64-byte
	// frames at the 1.2 Mpps one core can send across a veth, which is
	// longer than a scheduler slice a starved reader may wait for.
	DefaultReaderBlocks = 16
	// DefaultReaderRetireTimeout is how long the kernel fills a block that
	// is not full before handing it over: the most a frame waits at low
	// rates. At high rates blocks fill first and it does not matter.
	DefaultReaderRetireTimeout = 10 * time.Millisecond
	// readerDownPollMs: while the device is down, how often the reader
	// looks whether it was removed (the kernel reports both as ENETDOWN).
	readerDownPollMs = 200
)

// RingOptions describe the PACKET_RX_RING of a RingReader. The zero value of
// each field means its default.
type RingOptions struct {
	// BlockSize is the size of a block in bytes, a multiple of the page
	// size. A frame never spans blocks: a larger one is cut to fit (and
	// reported with its WireLen). Default DefaultReaderBlockSize.
	BlockSize int
	// Blocks is the number of blocks. Default DefaultReaderBlocks.
	Blocks int
	// RetireTimeout is tp_retire_blk_tov, in whole milliseconds (at least
	// 1 ms). Default DefaultReaderRetireTimeout.
	RetireTimeout time.Duration
}

func (o RingOptions) withDefaults() RingOptions {
	if o.BlockSize == 0 {
		o.BlockSize = DefaultReaderBlockSize
	}
	if o.Blocks == 0 {
		o.Blocks = DefaultReaderBlocks
	}
	if o.RetireTimeout == 0 {
		o.RetireTimeout = DefaultReaderRetireTimeout
	}
	return o
}

// RingStats are PACKET_STATISTICS: counts since the previous call (the
// kernel resets them when read).
type RingStats struct {
	// Packets passed the socket's filter, Drops among them.
	Packets uint64
	// Drops found the ring full and were lost.
	Drops uint64
	// Freezes counts the times the ring was full (tp_freeze_q_cnt).
	Freezes uint64
}

// RingReader reads a TPACKET_V3 PACKET_RX_RING without copying frames out of
// it. WithFrames and Drain are for a single goroutine; Stop and Stats may be
// called from any goroutine.
type RingReader struct {
	fd      int
	geo     tpacketGeometry
	ring    []byte // the mapping; nil after Close
	vnetLen int
	next    int // the block the kernel fills next, in ring order
	stopFD  int
	frames  []RingFrame // reused for every block
	down    bool        // the socket reported ENETDOWN and nothing came since
	stopped atomic.Bool
	// Malformed counts frames (or whole blocks) skipped because their
	// headers did not parse.
	malformed atomic.Uint64
}

// NewRingReader sets up a TPACKET_V3 PACKET_RX_RING on fd, an AF_PACKET
// socket, and maps it. PACKET_VNET_HDR, if wanted, must already be set (the
// kernel refuses it once a ring exists); frames then carry their
// virtio_net_hdr. The descriptor is borrowed: Close removes the ring but
// never closes fd, which must stay open until then. Errors that mean "read
// this socket another way" wrap ErrNotSupported.
func NewRingReader(fd int, opts RingOptions) (_ *RingReader, err error) {
	opts = opts.withDefaults()
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		return nil, fmt.Errorf("dataplane: ring reader (fd %d): big-endian host: %w", fd, ErrNotSupported)
	}
	if opts.RetireTimeout < time.Millisecond || opts.RetireTimeout%time.Millisecond != 0 {
		return nil, fmt.Errorf("dataplane: RingOptions.RetireTimeout %v: want whole milliseconds, at least 1 ms", opts.RetireTimeout)
	}
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return nil, fmt.Errorf("dataplane: ring reader (fd %d): not a socket: %w: %w", fd, ErrNotSupported, os.NewSyscallError("getsockopt SO_DOMAIN", err))
	}
	if domain != unix.AF_PACKET {
		return nil, fmt.Errorf("dataplane: ring reader (fd %d): socket domain %d is not AF_PACKET: %w", fd, domain, ErrNotSupported)
	}
	vnetLen := 0
	if v, err := unix.GetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR); err == nil && v != 0 {
		vnetLen = VnetHdrLen
		if sz, err := unix.GetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR_SZ); err == nil && sz >= VnetHdrLen {
			vnetLen = sz
		}
	}
	// Blocks only need to hold a minimal frame; anything larger than a
	// block is cut by the kernel and reported as such.
	geo, err := newTPacketGeometry(tpacketV3, opts.BlockSize, opts.Blocks, 64, vnetLen, os.Getpagesize(), int(opts.RetireTimeout/time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("dataplane: ring reader (fd %d, RingOptions.BlockSize %d, Blocks %d): %w", fd, opts.BlockSize, opts.Blocks, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, tpacketV3); err != nil {
		return nil, fmt.Errorf("dataplane: ring reader set PACKET_VERSION (fd %d, TPACKET_V3): %w: %w", fd, ErrNotSupported, os.NewSyscallError("setsockopt", err))
	}
	if err := setRxRing(fd, tpacketV3, geo); err != nil {
		return nil, fmt.Errorf("dataplane: ring reader set PACKET_RX_RING (fd %d, %d blocks of %d bytes): %w: %w",
			fd, geo.blockNr, geo.blockSize, ErrNotSupported, os.NewSyscallError("setsockopt", err))
	}
	defer func() {
		if err != nil {
			_ = setRxRing(fd, tpacketV3, tpacketGeometry{})
		}
	}()
	ring, err := mmapRing(fd, geo.ringSize())
	if err != nil {
		return nil, fmt.Errorf("dataplane: ring reader mmap (fd %d, %d bytes): %w: %w", fd, geo.ringSize(), ErrNotSupported, err)
	}
	stopFD, err := rawfile.NewStopFD()
	if err != nil {
		_ = munmapRing(ring)
		return nil, fmt.Errorf("dataplane: ring reader (fd %d): %w", fd, err)
	}
	return &RingReader{fd: fd, geo: geo, ring: ring, vnetLen: vnetLen, stopFD: stopFD}, nil
}

// RingSize returns the ring's size in bytes.
func (r *RingReader) RingSize() int { return r.geo.ringSize() }

// RetireTimeout returns the block retire timeout in use: after Stop, blocks
// the kernel was still filling are handed over within it.
func (r *RingReader) RetireTimeout() time.Duration {
	return time.Duration(r.geo.retireTOVms) * time.Millisecond
}

// VnetHdr reports whether frames carry a virtio_net_hdr.
func (r *RingReader) VnetHdr() bool { return r.vnetLen > 0 }

// Malformed returns the number of frames skipped because their ring headers
// did not parse (a block whose descriptor did not counts as one).
func (r *RingReader) Malformed() uint64 { return r.malformed.Load() }

// WithFrames waits for the next block the kernel hands over and calls fn
// with its frames, in the order they arrived; the block goes back to the
// kernel when fn returns, and with it the memory every RingFrame.Data points
// to: fn must not keep the slice or any frame's Data. fn's error is returned
// after the block was given back. The frame count is returned too.
//
// A block that is ready is read even after Stop, so a reader that stops
// reading only on ErrClosed empties the ring first. It returns ErrClosed once
// Stop was called and no block is ready, and an error wrapping ErrDeviceGone
// when the device was removed and the ring is empty.
func (r *RingReader) WithFrames(fn func([]RingFrame) error) (int, error) {
	for {
		if r.ring == nil {
			return 0, ErrClosed
		}
		if r.ready() {
			return r.readBlock(fn)
		}
		if err := r.wait(); err != nil {
			return 0, err
		}
	}
}

// Drain reads every block that is ready now, as WithFrames does, without
// waiting, and returns the number of frames. After Stop, waiting
// RetireTimeout first lets the kernel hand over the block it was filling.
func (r *RingReader) Drain(fn func([]RingFrame) error) (int, error) {
	total := 0
	for k := 0; k < r.geo.blockNr && r.ring != nil && r.ready(); k++ {
		n, err := r.readBlock(fn)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// Stop makes a WithFrames that waits, and every later one that finds no
// block ready, return ErrClosed. Safe from any goroutine, idempotent.
func (r *RingReader) Stop() error {
	if r.stopped.Swap(true) {
		return nil
	}
	if err := rawfile.Stop(r.stopFD); err != nil {
		return fmt.Errorf("dataplane: ring reader stop (fd %d): %w", r.fd, err)
	}
	return nil
}

// Stats reads PACKET_STATISTICS: what the kernel counted since the last
// call. Safe from any goroutine.
func (r *RingReader) Stats() (RingStats, error) {
	s, err := unix.GetsockoptTpacketStatsV3(r.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return RingStats{}, fmt.Errorf("dataplane: ring reader (fd %d): %w", r.fd, os.NewSyscallError("getsockopt PACKET_STATISTICS", err))
	}
	// tp_packets already includes tp_drops (af_packet.c packet_getsockopt).
	return RingStats{Packets: uint64(s.Packets), Drops: uint64(s.Drops), Freezes: uint64(s.Freeze_q_cnt)}, nil
}

// Close unmaps the ring and removes it from the socket, which stays open.
// Call it once WithFrames and Drain have returned; it is idempotent.
func (r *RingReader) Close() error {
	if r.ring == nil {
		return nil
	}
	err := munmapRing(r.ring)
	r.ring = nil
	_ = setRxRing(r.fd, tpacketV3, tpacketGeometry{})
	unix.Close(r.stopFD)
	if err != nil {
		return fmt.Errorf("dataplane: ring reader close (fd %d): %w", r.fd, err)
	}
	return nil
}

func (r *RingReader) ready() bool {
	return loadStatus(r.ring, r.next*r.geo.blockSize+tpacketBlockStatusOff)&tpStatusUser != 0
}

// readBlock hands the block at next (which is ours) to fn and gives it back.
func (r *RingReader) readBlock(fn func([]RingFrame) error) (int, error) {
	r.down = false
	off := r.next * r.geo.blockSize
	block := r.ring[off : off+r.geo.blockSize]
	defer func() {
		storeStatus(r.ring, off+tpacketBlockStatusOff, tpStatusKernel)
		r.next = (r.next + 1) % r.geo.blockNr
	}()
	desc, err := parseTPacketBlock(block)
	if err != nil {
		r.malformed.Add(1)
		return 0, nil
	}
	// V3 reports drops per block, not per frame (af_packet.c
	// prb_close_block); pass it on with each frame.
	losing := desc.status & tpStatusLosing
	frames := r.frames[:0]
	it := newTPacketBlockIter(block, desc)
	for {
		pkt, f, ok, err := it.next()
		if err != nil {
			r.malformed.Add(uint64(it.remaining()))
			break
		}
		if !ok {
			break
		}
		frames = append(frames, RingFrame{})
		if err := parseRingFrame(pkt, f, r.vnetLen, &frames[len(frames)-1]); err != nil {
			frames = frames[:len(frames)-1]
			r.malformed.Add(1)
			continue
		}
		frames[len(frames)-1].Status |= losing
	}
	r.frames = frames
	n := len(frames)
	var ferr error
	if n > 0 {
		ferr = fn(frames)
	}
	// Drop the references into the ring with the block.
	clear(frames)
	return n, ferr
}

// wait blocks until the kernel hands over a block, Stop is called, or the
// device goes away.
func (r *RingReader) wait() error {
	timeout := -1
	if r.down {
		timeout = readerDownPollMs
	}
	res, e := rawfile.Wait(r.fd, unix.POLLIN, r.stopFD, timeout)
	switch {
	case e == unix.EINTR:
		return nil
	case e != 0:
		return fmt.Errorf("dataplane: ring reader poll (fd %d): %w", r.fd, os.NewSyscallError("ppoll", e))
	case res == rawfile.Stopped:
		return ErrClosed
	case res == rawfile.TimedOut:
		if r.down && deviceGone(r.fd) {
			return fmt.Errorf("dataplane: ring reader (fd %d): %w", r.fd, ErrDeviceGone)
		}
		return nil
	}
	if r.ready() {
		return nil
	}
	// Readable with no block for us: a socket error (POLLERR), or a frame
	// that reached the socket queue rather than the ring before the ring
	// existed (the caller should have drained it).
	soerr, err := unix.GetsockoptInt(r.fd, unix.SOL_SOCKET, unix.SO_ERROR)
	switch {
	case err != nil:
		return fmt.Errorf("dataplane: ring reader (fd %d): %w", r.fd, os.NewSyscallError("getsockopt SO_ERROR", err))
	case soerr == int(unix.ENETDOWN):
		// Down or removed: the kernel says ENETDOWN for both
		// (af_packet.c packet_notifier), and forgets the device's
		// index only on removal, which may come just after. Look
		// again now and every readerDownPollMs while nothing arrives.
		r.down = true
		if deviceGone(r.fd) {
			return fmt.Errorf("dataplane: ring reader (fd %d): %w", r.fd, ErrDeviceGone)
		}
		return nil
	case soerr != 0:
		return fmt.Errorf("dataplane: ring reader (fd %d): %w", r.fd, os.NewSyscallError("socket", unix.Errno(soerr)))
	}
	// Stray frames queued outside the ring keep poll readable: take them
	// off so the next wait blocks.
	drainSocketQueue(r.fd)
	return nil
}

// deviceGone reports whether the packet socket fd lost its device: after
// NETDEV_UNREGISTER the kernel sets the socket's ifindex to -1, which
// getsockname reports.
func deviceGone(fd int) bool {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return errors.Is(err, unix.ENODEV)
	}
	ll, ok := sa.(*unix.SockaddrLinklayer)
	return ok && ll.Ifindex <= 0
}

// drainSocketQueue discards up to a bounded number of frames queued on fd's
// receive queue (not its ring), without blocking.
func drainSocketQueue(fd int) int {
	var b [1]byte
	n := 0
	for ; n < 1<<16; n++ {
		if _, _, err := unix.Recvfrom(fd, b[:], unix.MSG_DONTWAIT|unix.MSG_TRUNC); err != nil {
			break
		}
	}
	return n
}

// DrainSocketQueue discards the frames waiting on an AF_PACKET socket's
// receive queue, up to 65536, without blocking, and returns how many. A
// capture calls it after attaching a filter that drops everything, so that
// frames that arrived before its real filter was in place are not read.
func DrainSocketQueue(fd int) int { return drainSocketQueue(fd) }
