package dataplane

// The per-frame metadata a TPACKET_V3 ring carries beyond what the Link's
// dispatcher uses, for readers that hand ring memory to their caller as it is
// (RingReader): the VLAN tag the kernel took out of the frame, the
// sockaddr_ll with the frame's direction, and the timestamp. Pure functions
// over []byte like the rest of tpacket.go, so they are tested and fuzzed
// anywhere.

import (
	"errors"
	"fmt"
)

// tp_status bits a RingFrame's Status may carry (TP_STATUS_* in
// include/uapi/linux/if_packet.h), besides TPStatusLosing.
const (
	// TPStatusLosing: the kernel dropped frames (the ring was full) since
	// PACKET_STATISTICS was last read. A V3 ring sets it on blocks.
	TPStatusLosing = tpStatusLosing
	// TPStatusCsumNotReady: the frame's transport checksum is partial (it
	// is computed later by the device, or never on a veth).
	TPStatusCsumNotReady = 1 << 3
	// TPStatusVLANValid: VLANTCI holds a tag the kernel stripped from the
	// frame (needed to tell TCI 0 from "no tag").
	TPStatusVLANValid = 1 << 4
	// TPStatusVLANTPIDValid: VLANTPID holds the tag's ethertype.
	TPStatusVLANTPIDValid = 1 << 6
	// TPStatusCsumValid: the transport checksum was verified.
	TPStatusCsumValid = 1 << 7
	// TPStatusGSOTCP: the frame is a TCP GSO super-frame (Linux 5.11).
	TPStatusGSOTCP = 1 << 8
)

// Packet types of sockaddr_ll.sll_pkttype (PACKET_* in
// include/uapi/linux/if_packet.h): whom a frame was for, or that it was sent.
const (
	PacketHost      = 0 // to this host
	PacketBroadcast = 1 // to all
	PacketMulticast = 2 // to a group
	PacketOtherHost = 3 // to someone else (seen because the device is promiscuous or a veth)
	PacketOutgoing  = 4 // sent by this host
)

// EthPVLAN is ETH_P_8021Q, the ethertype of an 802.1Q tag and the TPID the
// kernel means when it does not report one.
const EthPVLAN = 0x8100

// V3 frame header fields beyond tpacket.go's (struct tpacket3_hdr with struct
// tpacket_hdr_variant1), and where the kernel puts the sockaddr_ll:
// TPACKET_ALIGN(sizeof(struct tpacket3_hdr)) from the header (af_packet.c
// tpacket_rcv).
const (
	tpacket3VLANTCIOff  = 32
	tpacket3VLANTPIDOff = 36
	tpacket3SLLOff      = 48
)

// RingFrame is one frame of a PACKET_RX_RING block as RingReader hands it
// over.
type RingFrame struct {
	// Data is the frame from its link-layer header, as much of it as the
	// kernel put in the ring (tp_snaplen bytes at tp_mac). It aliases ring
	// memory and is only valid until the callback it was passed to
	// returns; the kernel overwrites it afterwards.
	Data []byte
	// WireLen is the frame's length on the wire (tp_len). It exceeds
	// len(Data) when the frame was cut: by a socket filter that returned
	// less (a snap length), or to fit the block.
	WireLen int
	// Sec and Nsec are the kernel's receive timestamp (tp_sec, tp_nsec),
	// CLOCK_REALTIME.
	Sec, Nsec uint32
	// Status is tp_status: TPStatus* bits. TPStatusLosing is that of
	// the block holding the frame: a V3 ring reports drops per block
	// (af_packet.c prb_close_block), when the block is handed over.
	Status uint32
	// VLANTCI and VLANTPID are the 802.1Q tag the kernel removed from the
	// frame (VLAN offload, or skb_vlan_untag on receive), valid when
	// HasVLAN. VLANTPID is 0 when the kernel did not report it, which
	// means EthPVLAN.
	VLANTCI, VLANTPID uint16
	HasVLAN           bool
	// PktType is sll_pkttype: PacketHost, PacketOutgoing and so on.
	PktType uint8
	// Ifindex is sll_ifindex, the device the frame was seen on.
	Ifindex int
	// Vnet is the frame's virtio_net_hdr when the socket has
	// PACKET_VNET_HDR (HasVnet): its GSO fields say how many segments a
	// super-frame stands for. It is as the kernel wrote it, not validated
	// against a truncated frame.
	Vnet    VnetHdr
	HasVnet bool
}

// errRingFrameSLL: a header too short to hold the sockaddr_ll before tp_mac.
var errRingFrameSLL = fmt.Errorf("tpacket: no room for sockaddr_ll before tp_mac: %w", ErrMalformed)

