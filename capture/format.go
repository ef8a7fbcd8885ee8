package capture

// The two file formats, as encoders that lay records into a buffer the sink
// reserved for them: the size of a record is known before it is written, so
// that a record is always whole in the buffer and a failed write can be cut
// back to a record boundary.
//
// pcap: https://www.tcpdump.org/manpages/pcap-savefile.5.html
// pcapng: https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-03.html
// (sections 4.1 SHB, 4.2 IDB, 4.3 EPB, 4.6 ISB, 3.5 options).
//
// Both are written little-endian, which every reader accepts (the magic or
// byte-order magic says so).

import (
	"encoding/binary"
	"runtime"
)

var le = binary.LittleEndian

// record is one frame to write.
type record struct {
	sec, nsec uint32 // kernel timestamp
	wireLen   int    // length on the wire, without a restored VLAN tag
	data      []byte // the captured bytes, as read (without the tag)
	vlanTag   uint32 // TPID<<16 | TCI to restore after the MAC addresses, when hasVLAN
	hasVLAN   bool
	pktType   uint8  // sll_pkttype
	queue     uint32 // channel or rx queue
	gsoSegs   uint32 // wire segments it stands for, 0 unknown
	drops     uint64 // kernel drops reported on its channel since the previous frame
}

// capLen is how many bytes of r go into the file: the data plus a restored
// tag, cut to snaplen.
func (r *record) capLen(snaplen int) int {
	n := len(r.data)
	if r.hasVLAN && n >= 12 {
		n += 4
	}
	return min(n, snaplen)
}

// origLen is r's length on the wire as the file states it: with its tag.
func (r *record) origLen() int {
	n := max(r.wireLen, len(r.data))
	if r.hasVLAN && len(r.data) >= 12 {
		n += 4
	}
	return n
}

// putFrameBytes writes the first n bytes of r's frame as it was on the wire
// (the VLAN tag restored after the 12 bytes of MAC addresses, where the
// kernel took it from) into b.
func (r *record) putFrameBytes(b []byte, n int) {
	if !r.hasVLAN || len(r.data) < 12 {
		copy(b[:n], r.data)
		return
	}
	var tag [4]byte
	binary.BigEndian.PutUint32(tag[:], r.vlanTag)
	k := copy(b[:min(n, 12)], r.data[:12])
	k += copy(b[k:n], tag[:])
	copy(b[k:n], r.data[12:])
}

// trailerStats are what a pcapng interface statistics block reports.
type trailerStats struct {
	start, end int64 // Unix ns
	accepted   uint64
	kernelDrop uint64
	delivered  uint64
}

// fileInfo is what a file header describes.
type fileInfo struct {
	iface       string
	description string
	filter      string
	snaplen     int
	nano        bool
	userAppl    string
	// sluiceInfo goes into a custom string option of the interface
	// description ("mode=mmap channels=2 ..."), for tools that read
	// sluice's per-frame option.
	sluiceInfo string
}

// encoder writes one of the two file formats. It is a concrete type, not an
// interface, so that the record passed to it stays on the caller's stack: a
// call through an interface would move every record to the heap.
type encoder struct {
	ng      bool // pcapng, else pcap
	snaplen int
	nano    bool
	mode    uint8 // dispatch mode code, for pcapng's custom option
}

// header appends the file header.
func (e *encoder) header(dst []byte, fi fileInfo) []byte {
	if e.ng {
		return e.ngHeader(dst, fi)
	}
	return e.pcapHeader(dst)
}

// recordSize returns the bytes putRecord will write for r.
func (e *encoder) recordSize(r *record) int {
	if e.ng {
		return e.ngRecordSize(r)
	}
	return pcapRecHdrLen + r.capLen(e.snaplen)
}

// putRecord writes r into b, which is recordSize(r) long.
func (e *encoder) putRecord(b []byte, r *record) {
	if e.ng {
		e.ngPutRecord(b, r)
		return
	}
	e.pcapPutRecord(b, r)
}

