package xdp

import (
	"fmt"
	"log/slog"
	"math/bits"
	"strings"
	"time"
)

// BindMode is how a socket shares frames with the driver.
type BindMode int

const (
	// BindAuto binds in zero-copy mode where the driver supports it and
	// in copy mode otherwise: the kernel falls back by itself when neither
	// XDP_COPY nor XDP_ZEROCOPY is asked for (xp_assign_dev,
	// net/xdp/xsk_buff_pool.c). Socket.Mode reports the outcome.
	BindAuto BindMode = iota
	// BindCopy forces copy mode (XDP_COPY): the kernel copies each frame
	// between the driver's buffers and the UMEM. It works on every device.
	BindCopy
	// BindZeroCopy forces zero-copy mode (XDP_ZEROCOPY): the driver DMAs
	// straight into the UMEM. Binding fails with EOPNOTSUPP on devices
	// without it, veth among them (KERNEL-NOTES item 5).
	BindZeroCopy
)

var bindModeNames = [...]string{"auto", "copy", "zerocopy"}

func (m BindMode) String() string {
	if m < 0 || int(m) >= len(bindModeNames) {
		return fmt.Sprintf("BindMode(%d)", int(m))
	}
	return bindModeNames[m]
}

// ParseBindMode parses auto, copy or zerocopy (zero-copy).
func ParseBindMode(s string) (BindMode, error) {
	switch strings.ToLower(s) {
	case "", "auto":
		return BindAuto, nil
	case "copy":
		return BindCopy, nil
	case "zerocopy", "zero-copy", "zc":
		return BindZeroCopy, nil
	}
	return 0, fmt.Errorf("xdp: unknown bind mode %q: want auto, copy or zerocopy", s)
}

// Defaults, sized for a 2-vCPU machine (see DefaultOptions).
const (
	// DefaultFrameSize is one UMEM chunk: 2 KiB holds a 1500-byte MTU
	// frame after the 256 bytes of XDP_PACKET_HEADROOM the kernel leaves
	// in front of received data, with half a page to spare; 4 KiB would
	// double the memory for nothing at that MTU.
	DefaultFrameSize = 2048
	// DefaultRingSize is the entries of each of the four rings of a
	// socket. A kernel TCP sender on the other end of a veth keeps one
	// reader with GRO busy at about 4 Gbit/s, in bursts: with 1024-entry
	// rings about 1 % of its frames found the fill ring empty (the reader
	// was a ring behind) and were dropped, with 2048 none were (measured
	// on this 2-vCPU VM kind, xdp package TCP tests). More buys nothing
	// but memory.
	DefaultRingSize = 2048
	// DefaultNumFrames is the chunks per queue: one fill ring's worth for
	// receiving and one tx ring's worth for sending, so that neither
	// direction can starve the other (8 MiB per queue at 2 KiB).
	DefaultNumFrames = 2 * DefaultRingSize
	// DefaultBatchSize is the descriptors the reader takes from the rx
	// ring per pass: as many as gVisor's fdbased dispatcher takes views
	// per recvmmsg round times eight, enough to amortise the index
	// updates and the stack's per-batch work without holding frames back.
	DefaultBatchSize = 64

	// packetHeadroom is XDP_PACKET_HEADROOM (<linux/bpf.h>): in copy mode
	// the kernel writes a received frame this many bytes into its chunk
	// (xp_get_handle adds it to the chunk address), so a chunk holds at
	// most FrameSize - 256 bytes of frame.
	packetHeadroom = 256
	// minFrameSize and maxFrameSize bound aligned chunks: the kernel wants
	// a power of two from 2048 to the page size (xdp_umem_reg,
	// net/xdp/xdp_umem.c; XDP_UMEM_MIN_CHUNK_SIZE).
	minFrameSize = 2048
	maxFrameSize = 4096
	// maxRingSize bounds the rings: the kernel accepts any power of two
	// that fits its allocator, but beyond this no 2-vCPU machine gains.
	maxRingSize = 1 << 16
)

