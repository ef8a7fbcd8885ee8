package dataplane

// Parsers for the headers the kernel writes into a PACKET_RX_RING
// (include/uapi/linux/if_packet.h, Documentation/networking/packet_mmap.rst).
//
// They are plain functions over []byte so that they can be tested and fuzzed
// anywhere. Nothing read from a ring is trusted: every offset and length is
// checked against the memory it was read from (the slot of a V1/V2 frame, the
// used part of a V3 block) before it is used, so a garbage ring yields
// ErrMalformed, never an out-of-range slice. All fields are little-endian,
// which is what the kernel writes on the hosts sluice supports (the mmap
// dispatcher refuses big-endian hosts).

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// TPACKET versions, the values of PACKET_VERSION (enum tpacket_versions).
const (
	tpacketV1 = 0
	tpacketV2 = 1
	tpacketV3 = 2
)

// tp_status and block_status bits (TP_STATUS_* in if_packet.h).
const (
	tpStatusKernel = 0      // the kernel owns the slot or block
	tpStatusUser   = 1 << 0 // filled: ours until we store tpStatusKernel
	tpStatusLosing = 1 << 2 // the kernel dropped frames since the last PACKET_STATISTICS read
)

// Header sizes and offsets. V1's tp_status is an unsigned long, so its layout
// here is the 64-bit one (amd64, arm64).
const (
	tpacket1HdrLen      = 32 // sizeof(struct tpacket_hdr)
	tpacket2HdrLen      = 32 // sizeof(struct tpacket2_hdr)
	tpacket3HdrLen      = 48 // sizeof(struct tpacket3_hdr)
	tpacketBlockDescLen = 48 // sizeof(struct tpacket_block_desc), BLK_HDR_LEN in af_packet.c
	sockaddrLLLen       = 20 // sizeof(struct sockaddr_ll), which follows the header in tp_hdrlen
	tpacketAlignment    = 16 // TPACKET_ALIGNMENT

	// tpacketBlockStatusOff is the offset of block_status in a V3 block
	// descriptor (version u32, offset_to_priv u32, then tpacket_hdr_v1).
	tpacketBlockStatusOff = 8
)

// tpacketHdrLen returns sizeof the frame header of a TPACKET version.
func tpacketHdrLen(version int) int {
	switch version {
	case tpacketV1:
		return tpacket1HdrLen
	case tpacketV2:
		return tpacket2HdrLen
	case tpacketV3:
		return tpacket3HdrLen
	}
	return 0
}

// tpacketMacOff returns where the kernel puts the MAC header of a SOCK_RAW
// frame with a 14-byte Ethernet header, relative to the frame header, as
// tpacket_rcv computes it: netoff = TPACKET_ALIGN(tp_hdrlen + 16) + vnetLen,
// macoff = netoff - 14, where tp_hdrlen = header + sizeof(sockaddr_ll). That
// gives 66 (V1, V2) or 82 (V3), plus vnetLen; KERNEL-NOTES item 2 and the
// virtio_net_hdr notes measured the same numbers.
func tpacketMacOff(version, vnetLen int) int {
	hdr := tpacketHdrLen(version) + sockaddrLLLen + 16
	return (hdr+tpacketAlignment-1)&^(tpacketAlignment-1) + vnetLen - 14
}

// tpacketFrame is one frame header read out of a ring. parseTPacketHdr only
// returns it once mac, net and snaplen have been checked against the bytes
// the header was parsed from, so hdr[mac:mac+snaplen] is always in range.
type tpacketFrame struct {
	status  uint32
	length  int // tp_len: the frame's length on the wire
	snaplen int // tp_snaplen: how much of it is in the ring, at mac
	mac     int // tp_mac: offset of the frame from the header's start
	net     int // tp_net: offset of the network header from the header's start
	next    int // V3 tp_next_offset: offset of the next header from this one; 0 on the last
	sec     uint32
	nsec    uint32 // V1 reports microseconds; they are converted
}

// truncated reports whether the ring holds less than the whole frame: the
// frame was larger than the slot or block.
func (f tpacketFrame) truncated() bool { return f.snaplen < f.length }

var tpLE = binary.LittleEndian

