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

// ValidateFrame is Validate plus the checks that need the frame's bytes: it
// rejects a header whose claims do not match the packet it precedes, so that
// a consumer that acts on the header (splits a UDP_L4 super-frame at
// gso_size, trusts a NEEDS_CSUM frame's data) never acts on a lie. head is
// the start of the frame (at least its link and IP headers, when the frame
// has them: the first buffer of a read), frameLen the whole frame's length,
// and ethernet says whether it starts with an Ethernet header (AF_PACKET) or
// with the IP header (TUN).
//
// Beyond Validate:
//   - a GSO type must match the packet: TCPv4 an IPv4 packet, TCPv6 an IPv6
//     one, UDP_L4 a UDP datagram (the kernel's virtio_net_hdr_to_skb checks
//     the same on the way in, and virtio_net_hdr_from_skb only sets them from
//     an skb of that kind on the way out);
//   - gso_size must be smaller than the frame: a segment cannot be longer
//     than the super-frame it is cut from, and the kernel does not mark a
//     packet that fits in one segment as GSO ("Too small packets are not
//     really GSO ones", include/linux/virtio_net.h), so a 100-byte frame
//     claiming 64 KiB segments is a lie;
//   - a NEEDS_CSUM checksum must start after the link and IP version
//     headers it cannot be in.
func (h VnetHdr) ValidateFrame(head []byte, frameLen int, ethernet bool) error {
	if err := h.Validate(frameLen); err != nil {
		return err
	}
	if !h.IsGSO() && h.Flags&VnetFlagNeedsCsum == 0 {
		return nil
	}
	l3 := 0
	if ethernet {
		l3 = 14
	}
	if h.Flags&VnetFlagNeedsCsum != 0 && int(h.CsumStart) < l3+20 {
		// No IP header is shorter than 20 bytes, so a transport
		// checksum cannot start before l3+20.
		return fmt.Errorf("virtio_net_hdr: csum_start %d inside the link or IP header: %w", h.CsumStart, ErrMalformed)
	}
	if !h.IsGSO() {
		return nil
	}
	if int(h.GSOSize) >= frameLen {
		return fmt.Errorf("virtio_net_hdr: gso_size %d in a %d-byte frame: %w", h.GSOSize, frameLen, ErrMalformed)
	}
	version, proto, ok := ipVersionProto(head, ethernet)
	if !ok {
		return fmt.Errorf("virtio_net_hdr: gso_type %#x on a frame without a readable IP header: %w", h.GSOType, ErrMalformed)
	}
	switch h.GSOType &^ VnetGSOECN {
	case VnetGSOTCPv4:
		if version != 4 || proto != 6 {
			return fmt.Errorf("virtio_net_hdr: gso_type TCPv4 on an IPv%d packet of protocol %d: %w", version, proto, ErrMalformed)
		}
	case VnetGSOTCPv6:
		// The next header may be an extension header; the version is
		// what must hold.
		if version != 6 {
			return fmt.Errorf("virtio_net_hdr: gso_type TCPv6 on an IPv%d packet: %w", version, ErrMalformed)
		}
	case VnetGSOUDPL4:
		if proto != 17 {
			return fmt.Errorf("virtio_net_hdr: gso_type UDP_L4 on a packet of protocol %d: %w", proto, ErrMalformed)
		}
	case VnetGSOUDP:
		if version != 4 && version != 6 {
			return fmt.Errorf("virtio_net_hdr: gso_type UDP on an IPv%d packet: %w", version, ErrMalformed)
		}
	}
	return nil
}

// ipVersionProto reads the IP version and the protocol (IPv4) or first next
// header (IPv6) of a frame, behind an Ethernet header (and VLAN tags) when
// ethernet is set.
func ipVersionProto(b []byte, ethernet bool) (version, proto uint8, ok bool) {
	if ethernet {
		if len(b) < 14 {
			return 0, 0, false
		}
		et := binary.BigEndian.Uint16(b[12:])
		b = b[14:]
		for (et == etherTypeVLAN || et == etherTypeQinQ) && len(b) >= 4 {
			et = binary.BigEndian.Uint16(b[2:])
			b = b[4:]
		}
		if et != etherTypeIPv4 && et != etherTypeIPv6 {
			return 0, 0, false
		}
	}
	if len(b) < 1 {
		return 0, 0, false
	}
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return 0, 0, false
		}
		return 4, b[9], true
	case 6:
		if len(b) < 40 {
			return 0, 0, false
		}
		return 6, b[6], true
	}
	return b[0] >> 4, 0, true
}
