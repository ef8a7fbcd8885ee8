package capture

import (
	"fmt"
	"io"
	"log/slog"
	"time"
)

// Via is how frames are read from the kernel.
type Via int

const (
	// ViaMMap reads a TPACKET_V3 PACKET_RX_RING without copying frames out
	// of it.
	ViaMMap Via = iota
	// ViaRecvMMsg reads with recvmmsg(2).
	ViaRecvMMsg
	// ViaXDP reads what sluice's XDP capture program puts in a BPF ring
	// buffer: received frames only, at most 4096 bytes each.
	ViaXDP
)

// String returns the flag spelling.
func (v Via) String() string {
	switch v {
	case ViaMMap:
		return "mmap"
	case ViaRecvMMsg:
		return "recvmmsg"
	case ViaXDP:
		return "xdp"
	}
	return fmt.Sprintf("Via(%d)", int(v))
}

// Set implements pflag.Value.
func (v *Via) Set(s string) error {
	switch s {
	case "mmap":
		*v = ViaMMap
	case "recvmmsg":
		*v = ViaRecvMMsg
	case "xdp":
		*v = ViaXDP
	default:
		return fmt.Errorf("unknown --via %q (want mmap, recvmmsg or xdp)", s)
	}
	return nil
}

// Type implements pflag.Value.
func (*Via) Type() string { return "mmap|recvmmsg|xdp" }

// modeCode is the dispatch mode's number in the pcapng custom option.
func (v Via) modeCode() uint8 { return uint8(v) + 1 }

// Format is the output file format.
type Format int

const (
	// FormatPcap is the classic libpcap format.
	FormatPcap Format = iota
	// FormatPcapNG is pcapng, with interface, statistics and per-frame
	// metadata.
	FormatPcapNG
)

// String returns the flag spelling.
func (f Format) String() string {
	switch f {
	case FormatPcap:
		return "pcap"
	case FormatPcapNG:
		return "pcapng"
	}
	return fmt.Sprintf("Format(%d)", int(f))
}

// Set implements pflag.Value.
func (f *Format) Set(s string) error {
	switch s {
	case "pcap":
		*f = FormatPcap
	case "pcapng":
		*f = FormatPcapNG
	default:
		return fmt.Errorf("unknown --format %q (want pcap or pcapng)", s)
	}
	return nil
}

// Type implements pflag.Value.
func (*Format) Type() string { return "pcap|pcapng" }

// Precision is the timestamp resolution written to the file.
type Precision int

const (
	// Micro writes microseconds: pcap's classic magic, pcapng's default
	// if_tsresol.
	Micro Precision = iota
	// Nano writes nanoseconds.
	Nano
)

// String returns the flag spelling.
func (p Precision) String() string {
	if p == Nano {
		return "nano"
	}
	return "micro"
}

// Set implements pflag.Value.
func (p *Precision) Set(s string) error {
	switch s {
	case "micro":
		*p = Micro
	case "nano":
		*p = Nano
	default:
		return fmt.Errorf("unknown --tstamp-precision %q (want micro or nano)", s)
	}
	return nil
}

// Type implements pflag.Value.
func (*Precision) Type() string { return "micro|nano" }

// Defaults.
const (
	// DefaultSnaplen is tcpdump's: more than any frame on any link, so
	// nothing is cut.
	DefaultSnaplen = 262144
	// XDPSnaplen is the most the XDP capture program keeps of a frame
	// (bpf.CaptureMax): XDP without multi-buffer support sees one page.
	XDPSnaplen = 4096
	// DefaultBufferBytes is the ring (ViaMMap) or socket receive buffer
	// (ViaRecvMMsg) of each channel: 16 MiB holds about 80 ms of 64-byte
	// frames at the rate one core sends across a veth (tcpdump's default
	// is 2 MiB).
	DefaultBufferBytes = 16 << 20
	// MaxChannels bounds --channels.
	MaxChannels = 64
)

// Options configure a capture. The zero value of each field means its
// default; Open never modifies the caller's copy.
type Options struct {
	// Interface is the device to capture on. Required.
	Interface string
	// NetNS is the device's network namespace, by name (under
	// /var/run/netns) or path; "" is the caller's.
	NetNS string
	// Output is where frames go: a file name, "-" for Stdout. Required.
	// With rotation (FileSize, RotateEvery) it is the base name, as
	// tcpdump's -w.
	Output string
	// Stdout is written to when Output is "-".
	Stdout io.Writer
	// Count stops the capture after that many frames; 0: no limit.
	Count uint64
	// Snaplen is the most bytes kept of a frame. Default DefaultSnaplen
	// (XDPSnaplen with ViaXDP, which cannot keep more).
	Snaplen int
	// Duration stops the capture after that long; 0: no limit.
	Duration time.Duration
	// Via is how frames are read. Default ViaMMap.
	Via Via
	// Channels is the number of sockets in a fanout group (AF_PACKET
	// ways only). Default 1.
	Channels int
	// Format is the file format. Default FormatPcap.
	Format Format
	// Precision is the timestamp resolution. Default Micro.
	Precision Precision
	// Filter is a tcpdump filter expression; "" keeps every frame.
	Filter string
	// BufferBytes is each channel's ring or socket buffer. Default
	// DefaultBufferBytes.
	BufferBytes int
	// FileSize rotates to a new file once the current one exceeds it, in
	// bytes (tcpdump -C, which counts millions of bytes); 0: never.
	FileSize int64
	// RotateEvery starts a new file every so often (tcpdump -G), the name
	// being Output expanded with strftime; 0: never.
	RotateEvery time.Duration
	// FileCount is tcpdump's -W: with FileSize, the number of files
	// reused in a ring; with RotateEvery alone, the number of files after
	// which the capture ends.
	FileCount int
	// NoGSOInfo leaves PACKET_VNET_HDR off: frames then carry no GSO
	// segment count (0, unknown, in the pcapng option). With it on, the
	// kernel drops a super-frame whose GSO type the virtio_net_hdr cannot
	// express (SCTP, ESP) rather than deliver it.
	NoGSOInfo bool
	// RingRetire is the ring's block retire timeout (ViaMMap): the most a
	// frame waits in a block that is not full. Default 10 ms.
	RingRetire time.Duration
	// OnFrame, if set, is called for every frame written, with its
	// bytes as written (VLAN tag restored), valid only during the call.
	// Calls are serialised. It is how -v prints frames.
	OnFrame func(FrameInfo)
	// Ready, if set, is called once every socket or program is in place
	// and frames are being captured.
	Ready func()
	// Logger receives fallbacks (ViaMMap to ViaRecvMMsg) and warnings.
	// nil discards.
	Logger *slog.Logger
	// TcpdumpPath is the tcpdump that compiles filters. Default
	// "tcpdump" on PATH.
	TcpdumpPath string
}