// parseTPacketHdr reads a frame header of the given version from the start of
// b. b must end where the frame's memory ends: the slot for V1/V2, the next
// header (or the end of the block's used part) for V3.
func parseTPacketHdr(version int, b []byte) (tpacketFrame, error) {
	var f tpacketFrame
	hdrLen := tpacketHdrLen(version)
	if hdrLen == 0 {
		return f, fmt.Errorf("tpacket: version %d: %w", version, ErrMalformed)
	}
	if len(b) < hdrLen {
		return f, fmt.Errorf("tpacket: V%d header needs %d bytes, slot has %d: %w", version+1, hdrLen, len(b), ErrMalformed)
	}
	switch version {
	case tpacketV1:
		// The upper half of the unsigned long holds no flags.
		f.status = uint32(tpLE.Uint64(b[0:]))
		f.length = int(tpLE.Uint32(b[8:]))
		f.snaplen = int(tpLE.Uint32(b[12:]))
		f.mac = int(tpLE.Uint16(b[16:]))
		f.net = int(tpLE.Uint16(b[18:]))
		f.sec = tpLE.Uint32(b[20:])
		f.nsec = tpLE.Uint32(b[24:]) % 1_000_000 * 1000
	case tpacketV2:
		f.status = tpLE.Uint32(b[0:])
		f.length = int(tpLE.Uint32(b[4:]))
		f.snaplen = int(tpLE.Uint32(b[8:]))
		f.mac = int(tpLE.Uint16(b[12:]))
		f.net = int(tpLE.Uint16(b[14:]))
		f.sec = tpLE.Uint32(b[16:])
		f.nsec = tpLE.Uint32(b[20:])
	case tpacketV3:
		f.next = int(tpLE.Uint32(b[0:]))
		f.sec = tpLE.Uint32(b[4:])
		f.nsec = tpLE.Uint32(b[8:])
		f.snaplen = int(tpLE.Uint32(b[12:]))
		f.length = int(tpLE.Uint32(b[16:]))
		f.status = tpLE.Uint32(b[20:])
		f.mac = int(tpLE.Uint16(b[24:]))
		f.net = int(tpLE.Uint16(b[26:]))
	}
	// The frame may not overlap its own header, must lie inside its
	// memory, and cannot be longer in the ring than on the wire. The
	// lengths are u32 from the kernel, so add in int (64-bit) without
	// overflow.
	switch {
	case f.mac < hdrLen:
		return f, fmt.Errorf("tpacket: tp_mac %d inside the %d-byte header: %w", f.mac, hdrLen, ErrMalformed)
	case f.mac+f.snaplen > len(b):
		return f, fmt.Errorf("tpacket: tp_mac %d + tp_snaplen %d beyond a %d-byte slot: %w", f.mac, f.snaplen, len(b), ErrMalformed)
	case f.snaplen > f.length:
		return f, fmt.Errorf("tpacket: tp_snaplen %d > tp_len %d: %w", f.snaplen, f.length, ErrMalformed)
	case f.net < f.mac || f.net > len(b):
		return f, fmt.Errorf("tpacket: tp_net %d outside tp_mac %d..slot end %d: %w", f.net, f.mac, len(b), ErrMalformed)
	}
	return f, nil
}

// tpacketBlock is a V3 block descriptor (struct tpacket_block_desc with
// struct tpacket_hdr_v1), checked against the block it was read from.
type tpacketBlock struct {
	status  uint32
	numPkts int
	first   int // offset_to_first_pkt, from the block's start
	length  int // blk_len: bytes in use from the block's start
	seq     uint64
}

// parseTPacketBlock reads the descriptor at the start of a V3 block. b is the
// whole block (tp_block_size bytes).
func parseTPacketBlock(b []byte) (tpacketBlock, error) {
	var d tpacketBlock
	if len(b) < tpacketBlockDescLen {
		return d, fmt.Errorf("tpacket: block descriptor needs %d bytes, block has %d: %w", tpacketBlockDescLen, len(b), ErrMalformed)
	}
	d.status = tpLE.Uint32(b[tpacketBlockStatusOff:])
	d.numPkts = int(tpLE.Uint32(b[12:]))
	d.first = int(tpLE.Uint32(b[16:]))
	d.length = int(tpLE.Uint32(b[20:]))
	d.seq = tpLE.Uint64(b[24:])
	switch {
	case d.length > len(b):
		return d, fmt.Errorf("tpacket: blk_len %d beyond a %d-byte block: %w", d.length, len(b), ErrMalformed)
	case d.first < tpacketBlockDescLen || d.first > d.length:
		return d, fmt.Errorf("tpacket: offset_to_first_pkt %d outside %d..blk_len %d: %w", d.first, tpacketBlockDescLen, d.length, ErrMalformed)
	case d.numPkts > (d.length-d.first)/tpacket3HdrLen:
		// Every packet takes at least its header.
		return d, fmt.Errorf("tpacket: num_pkts %d cannot fit in %d bytes: %w", d.numPkts, d.length-d.first, ErrMalformed)
	}
	return d, nil
}