// trailer appends what ends a file (pcapng's statistics), or nothing.
func (e *encoder) trailer(dst []byte, st trailerStats) []byte {
	if e.ng {
		return e.ngTrailer(dst, st)
	}
	return dst
}

// unitLen returns the length of the record (or block) at the start of b, or
// 0 if b does not hold a whole one. It never sees the pcap file header.
func (e *encoder) unitLen(b []byte) int {
	if e.ng {
		return e.ngUnitLen(b)
	}
	return e.pcapUnitLen(b)
}

// dataLen returns the captured bytes of the whole record (or block) b: 0
// for a block that is not a frame.
func (e *encoder) dataLen(b []byte) int {
	if e.ng {
		if le.Uint32(b[0:]) != ngBlockEPB {
			return 0
		}
		return int(le.Uint32(b[20:]))
	}
	return int(le.Uint32(b[8:]))
}

// Link type of every file: LINKTYPE_ETHERNET.
const linkTypeEthernet = 1

// pcap ---------------------------------------------------------------------

const (
	pcapMagicMicro = 0xa1b2c3d4
	pcapMagicNano  = 0xa1b23c4d
	pcapHeaderLen  = 24
	pcapRecHdrLen  = 16
)

func (e *encoder) pcapHeader(dst []byte) []byte {
	magic := uint32(pcapMagicMicro)
	if e.nano {
		magic = pcapMagicNano
	}
	dst = le.AppendUint32(dst, magic)
	dst = le.AppendUint16(dst, 2) // version 2.4
	dst = le.AppendUint16(dst, 4)
	dst = le.AppendUint32(dst, 0) // thiszone
	dst = le.AppendUint32(dst, 0) // sigfigs
	dst = le.AppendUint32(dst, uint32(e.snaplen))
	return le.AppendUint32(dst, linkTypeEthernet)
}

func (e *encoder) pcapPutRecord(b []byte, r *record) {
	n := len(b) - pcapRecHdrLen
	frac := r.nsec
	if !e.nano {
		frac /= 1000
	}
	le.PutUint32(b[0:], r.sec)
	le.PutUint32(b[4:], frac)
	le.PutUint32(b[8:], uint32(n))
	le.PutUint32(b[12:], uint32(r.origLen()))
	r.putFrameBytes(b[pcapRecHdrLen:], n)
}

func (e *encoder) pcapUnitLen(b []byte) int {
	if len(b) < pcapRecHdrLen {
		return 0
	}
	n := pcapRecHdrLen + int(le.Uint32(b[8:]))
	if n > len(b) {
		return 0
	}
	return n
}

// pcapng -------------------------------------------------------------------

// Block types and option codes used here.
const (
	ngBlockSHB = 0x0a0d0d0a
	ngBlockIDB = 0x00000001
	ngBlockISB = 0x00000005
	ngBlockEPB = 0x00000006
	ngBOM      = 0x1a2b3c4d

	ngOptEnd         = 0
	ngOptComment     = 1
	ngShbHardware    = 2
	ngShbOS          = 3
	ngShbUserAppl    = 4
	ngIfName         = 2
	ngIfDescription  = 3
	ngIfTsresol      = 9
	ngIfFilter       = 11
	ngIfOS           = 12
	ngEpbFlags       = 2
	ngEpbDropCount   = 4
	ngEpbQueue       = 6
	ngIsbStartTime   = 2
	ngIsbEndTime     = 3
	ngIsbFilterAccep = 6
	ngIsbOSDrop      = 7
	ngIsbUsrDeliv    = 8
	// ngOptCustomBin is a custom option with binary data that may be
	// copied to a new file; ngOptCustomStr the UTF-8 string kind.
	ngOptCustomStr = 2988
	ngOptCustomBin = 2989
	// sluicePEN is the Private Enterprise Number in sluice's custom
	// options: 32473, which IANA reserves for documentation (RFC 5612),
	// until sluice registers one.
	sluicePEN = 32473
	// sluiceOptVersion is the layout version of the per-frame custom
	// option (see the package doc).
	sluiceOptVersion = 1

	ngEPBFixed = 28 // block type, length, interface, ts high, ts low, caplen, origlen
	// Per-frame options: epb_flags (4+4), epb_queue (4+4), the custom
	// option (4 + PEN 4 + 8) and the end marker (4).
	ngEPBOptions   = 8 + 8 + 16 + 4
	ngEPBDropCount = 4 + 8
)

