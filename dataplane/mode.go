package dataplane

import "fmt"

// Mode is the inbound dispatch mechanism of a channel.
type Mode int

const (
	// Readv reads one frame per readv(2) into a chain of buffers of the
	// BufferShape. It works on any readable descriptor, TUN included, and is
	// the fallback of every other mode.
	Readv Mode = iota
	// RecvMMsg reads up to RecvBatchSize frames per recvmmsg(2). It needs a
	// socket; on other descriptors it falls back to Readv.
	RecvMMsg
	// PacketMMap reads from a PACKET_RX_RING shared with the kernel: no
	// system call per frame, one copy out of the ring. It needs an AF_PACKET
	// socket; otherwise it falls back to RecvMMsg (or Readv).
	PacketMMap
)

// String returns the mode's flag spelling.
func (m Mode) String() string {
	switch m {
	case Readv:
		return "readv"
	case RecvMMsg:
		return "recvmmsg"
	case PacketMMap:
		return "mmap"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Set implements pflag.Value.
func (m *Mode) Set(s string) error {
	v, err := ParseMode(s)
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// Type implements pflag.Value.
func (*Mode) Type() string { return "readv|recvmmsg|mmap" }

// ParseMode parses a mode's flag spelling.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "readv":
		return Readv, nil
	case "recvmmsg":
		return RecvMMsg, nil
	case "mmap", "packet-mmap", "packetmmap":
		return PacketMMap, nil
	}
	return 0, fmt.Errorf("dataplane: unknown dispatch mode %q (want readv, recvmmsg or mmap)", s)
}

// Modes lists every AF_PACKET dispatch mode, in flag order.
var Modes = []Mode{Readv, RecvMMsg, PacketMMap}
