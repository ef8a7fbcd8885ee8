package capture

import (
	"encoding/binary"

	"github.com/sluicenet/sluice/dataplane"
)

// gsoSegments returns the wire segments a frame with virtio_net_hdr v stands
// for. The header length comes from the frame itself (the kernel's hdr_len
// is the linear part of the buffer, which may hold payload too); when the
// frame cannot be parsed, from v.
func gsoSegments(v dataplane.VnetHdr, data []byte, wireLen int) uint32 {
	if !v.IsGSO() {
		return 1
	}
	hdr := headersLen(data)
	if hdr == 0 {
		hdr = int(v.HdrLen)
	}
	return uint32(dataplane.GSOSegments(v, wireLen, hdr))
}

// headersLen returns the length of a frame's Ethernet (with any VLAN tags in
// the frame), IPv4 or IPv6 (no extension headers), and TCP or UDP headers,
// or 0 if it does not parse as such.
func headersLen(b []byte) int {
	off := 12
	for {
		if len(b) < off+2 {
			return 0
		}
		et := binary.BigEndian.Uint16(b[off:])
		if et == 0x8100 || et == 0x88a8 {
			off += 4
			continue
		}
		off += 2
		var proto byte
		switch et {
		case 0x0800:
			if len(b) < off+20 {
				return 0
			}
			ihl := int(b[off]&0x0f) * 4
			if ihl < 20 {
				return 0
			}
			proto = b[off+9]
			off += ihl
		case 0x86dd:
			if len(b) < off+40 {
				return 0
			}
			proto = b[off+6]
			off += 40
		default:
			return 0
		}
		switch proto {
		case 6:
			if len(b) < off+20 {
				return 0
			}
			return off + int(b[off+12]>>4)*4
		case 17:
			return off + 8
		}
		return 0
	}
}