// tpacketBlockIter walks the packets of a V3 block along tp_next_offset,
// checking each step: a header must start inside the used part of the block,
// every packet but the last must point to a later header with room for itself
// in between, and there are exactly num_pkts of them.
type tpacketBlockIter struct {
	blk  []byte // the block up to blk_len
	off  int    // offset of the next header
	left int    // packets not yet returned
}

func newTPacketBlockIter(block []byte, d tpacketBlock) tpacketBlockIter {
	return tpacketBlockIter{blk: block[:d.length], off: d.first, left: d.numPkts}
}

// remaining returns the number of packets not returned yet; after an error,
// the packets that are lost with the broken chain (the bad one included).
func (it *tpacketBlockIter) remaining() int { return it.left }

// next returns the next packet: the bytes from its header to where the next
// one starts (or blk_len), and its checked header. ok is false at the end. An
// error means the rest of the block cannot be trusted; remaining() says how
// many packets that was.
func (it *tpacketBlockIter) next() (pkt []byte, f tpacketFrame, ok bool, err error) {
	if it.left <= 0 {
		return nil, f, false, nil
	}
	if it.off < 0 || it.off > len(it.blk)-tpacket3HdrLen {
		return nil, f, false, fmt.Errorf("tpacket: packet header at %d beyond blk_len %d with %d packets left: %w", it.off, len(it.blk), it.left, ErrMalformed)
	}
	end := len(it.blk)
	if it.left > 1 {
		next := int(tpLE.Uint32(it.blk[it.off:]))
		if next < tpacket3HdrLen || next > end-it.off {
			return nil, f, false, fmt.Errorf("tpacket: tp_next_offset %d at %d in a %d-byte block with %d packets left: %w", next, it.off, end, it.left, ErrMalformed)
		}
		end = it.off + next
	}
	pkt = it.blk[it.off:end]
	f, err = parseTPacketHdr(tpacketV3, pkt)
	if err != nil {
		return nil, f, false, err
	}
	it.off = end
	it.left--
	return pkt, f, true, nil
}

// frameLimits is what a received frame must satisfy to be delivered.
type frameLimits struct {
	vnetLen int // bytes of virtio_net_hdr before the MAC header; 0 without PACKET_VNET_HDR
	minLen  int // 14 with an Ethernet header
	// ethernet says frames start with an Ethernet header, for
	// VnetHdr.ValidateFrame.
	ethernet bool
	maxLen   int // LinkOptions.MaxFrameSize
}

// Reasons a frame in a ring is dropped. They are values, not formatted per
// frame, so that a flood of bad frames does not allocate.
var (
	errTPacketTruncated = fmt.Errorf("tpacket: frame truncated to its slot or block: %w", ErrMalformed)
	errTPacketShort     = fmt.Errorf("tpacket: frame shorter than its link header: %w", ErrMalformed)
	errTPacketLong      = fmt.Errorf("tpacket: frame longer than MaxFrameSize: %w", ErrMalformed)
	errTPacketNoVnet    = fmt.Errorf("tpacket: no room for the virtio_net_hdr before tp_mac: %w", ErrMalformed)
)

// tpacketFrameData returns the bytes of the frame whose header f was parsed
// from hdr (a version with hdrLen-byte headers) and, when lim.vnetLen > 0,
// its virtio_net_hdr, which the kernel writes just before the MAC header. It
// rejects truncated frames, frames outside lim's lengths and a
// virtio_net_hdr that overlaps the frame header or does not validate.
func tpacketFrameData(hdr []byte, f tpacketFrame, hdrLen int, lim frameLimits) ([]byte, VnetHdr, error) {
	var vh VnetHdr
	if f.mac < 0 || f.snaplen < 0 || f.mac+f.snaplen > len(hdr) {
		// parseTPacketHdr rules this out; checked again because a
		// slice expression must never panic on ring contents.
		return nil, vh, fmt.Errorf("tpacket: frame %d+%d beyond %d bytes: %w", f.mac, f.snaplen, len(hdr), ErrMalformed)
	}
	switch {
	case f.truncated():
		return nil, vh, errTPacketTruncated
	case f.snaplen < lim.minLen:
		return nil, vh, errTPacketShort
	case f.snaplen > lim.maxLen:
		return nil, vh, errTPacketLong
	}
	data := hdr[f.mac : f.mac+f.snaplen]
	if lim.vnetLen > 0 {
		start := f.mac - lim.vnetLen
		if start < hdrLen || lim.vnetLen < VnetHdrLen {
			return nil, vh, errTPacketNoVnet
		}
		var err error
		if vh, err = ParseVnetHdr(hdr[start:f.mac]); err != nil {
			return nil, vh, err
		}
		if err = vh.ValidateFrame(data, len(data), lim.ethernet); err != nil {
			return nil, vh, err
		}
	}
	return data, vh, nil
}