// epb_flags bits: direction in bits 0-1, reception type in bits 2-4.
const (
	epbInbound     = 1
	epbOutbound    = 2
	epbUnicast     = 1 << 2
	epbMulticast   = 2 << 2
	epbBroadcast   = 3 << 2
	epbPromiscuous = 4 << 2
)

// epbFlags maps sll_pkttype to epb_flags.
func epbFlags(pktType uint8) uint32 {
	switch pktType {
	case 0: // PACKET_HOST
		return epbInbound | epbUnicast
	case 1: // PACKET_BROADCAST
		return epbInbound | epbBroadcast
	case 2: // PACKET_MULTICAST
		return epbInbound | epbMulticast
	case 3: // PACKET_OTHERHOST
		return epbInbound | epbPromiscuous
	case 4: // PACKET_OUTGOING
		return epbOutbound
	}
	return 0
}

func pad4(n int) int { return (n + 3) &^ 3 }

// appendOpt appends one option, padded.
func appendOpt(dst []byte, code uint16, val []byte) []byte {
	dst = le.AppendUint16(dst, code)
	dst = le.AppendUint16(dst, uint16(len(val)))
	dst = append(dst, val...)
	for range pad4(len(val)) - len(val) {
		dst = append(dst, 0)
	}
	return dst
}

// appendBlock appends a block of type typ whose body (between the length
// fields) is body.
func appendBlock(dst []byte, typ uint32, body []byte) []byte {
	total := uint32(12 + len(body))
	dst = le.AppendUint32(dst, typ)
	dst = le.AppendUint32(dst, total)
	dst = append(dst, body...)
	return le.AppendUint32(dst, total)
}

func u64(v uint64) []byte { return le.AppendUint64(nil, v) }

func (e *encoder) ngHeader(dst []byte, fi fileInfo) []byte {
	var shb []byte
	shb = le.AppendUint32(shb, ngBOM)
	shb = le.AppendUint16(shb, 1) // version 1.0
	shb = le.AppendUint16(shb, 0)
	shb = le.AppendUint64(shb, ^uint64(0)) // section length unknown
	shb = appendOpt(shb, ngShbOS, []byte(runtime.GOOS+"/"+runtime.GOARCH))
	shb = appendOpt(shb, ngShbUserAppl, []byte(fi.userAppl))
	shb = appendOpt(shb, ngOptEnd, nil)
	dst = appendBlock(dst, ngBlockSHB, shb)

	var idb []byte
	idb = le.AppendUint16(idb, linkTypeEthernet)
	idb = le.AppendUint16(idb, 0)
	idb = le.AppendUint32(idb, uint32(e.snaplen))
	idb = appendOpt(idb, ngIfName, []byte(fi.iface))
	if fi.description != "" {
		idb = appendOpt(idb, ngIfDescription, []byte(fi.description))
	}
	tsresol := byte(6)
	if e.nano {
		tsresol = 9
	}
	idb = appendOpt(idb, ngIfTsresol, []byte{tsresol})
	if fi.filter != "" {
		// First byte 0: a libpcap filter string.
		idb = appendOpt(idb, ngIfFilter, append([]byte{0}, fi.filter...))
	}
	idb = appendOpt(idb, ngIfOS, []byte(runtime.GOOS))
	if fi.sluiceInfo != "" {
		custom := binary.BigEndian.AppendUint32(nil, sluicePEN)
		custom = append(custom, fi.sluiceInfo...)
		idb = appendOpt(idb, ngOptCustomStr, custom)
	}
	idb = appendOpt(idb, ngOptEnd, nil)
	return appendBlock(dst, ngBlockIDB, idb)
}

func (e *encoder) ngRecordSize(r *record) int {
	n := ngEPBFixed + pad4(r.capLen(e.snaplen)) + ngEPBOptions + 4
	if r.drops > 0 {
		n += ngEPBDropCount
	}
	return n
}