// FrameInfo describes a frame for Options.OnFrame.
type FrameInfo struct {
	// Data is the frame as written to the file; valid during the call.
	Data []byte
	// WireLen is its length on the wire.
	WireLen int
	// Time is its kernel timestamp, Unix nanoseconds.
	Time int64
	// Outbound is true for frames the host sent.
	Outbound bool
	// Channel is the channel or receive queue.
	Channel int
	// GSOSegments is the wire segments it stands for (0: unknown).
	GSOSegments int
}

func (o Options) withDefaults() Options {
	if o.Snaplen == 0 {
		o.Snaplen = DefaultSnaplen
		if o.Via == ViaXDP {
			o.Snaplen = XDPSnaplen
		}
	}
	if o.Channels == 0 {
		o.Channels = 1
	}
	if o.BufferBytes == 0 {
		o.BufferBytes = DefaultBufferBytes
	}
	if o.RingRetire == 0 {
		o.RingRetire = 10 * time.Millisecond
	}
	if o.TcpdumpPath == "" {
		o.TcpdumpPath = "tcpdump"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// validate checks the options; errors name the flag to change.
func (o Options) validate() error {
	switch {
	case o.Interface == "":
		return fmt.Errorf("capture: no interface: name one with -i")
	case o.Output == "":
		return fmt.Errorf("capture: no output: name a file with -w (- for stdout)")
	case o.Output == "-" && o.Stdout == nil:
		return fmt.Errorf("capture: -w -: no stdout to write to")
	case o.Snaplen < 0 || o.Snaplen > DefaultSnaplen:
		return fmt.Errorf("capture: -s %d: want 1 to %d (0 for the default)", o.Snaplen, DefaultSnaplen)
	case o.Via == ViaXDP && o.Snaplen > XDPSnaplen:
		return fmt.Errorf("capture: -s %d with --via xdp: XDP keeps at most %d bytes of a frame; use -s %d or --via mmap", o.Snaplen, XDPSnaplen, XDPSnaplen)
	case o.Via < ViaMMap || o.Via > ViaXDP:
		return fmt.Errorf("capture: --via %v: want mmap, recvmmsg or xdp", o.Via)
	case o.Channels < 1 || o.Channels > MaxChannels:
		return fmt.Errorf("capture: --channels %d: want 1 to %d", o.Channels, MaxChannels)
	case o.Via == ViaXDP && o.Channels > 1:
		return fmt.Errorf("capture: --channels %d with --via xdp: the XDP program feeds one ring buffer from every queue; channels apply to mmap and recvmmsg", o.Channels)
	case o.Duration < 0:
		return fmt.Errorf("capture: --duration %v: must not be negative", o.Duration)
	case o.BufferBytes < 64<<10 || o.BufferBytes > 1<<31:
		return fmt.Errorf("capture: -B %d KiB: want 64 KiB to 2 GiB", o.BufferBytes>>10)
	case o.FileSize < 0:
		return fmt.Errorf("capture: -C: must not be negative")
	case o.RotateEvery < 0 || (o.RotateEvery > 0 && o.RotateEvery < time.Second):
		return fmt.Errorf("capture: -G %v: want whole seconds, at least 1", o.RotateEvery)
	case o.FileCount < 0:
		return fmt.Errorf("capture: -W %d: must not be negative", o.FileCount)
	case o.FileCount > 0 && o.FileSize == 0 && o.RotateEvery == 0:
		return fmt.Errorf("capture: -W %d needs -C or -G (it counts rotated files)", o.FileCount)
	case o.Output == "-" && (o.FileSize > 0 || o.RotateEvery > 0):
		return fmt.Errorf("capture: -C and -G rotate files: they cannot write to stdout (-w -)")
	case o.RingRetire < time.Millisecond || o.RingRetire%time.Millisecond != 0:
		return fmt.Errorf("capture: ring retire timeout %v: want whole milliseconds, at least 1", o.RingRetire)
	}
	return nil
}