// Options configure the AF_XDP sockets of one device: their shared UMEM and
// their rings. The zero value means the defaults of DefaultOptions.
type Options struct {
	// FrameSize is the size of one UMEM chunk in bytes: 2048 or 4096
	// (at most the page size). A received frame may use FrameSize-256
	// bytes of it. Zero means DefaultFrameSize.
	FrameSize uint32
	// NumFrames is the number of chunks per queue; half of them receive
	// (they cycle through the fill and rx rings), half send. Zero means
	// DefaultNumFrames. The UMEM is NumFrames*FrameSize bytes per queue.
	NumFrames uint32
	// RingSize is the number of entries of each ring (fill, completion,
	// rx, tx), a power of two. Zero means DefaultRingSize.
	RingSize uint32
	// BatchSize is the most descriptors the reader takes from the rx ring
	// at once. Zero means DefaultBatchSize, or RingSize if smaller.
	BatchSize int
	// BindMode chooses copy or zero-copy mode; BindAuto lets the kernel
	// pick zero-copy where it can.
	BindMode BindMode
	// NeedWakeup binds with XDP_USE_NEED_WAKEUP: the kernel only wants a
	// system call when it sets a ring's wakeup flag, which saves calls in
	// zero-copy mode. In copy mode the tx ring always asks for a wakeup
	// (KERNEL-NOTES item 5), so it changes little there.
	NeedWakeup bool
	// BusyPoll is how long a reader keeps watching an empty rx ring before
	// it sleeps in poll(2). Zero, the default, never spins: on a 2-vCPU
	// machine the CPU a spinning reader takes is the stack's or the
	// application's, and the wakeup it saves the kernel is one per batch
	// the kernel delivers (up to 64 frames, a NAPI budget).
	BusyPoll time.Duration
	// Logger receives the mode each socket was bound in and other
	// decisions taken once; nil discards.
	Logger *slog.Logger
}

// DefaultOptions returns the options used for zero fields: 2 KiB frames,
// 4096 of them per queue (8 MiB), 2048-entry rings, batches of 64, the
// kernel's choice of copy or zero-copy, no need_wakeup, no busy polling.
func DefaultOptions() Options {
	return Options{
		FrameSize: DefaultFrameSize,
		NumFrames: DefaultNumFrames,
		RingSize:  DefaultRingSize,
		BatchSize: DefaultBatchSize,
	}
}

func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.FrameSize == 0 {
		o.FrameSize = d.FrameSize
	}
	if o.NumFrames == 0 {
		o.NumFrames = d.NumFrames
	}
	if o.RingSize == 0 {
		o.RingSize = d.RingSize
	}
	if o.BatchSize == 0 {
		o.BatchSize = min(d.BatchSize, int(o.RingSize))
	}

	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

func (o Options) validate() error {
	if o.FrameSize < minFrameSize || o.FrameSize > maxFrameSize || bits.OnesCount32(o.FrameSize) != 1 {
		return fmt.Errorf("xdp: Options.FrameSize %d: must be 2048 or 4096", o.FrameSize)
	}
	if o.RingSize < 2 || o.RingSize > maxRingSize || bits.OnesCount32(o.RingSize) != 1 {
		return fmt.Errorf("xdp: Options.RingSize %d: must be a power of two from 2 to %d", o.RingSize, maxRingSize)
	}
	if o.NumFrames < 2 {
		return fmt.Errorf("xdp: Options.NumFrames %d: at least 2 per queue (one to receive, one to send)", o.NumFrames)
	}
	if o.NumFrames > 1<<20 {
		return fmt.Errorf("xdp: Options.NumFrames %d: more than %d chunks per queue", o.NumFrames, 1<<20)
	}
	if o.BusyPoll < 0 || o.BusyPoll > time.Second {
		return fmt.Errorf("xdp: Options.BusyPoll %v: must be between 0 and 1s", o.BusyPoll)
	}
	if o.BatchSize < 1 || o.BatchSize > int(o.RingSize) {
		return fmt.Errorf("xdp: Options.BatchSize %d: must be between 1 and RingSize (%d)", o.BatchSize, o.RingSize)
	}
	switch o.BindMode {
	case BindAuto, BindCopy, BindZeroCopy:
	default:
		return fmt.Errorf("xdp: Options.BindMode %v: want auto, copy or zerocopy", o.BindMode)
	}
	return nil
}

// maxFrameLen is the longest frame a chunk of frameSize bytes receives.
func maxFrameLen(frameSize uint32) int { return int(frameSize) - packetHeadroom }
