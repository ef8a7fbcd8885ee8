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
	"syscall"
	"time"

	"golang.org/x/sys/unix"
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
	readerDownPollMs = 200 // milliseconds
	// ringReaderChunk is the most frames handed over per callback: a 1 MiB
	// block holds thousands of small frames, and describing them all
	// before the first is used would take the descriptions out of the
	// CPU cache before they are read (256 of them are about 24 KiB).
	ringReaderChunk = 256
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
	// file is a duplicate of fd registered with the Go runtime's
	// netpoller, and rc its RawConn: the reader waits for a block there
	// (see wait for why).
	file    *os.File
	rc      syscall.RawConn
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
	file, rc, err := pollable(fd)
	if err != nil {
		_ = munmapRing(ring)
		return nil, fmt.Errorf("dataplane: ring reader (fd %d): %w", fd, err)
	}
	return &RingReader{fd: fd, geo: geo, ring: ring, vnetLen: vnetLen, file: file, rc: rc}, nil
}

// pollable returns a duplicate of fd (the reader borrows fd and must not
// close it) registered with the runtime's netpoller, and its RawConn. The
// duplicate shares fd's open file description, so it is non-blocking too and
// epoll reports fd's readiness.
func pollable(fd int) (*os.File, syscall.RawConn, error) {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err)
	}
	if err := unix.SetNonblock(dup, true); err != nil {
		unix.Close(dup)
		return nil, nil, os.NewSyscallError("fcntl O_NONBLOCK", err)
	}
	f := os.NewFile(uintptr(dup), fmt.Sprintf("packet socket %d", fd))
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("raw conn: %w", err)
	}
	// A file the netpoller refused would make deadlines, which Stop
	// relies on, unavailable.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("not pollable: %w", err)
	}
	return f, rc, nil
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
// with its frames, in the order they arrived, in chunks of up to 256; the
// block goes back to the kernel after the last chunk, and with it the memory
// every RingFrame.Data points to: fn must not keep the slice or any frame's
// Data after it returns. An error from fn ends the block (the rest of its
// frames are dropped) and is returned after the block was given back. The
// number of frames handed over is returned too.
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
	// A deadline in the past wakes a waiting WithFrames, and makes every
	// later wait return at once.
	if err := r.file.SetReadDeadline(time.Unix(1, 0)); err != nil {
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
	r.file.Close()
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
	if r.down {
		// Frames again: the device is back up; no more device timer.
		r.down = false
		r.setDeadline(time.Time{})
	}
	boff := r.next * r.geo.blockSize
	block := r.ring[boff : boff+r.geo.blockSize]
	defer func() {
		storeStatus(r.ring, boff+tpacketBlockStatusOff, tpStatusKernel)
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
	if r.frames == nil {
		r.frames = make([]RingFrame, 0, ringReaderChunk)
	}
	frames := r.frames[:0]
	n := 0
	var ferr error
	// Walk the packets along tp_next_offset as tpacketBlockIter does
	// (same checks), parsing each with parseV3Frame.
	blk := block[:desc.length]
	pos, left := desc.first, desc.numPkts
	for ; left > 0; left-- {
		if pos < 0 || pos > len(blk)-tpacket3HdrLen {
			r.malformed.Add(uint64(left))
			break
		}
		end := len(blk)
		if left > 1 {
			next := int(tpLE.Uint32(blk[pos:]))
			if next < tpacket3HdrLen || next > end-pos {
				r.malformed.Add(uint64(left))
				break
			}
			end = pos + next
		}
		frames = append(frames, RingFrame{})
		if !parseV3Frame(blk[pos:end], r.vnetLen, &frames[len(frames)-1]) {
			frames = frames[:len(frames)-1]
			r.malformed.Add(1)
			if left > 1 {
				pos = end
				continue
			}
			break
		}
		pos = end
		frames[len(frames)-1].Status |= losing
		if len(frames) == ringReaderChunk {
			n += len(frames)
			ferr = fn(frames)
			clear(frames)
			frames = frames[:0]
			if ferr != nil {
				return n, ferr
			}
		}
	}
	if len(frames) > 0 {
		n += len(frames)
		ferr = fn(frames)
		// Drop the references into the ring with the block.
		clear(frames)
	}
	return n, ferr
}

// wait blocks until the kernel hands over a block, Stop is called, or the
// device goes away.
//
// It waits in the Go runtime's netpoller rather than in a blocking poll(2)
// with a stop eventfd (the Link's dispatchers' way): a capture is often given
// one CPU, so one P, and a goroutine blocked in a system call makes the
// runtime's sysmon take its P away and hand it to a fresh thread every time,
// which measured about a tenth of the capture's CPU at a million frames a
// second. In the netpoller the goroutine parks and the P stays idle. The
// kernel wakes readers of a V3 ring when it retires a block (af_packet.c
// prb_close_block calls sk_data_ready), and the netpoller's edge-triggered
// epoll sees each of those; a block retired between ready() and the wait is
// remembered by the netpoller, not lost.
func (r *RingReader) wait() error {
	woke := false
	var checkErr error
	err := r.rc.Read(func(uintptr) bool {
		if r.ready() {
			return true
		}
		if !woke {
			// The first call is before any wait: nothing to look at.
			woke = true
			return false
		}
		// Readable with no block for us: a socket error (EPOLLERR), or
		// frames that reached the socket queue rather than the ring
		// before the ring existed (the caller should have drained
		// them).
		checkErr = r.socketError()
		return checkErr != nil || r.down
	})
	switch {
	case checkErr != nil:
		return checkErr
	case err == nil:
		if r.down {
			// Look again at the device in a while, unless frames come.
			r.setDeadline(time.Now().Add(readerDownPollMs * time.Millisecond))
		}
		return nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		if r.stopped.Load() {
			return ErrClosed
		}
		// The device-down timer.
		if deviceGone(r.fd) {
			return fmt.Errorf("dataplane: ring reader (fd %d): %w", r.fd, ErrDeviceGone)
		}
		r.setDeadline(time.Now().Add(readerDownPollMs * time.Millisecond))
		return nil
	}
	return fmt.Errorf("dataplane: ring reader wait (fd %d): %w", r.fd, err)
}

// setDeadline sets the wait's deadline (zero: none) unless Stop was called,
// whose deadline in the past must stay: Stop sets stopped before its
// deadline, so checking after setting ours catches a Stop in between.
func (r *RingReader) setDeadline(t time.Time) {
	if r.stopped.Load() {
		return
	}
	_ = r.file.SetReadDeadline(t)
	if r.stopped.Load() {
		_ = r.file.SetReadDeadline(time.Unix(1, 0))
	}
}

// socketError reads SO_ERROR (which clears it). ENETDOWN, which the kernel
// reports when the device goes down and when it is removed (af_packet.c
// packet_notifier, which forgets the device's index only on removal, maybe
// just after), sets down, or returns ErrDeviceGone if the device is gone
// already. Stray frames on the socket queue are dropped.
func (r *RingReader) socketError() error {
	soerr, err := unix.GetsockoptInt(r.fd, unix.SOL_SOCKET, unix.SO_ERROR)
	switch {
	case err != nil:
		return fmt.Errorf("dataplane: ring reader (fd %d): %w", r.fd, os.NewSyscallError("getsockopt SO_ERROR", err))
	case soerr == int(unix.ENETDOWN):
		r.down = true
		if deviceGone(r.fd) {
			return fmt.Errorf("dataplane: ring reader (fd %d): %w", r.fd, ErrDeviceGone)
		}
		return nil
	case soerr != 0:
		return fmt.Errorf("dataplane: ring reader (fd %d): %w", r.fd, os.NewSyscallError("socket", unix.Errno(soerr)))
	}
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