// ts returns r's timestamp in the interface's units.
func (e *encoder) ts(sec, nsec uint32) uint64 {
	if e.nano {
		return uint64(sec)*1e9 + uint64(nsec)
	}
	return uint64(sec)*1e6 + uint64(nsec/1000)
}

func (e *encoder) ngPutRecord(b []byte, r *record) {
	total := len(b)
	n := r.capLen(e.snaplen)
	ts := e.ts(r.sec, r.nsec)
	le.PutUint32(b[0:], ngBlockEPB)
	le.PutUint32(b[4:], uint32(total))
	le.PutUint32(b[8:], 0) // interface 0
	le.PutUint32(b[12:], uint32(ts>>32))
	le.PutUint32(b[16:], uint32(ts))
	le.PutUint32(b[20:], uint32(n))
	le.PutUint32(b[24:], uint32(r.origLen()))
	r.putFrameBytes(b[ngEPBFixed:], n)
	o := ngEPBFixed + n
	for ; o < ngEPBFixed+pad4(n); o++ {
		b[o] = 0
	}
	// epb_flags
	le.PutUint32(b[o:], ngEpbFlags|4<<16)
	le.PutUint32(b[o+4:], epbFlags(r.pktType))
	o += 8
	// epb_queue
	le.PutUint32(b[o:], ngEpbQueue|4<<16)
	le.PutUint32(b[o+4:], r.queue)
	o += 8
	if r.drops > 0 {
		le.PutUint32(b[o:], ngEpbDropCount|8<<16)
		le.PutUint64(b[o+4:], r.drops)
		o += 12
	}
	// sluice's custom option: PEN, version, mode, channel, segments.
	le.PutUint32(b[o:], ngOptCustomBin|12<<16)
	binary.BigEndian.PutUint32(b[o+4:], sluicePEN)
	b[o+8] = sluiceOptVersion
	b[o+9] = e.mode
	binary.BigEndian.PutUint16(b[o+10:], uint16(r.queue))
	binary.BigEndian.PutUint32(b[o+12:], r.gsoSegs)
	o += 16
	le.PutUint32(b[o:], 0) // opt_endofopt
	o += 4
	le.PutUint32(b[o:], uint32(total))
}

func (e *encoder) ngTrailer(dst []byte, st trailerStats) []byte {
	end := e.tsNanos(st.end)
	var isb []byte
	isb = le.AppendUint32(isb, 0) // interface 0
	isb = le.AppendUint32(isb, uint32(end>>32))
	isb = le.AppendUint32(isb, uint32(end))
	start := e.tsNanos(st.start)
	isb = appendOpt(isb, ngIsbStartTime, le.AppendUint32(le.AppendUint32(nil, uint32(start>>32)), uint32(start)))
	isb = appendOpt(isb, ngIsbEndTime, le.AppendUint32(le.AppendUint32(nil, uint32(end>>32)), uint32(end)))
	isb = appendOpt(isb, ngIsbFilterAccep, u64(st.accepted))
	isb = appendOpt(isb, ngIsbOSDrop, u64(st.kernelDrop))
	isb = appendOpt(isb, ngIsbUsrDeliv, u64(st.delivered))
	isb = appendOpt(isb, ngOptEnd, nil)
	return appendBlock(dst, ngBlockISB, isb)
}

// tsNanos converts Unix nanoseconds to the interface's units.
func (e *encoder) tsNanos(ns int64) uint64 {
	if e.nano {
		return uint64(ns)
	}
	return uint64(ns / 1000)
}

func (e *encoder) ngUnitLen(b []byte) int {
	if len(b) < 12 {
		return 0
	}
	n := int(le.Uint32(b[4:]))
	if n < 12 || n > len(b) {
		return 0
	}
	return n
}

// newEncoder returns the encoder of f.
func newEncoder(f Format, snaplen int, nano bool, via Via) *encoder {
	return &encoder{ng: f == FormatPcapNG, snaplen: snaplen, nano: nano, mode: via.modeCode()}
}