// parseRingFrame fills rf from a V3 packet pkt (the bytes from its header to
// the next one, as tpacketBlockIter returns them) whose header f was parsed
// already. vnetLen is the socket's virtio_net_hdr size, 0 without
// PACKET_VNET_HDR. Unlike tpacketFrameData it accepts frames cut short:
// a capture records those with their wire length.
func parseRingFrame(pkt []byte, f tpacketFrame, vnetLen int, rf *RingFrame) error {
	if f.mac < 0 || f.snaplen < 0 || f.mac+f.snaplen > len(pkt) {
		// parseTPacketHdr rules this out; checked again because a
		// slice expression must never panic on ring contents.
		return fmt.Errorf("tpacket: frame %d+%d beyond %d bytes: %w", f.mac, f.snaplen, len(pkt), ErrMalformed)
	}
	// The sockaddr_ll (and the virtio_net_hdr, if any) lie between the
	// header and tp_mac.
	if f.mac-vnetLen < tpacket3SLLOff+sockaddrLLLen {
		return errRingFrameSLL
	}
	*rf = RingFrame{
		Data:    pkt[f.mac : f.mac+f.snaplen : f.mac+f.snaplen],
		WireLen: f.length,
		Sec:     f.sec,
		Nsec:    f.nsec,
		Status:  f.status,
		PktType: pkt[tpacket3SLLOff+10],
		Ifindex: int(int32(tpLE.Uint32(pkt[tpacket3SLLOff+4:]))),
	}
	tci := tpLE.Uint32(pkt[tpacket3VLANTCIOff:])
	// Kernels before 3.14 have no TP_STATUS_VLAN_VALID and report a tag
	// by a non-zero TCI alone (libpcap reads it the same way).
	if f.status&TPStatusVLANValid != 0 || tci != 0 {
		rf.HasVLAN = true
		rf.VLANTCI = uint16(tci)
		if f.status&TPStatusVLANTPIDValid != 0 {
			rf.VLANTPID = tpLE.Uint16(pkt[tpacket3VLANTPIDOff:])
		}
	}
	if vnetLen >= VnetHdrLen {
		vh, err := ParseVnetHdr(pkt[f.mac-vnetLen : f.mac])
		if err != nil {
			return err
		}
		rf.Vnet, rf.HasVnet = vh, true
	}
	return nil
}

// parseV3Frame is parseTPacketHdr(tpacketV3, p) followed by parseRingFrame,
// in one pass: the reader's hot path, a few tens of nanoseconds cheaper per
// frame than the two general parsers, which matters at millions of frames
// a second. It accepts exactly what they accept and fills rf the same way
// (FuzzParseV3Frame holds it to that), reporting false where they fail.
func parseV3Frame(p []byte, vnetLen int, rf *RingFrame) bool {
	if len(p) < tpacket3HdrLen {
		return false
	}
	h := p[:tpacket3HdrLen:tpacket3HdrLen]
	snaplen := int(tpLE.Uint32(h[12:]))
	length := int(tpLE.Uint32(h[16:]))
	status := tpLE.Uint32(h[20:])
	mac := int(tpLE.Uint16(h[24:]))
	net := int(tpLE.Uint16(h[26:]))
	// The checks of parseTPacketHdr, then parseRingFrame's room for the
	// sockaddr_ll (and virtio_net_hdr) before the frame.
	if mac < tpacket3HdrLen || mac+snaplen > len(p) || snaplen > length || net < mac || net > len(p) ||
		mac-vnetLen < tpacket3SLLOff+sockaddrLLLen {
		return false
	}
	sll := p[tpacket3SLLOff : tpacket3SLLOff+sockaddrLLLen]
	*rf = RingFrame{
		Data:    p[mac : mac+snaplen : mac+snaplen],
		WireLen: length,
		Sec:     tpLE.Uint32(h[4:]),
		Nsec:    tpLE.Uint32(h[8:]),
		Status:  status,
		PktType: sll[10],
		Ifindex: int(int32(tpLE.Uint32(sll[4:]))),
	}
	if tci := tpLE.Uint32(h[tpacket3VLANTCIOff:]); status&TPStatusVLANValid != 0 || tci != 0 {
		rf.HasVLAN = true
		rf.VLANTCI = uint16(tci)
		if status&TPStatusVLANTPIDValid != 0 {
			rf.VLANTPID = tpLE.Uint16(h[tpacket3VLANTPIDOff:])
		}
	}
	if vnetLen >= VnetHdrLen {
		v := p[mac-vnetLen : mac-vnetLen+VnetHdrLen]
		rf.Vnet = VnetHdr{
			Flags:      v[0],
			GSOType:    v[1],
			HdrLen:     tpLE.Uint16(v[2:]),
			GSOSize:    tpLE.Uint16(v[4:]),
			CsumStart:  tpLE.Uint16(v[6:]),
			CsumOffset: tpLE.Uint16(v[8:]),
		}
		rf.HasVnet = true
	}
	return true
}

// ErrDeviceGone is returned by a RingReader (and wrapped by its callers) when
// the device its socket is bound to was removed: nothing more will arrive.
// Do not retry.
var ErrDeviceGone = errors.New("device gone")

// GSOSegments returns how many wire segments a frame stands for: 1 for an
// ordinary frame, ceil(payload / gso_size) for a GSO super-frame, whose
// headers (hdrLen bytes from the start of the frame) are repeated on every
// segment. It returns 0 (unknown) when v says GSO but the numbers do not
// make sense.
func GSOSegments(v VnetHdr, wireLen, hdrLen int) int {
	if !v.IsGSO() {
		return 1
	}
	if v.GSOSize == 0 || hdrLen <= 0 || hdrLen >= wireLen {
		return 0
	}
	size := int(v.GSOSize)
	return (wireLen - hdrLen + size - 1) / size
}