// tpacketGeometry is the PACKET_RX_RING request (struct tpacket_req3; V2
// uses the first four fields) for a ring of a version, and what the
// dispatcher needs to walk it.
type tpacketGeometry struct {
	blockSize, blockNr int
	frameSize, frameNr int // V1/V2 slots; for V3 one "frame" per block, which the kernel only checks
	retireTOVms        int // V3 tp_retire_blk_tov
}

// ringSize returns the bytes to mmap.
func (g tpacketGeometry) ringSize() int { return g.blockSize * g.blockNr }

// framesPerBlock returns the V1/V2 slots in a block.
func (g tpacketGeometry) framesPerBlock() int { return g.blockSize / g.frameSize }

// frameOffset returns the offset in the ring of V1/V2 slot i: slots never
// cross a block, so the tail of each block past its last slot is unused.
func (g tpacketGeometry) frameOffset(i int) int {
	fpb := g.framesPerBlock()
	return i/fpb*g.blockSize + i%fpb*g.frameSize
}

var errTPacketGeometry = errors.New("tpacket: ring geometry")

// newTPacketGeometry derives a ring for frames up to maxFrame bytes (not
// counting the virtio_net_hdr) from the block size and count, checking the
// kernel's own rules (packet_set_ring: page-aligned blocks, frames a
// multiple of TPACKET_ALIGNMENT, at least one frame per block) so that a
// bad configuration is reported by name rather than as EINVAL.
//
// V3 blocks hold variable-size frames, so blockSize only has to hold the
// largest frame with its headers: the block descriptor, the frame header and
// the padding up to the MAC offset. V1/V2 slots are fixed-size and each must
// hold the largest frame; a block holds blockSize/frameSize of them, and a
// block smaller than one slot is grown to the next power-of-two number of
// pages (alloc_pg_vec allocates blocks in power-of-two page orders anyway),
// with fewer blocks so that the ring keeps about the memory asked for.
func newTPacketGeometry(version, blockSize, blockNr, maxFrame, vnetLen, pageSize, retireTOVms int) (tpacketGeometry, error) {
	var g tpacketGeometry
	if blockSize <= 0 || pageSize <= 0 || blockSize%pageSize != 0 {
		return g, fmt.Errorf("%w: block size %d is not a multiple of the page size %d", errTPacketGeometry, blockSize, pageSize)
	}
	// The kernel keeps V3 block numbers in an unsigned short.
	if blockNr <= 0 || blockNr > 1<<16-1 {
		return g, fmt.Errorf("%w: %d blocks, want 1..65535", errTPacketGeometry, blockNr)
	}
	need := tpacketMacOff(version, vnetLen) + maxFrame
	switch version {
	case tpacketV3:
		if tpacketBlockDescLen+need > blockSize {
			return g, fmt.Errorf("%w: a %d-byte V3 block cannot hold a %d-byte frame (%d bytes with headers)",
				errTPacketGeometry, blockSize, maxFrame, tpacketBlockDescLen+need)
		}
		if retireTOVms < 0 {
			return g, fmt.Errorf("%w: retire timeout %d ms is negative", errTPacketGeometry, retireTOVms)
		}
		g = tpacketGeometry{blockSize: blockSize, blockNr: blockNr, frameSize: blockSize, frameNr: blockNr, retireTOVms: retireTOVms}
	case tpacketV1, tpacketV2:
		frameSize := (need + tpacketAlignment - 1) &^ (tpacketAlignment - 1)
		if frameSize > blockSize {
			total := blockSize * blockNr
			blockSize = pageSize
			for blockSize < frameSize {
				blockSize *= 2
			}
			// Keep the memory the caller asked for, at least one block.
			blockNr = max(1, total/blockSize)
		}
		fpb := blockSize / frameSize
		g = tpacketGeometry{blockSize: blockSize, blockNr: blockNr, frameSize: frameSize, frameNr: fpb * blockNr}
	default:
		return g, fmt.Errorf("%w: unknown TPACKET version %d", errTPacketGeometry, version)
	}
	if g.ringSize() > 1<<31 {
		return g, fmt.Errorf("%w: %d blocks of %d bytes exceed 2 GiB", errTPacketGeometry, g.blockNr, g.blockSize)
	}
	return g, nil
}
