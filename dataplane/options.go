package dataplane

import (
	"fmt"
	"log/slog"
)

// DefaultBufferShape is the reference's readv buffer chain: a frame of n
// bytes uses only the first few buffers, so small frames cost little memory
// while a 64 KiB GSO super-frame still fits (the sizes add up to 65664).
var DefaultBufferShape = []int{128, 256, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768}

const (
	// DefaultRecvBatchSize is the reference's recvmmsg batch: 8 frames
	// per call amortises the system call without holding many buffers.
	DefaultRecvBatchSize = 8
	// DefaultSendBatchSize is 47 because one 64 KiB TCP segment split at
	// an MSS of 1420 bytes is 65535/1420 = 46.2, so 47 frames: the whole
	// segment leaves in one sendmmsg.
	DefaultSendBatchSize = 47
	// DefaultRingBlockSize is the PACKET_RX_RING block size: 128 KiB
	// holds a whole 64 KiB GSO super-frame plus headers, which a V3 ring
	// needs (a frame never spans blocks).
	DefaultRingBlockSize = 128 << 10
	// DefaultRingBlocks gives a 4 MiB ring per channel.
	DefaultRingBlocks = 32
)

// LinkOptions configure a Link. The zero value of each field means its
// default; New never modifies the caller's copy.
type LinkOptions struct {
	// FDs are the descriptors to read and write, one channel each. They
	// are borrowed: the Link sets them non-blocking but does not close
	// them, and they must stay open until Wait returns.
	FDs []int
	// Mode is the inbound dispatch mode requested for every channel. A
	// mode that does not fit a descriptor falls back (PacketMMap ->
	// RecvMMsg -> Readv) and the reason is logged once; Link.Mode reports
	// what was chosen.
	Mode Mode
	// EthernetHeader says frames start with an Ethernet header (AF_PACKET
	// SOCK_RAW); false means IP packets (TUN). It only affects flow hashing
	// and the minimum frame length.
	EthernetHeader bool
	// VnetHdr says every frame on the descriptors is preceded by a
	// virtio_net_hdr (PACKET_VNET_HDR or IFF_VNET_HDR already set).
	VnetHdr bool
	// MaxFrameSize bounds a received frame in bytes, not counting the
	// virtio_net_hdr; larger frames are counted as errors and dropped.
	// Default: the sum of BufferShape (65664).
	MaxFrameSize int
	// BufferShape is the chain of buffer sizes readv and recvmmsg read
	// each frame into. Default: DefaultBufferShape.
	BufferShape []int
	// RecvBatchSize is the number of frames per recvmmsg. Default 8.
	RecvBatchSize int
	// SendBatchSize is the number of frames per sendmmsg. Default 47.
	SendBatchSize int
	// RingBlockSize and RingBlocks size each channel's PACKET_RX_RING in
	// bytes and blocks. RingBlockSize must be a multiple of the page size
	// and hold MaxFrameSize plus headers. Defaults: 128 KiB and 32.
	RingBlockSize int
	RingBlocks    int
	// ProcessorsPerChannel is the number of goroutines per channel that
	// deliver frames, steered by flow hash. 1 (the default) delivers on
	// the reader goroutine.
	ProcessorsPerChannel int
	// Allocator supplies receive buffers. Default: HeapAllocator.
	Allocator Allocator
	// HashSeed seeds FlowHash; 0 is a valid seed.
	HashSeed uint32
	// Logger receives fallback decisions and unusual errors. nil discards.
	Logger *slog.Logger
	// Faults configures the containment of panics raised while a frame is
	// delivered (FaultGuard): where the frames behind them are written,
	// how often they are logged. Its Logger defaults to Logger.
	Faults FaultOptions
	// Closed, if set, is called with the error when a channel's reader
	// stops because its descriptor failed (not when the Link is closed).
	Closed func(err error)
}

func (o LinkOptions) withDefaults() LinkOptions {
	if o.BufferShape == nil {
		o.BufferShape = DefaultBufferShape
	}
	if o.MaxFrameSize == 0 {
		for _, s := range o.BufferShape {
			o.MaxFrameSize += s
		}
	}
	if o.RecvBatchSize == 0 {
		o.RecvBatchSize = DefaultRecvBatchSize
	}
	if o.SendBatchSize == 0 {
		o.SendBatchSize = DefaultSendBatchSize
	}
	if o.RingBlockSize == 0 {
		o.RingBlockSize = DefaultRingBlockSize
	}
	if o.RingBlocks == 0 {
		o.RingBlocks = DefaultRingBlocks
	}
	if o.ProcessorsPerChannel == 0 {
		o.ProcessorsPerChannel = 1
	}
	if o.Allocator == nil {
		o.Allocator = HeapAllocator{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

func (o LinkOptions) validate() error {
	if len(o.FDs) == 0 {
		return fmt.Errorf("dataplane: LinkOptions.FDs is empty: need at least one descriptor")
	}
	for i, fd := range o.FDs {
		if fd < 0 {
			return fmt.Errorf("dataplane: LinkOptions.FDs[%d] = %d: not a descriptor", i, fd)
		}
	}
	switch o.Mode {
	case Readv, RecvMMsg, PacketMMap:
	default:
		return fmt.Errorf("dataplane: LinkOptions.Mode %v: unknown", o.Mode)
	}
	total := 0
	for i, s := range o.BufferShape {
		if s <= 0 {
			return fmt.Errorf("dataplane: LinkOptions.BufferShape[%d] = %d: must be positive", i, s)
		}
		total += s
	}
	if o.MaxFrameSize < 0 || o.MaxFrameSize > total {
		return fmt.Errorf("dataplane: LinkOptions.MaxFrameSize %d: must be between 1 and the BufferShape total %d", o.MaxFrameSize, total)
	}
	if o.RecvBatchSize < 1 || o.RecvBatchSize > 1024 {
		return fmt.Errorf("dataplane: LinkOptions.RecvBatchSize %d: must be 1..1024", o.RecvBatchSize)
	}
	if o.SendBatchSize < 1 || o.SendBatchSize > 1024 {
		return fmt.Errorf("dataplane: LinkOptions.SendBatchSize %d: must be 1..1024", o.SendBatchSize)
	}
	if o.RingBlockSize < 4096 || o.RingBlockSize%4096 != 0 {
		return fmt.Errorf("dataplane: LinkOptions.RingBlockSize %d: must be a positive multiple of 4096", o.RingBlockSize)
	}
	if o.RingBlocks < 1 {
		return fmt.Errorf("dataplane: LinkOptions.RingBlocks %d: must be at least 1", o.RingBlocks)
	}
	if o.ProcessorsPerChannel < 1 || o.ProcessorsPerChannel > 256 {
		return fmt.Errorf("dataplane: LinkOptions.ProcessorsPerChannel %d: must be 1..256", o.ProcessorsPerChannel)
	}
	return nil
}
