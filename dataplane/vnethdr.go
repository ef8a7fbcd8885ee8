package dataplane

import (
	"encoding/binary"
	"fmt"
)

// VnetHdrLen is the size of struct virtio_net_hdr (include/uapi/linux/virtio_net.h),
// the header PACKET_VNET_HDR and IFF_VNET_HDR put before every frame.
const VnetHdrLen = 10

// virtio_net_hdr flags.
const (
	VnetFlagNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM: checksum from CsumStart is partial
	VnetFlagDataValid = 2 // VIRTIO_NET_HDR_F_DATA_VALID: checksum already verified
)

// virtio_net_hdr gso types.
const (
	VnetGSONone  = 0
	VnetGSOTCPv4 = 1
	VnetGSOUDP   = 3
	VnetGSOTCPv6 = 4
	VnetGSOUDPL4 = 5
	VnetGSOECN   = 0x80
)

// VnetHdr is a parsed virtio_net_hdr. All fields are little-endian on the wire
// (the legacy header of a little-endian host, which is what packet sockets and
// TUN use on x86 and arm64).
type VnetHdr struct {
	Flags      uint8
	GSOType    uint8
	HdrLen     uint16
	GSOSize    uint16
	CsumStart  uint16
	CsumOffset uint16
}

// ParseVnetHdr decodes b's first VnetHdrLen bytes. It checks only the length;
// Validate checks the fields against a frame.
func ParseVnetHdr(b []byte) (VnetHdr, error) {
	if len(b) < VnetHdrLen {
		return VnetHdr{}, fmt.Errorf("virtio_net_hdr: %d bytes, need %d: %w", len(b), VnetHdrLen, ErrMalformed)
	}
	return VnetHdr{
		Flags:      b[0],
		GSOType:    b[1],
		HdrLen:     binary.LittleEndian.Uint16(b[2:]),
		GSOSize:    binary.LittleEndian.Uint16(b[4:]),
		CsumStart:  binary.LittleEndian.Uint16(b[6:]),
		CsumOffset: binary.LittleEndian.Uint16(b[8:]),
	}, nil
}

// Encode writes h into b[:VnetHdrLen]; b must be at least that long.
func (h VnetHdr) Encode(b []byte) {
	_ = b[VnetHdrLen-1]
	b[0] = h.Flags
	b[1] = h.GSOType
	binary.LittleEndian.PutUint16(b[2:], h.HdrLen)
	binary.LittleEndian.PutUint16(b[4:], h.GSOSize)
	binary.LittleEndian.PutUint16(b[6:], h.CsumStart)
	binary.LittleEndian.PutUint16(b[8:], h.CsumOffset)
}

// IsGSO reports whether the header describes a super-frame to be segmented.
func (h VnetHdr) IsGSO() bool { return h.GSOType&^VnetGSOECN != VnetGSONone }

// Validate checks h against a frame of frameLen bytes, the way the kernel's
// virtio_net_hdr_to_skb does, so that a header that lies about the frame is
// rejected instead of trusted: a GSO type we know, a non-zero gso_size for
// GSO, a checksum start and offset inside the frame.
func (h VnetHdr) Validate(frameLen int) error {
	switch h.GSOType &^ VnetGSOECN {
	case VnetGSONone, VnetGSOTCPv4, VnetGSOTCPv6, VnetGSOUDP, VnetGSOUDPL4:
	default:
		return fmt.Errorf("virtio_net_hdr: gso_type %#x: %w", h.GSOType, ErrMalformed)
	}
	if h.IsGSO() {
		if h.GSOSize == 0 {
			return fmt.Errorf("virtio_net_hdr: gso_type %#x with gso_size 0: %w", h.GSOType, ErrMalformed)
		}
		if int(h.HdrLen) > frameLen {
			return fmt.Errorf("virtio_net_hdr: hdr_len %d beyond a %d-byte frame: %w", h.HdrLen, frameLen, ErrMalformed)
		}
	}
	if h.Flags&VnetFlagNeedsCsum != 0 {
		// The 16-bit checksum field must lie inside the frame.
		if int(h.CsumStart)+int(h.CsumOffset)+2 > frameLen {
			return fmt.Errorf("virtio_net_hdr: checksum at %d+%d beyond a %d-byte frame: %w",
				h.CsumStart, h.CsumOffset, frameLen, ErrMalformed)
		}
	}
	return nil
}
