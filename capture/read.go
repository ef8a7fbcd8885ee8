package capture

// A reader for what this package writes, and for the pcap files tcpdump and
// netsniff-ng write: tests check files with it, and the capture benchmark
// counts what each capturer recorded with it. It is strict about framing (a
// file cut in the middle of a record is an error) and loose about content.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// FileRecord is a frame read back from a capture file. Data is only valid
// during the ReadFile callback.
type FileRecord struct {
	Data    []byte
	OrigLen int
	// Time is the timestamp in Unix nanoseconds.
	Time int64
	// pcapng only: epb_flags, epb_queue, epb_dropcount, and sluice's
	// custom option (HasSluice).
	Flags       uint32
	Queue       uint32
	HasQueue    bool
	DropCount   uint64
	HasSluice   bool
	Mode        uint8
	Channel     uint16
	GSOSegments uint32
}

// FileInfo is what a file says about itself.
type FileInfo struct {
	PcapNG  bool
	Nano    bool
	Snaplen int
	// pcapng: the interface, and its last statistics block.
	IfName, IfDescription, Filter string
	HasStats                      bool
	Accepted, OSDrop, Delivered   uint64
}

// ErrTruncated is returned by ReadFile for a file that ends inside a record.
var ErrTruncated = errors.New("capture file ends inside a record")

// ReadFile reads a pcap or pcapng file and calls fn for every frame, in file
// order.
func ReadFile(r io.Reader, fn func(*FileRecord) error) (FileInfo, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	magic, err := br.Peek(4)
	if err != nil {
		return FileInfo{}, fmt.Errorf("read capture file header: %w", err)
	}
	if binary.LittleEndian.Uint32(magic) == ngBlockSHB {
		return readPcapNG(br, fn)
	}
	return readPcap(br, fn)
}

func readPcap(r *bufio.Reader, fn func(*FileRecord) error) (FileInfo, error) {
	var fi FileInfo
	var hdr [pcapHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return fi, fmt.Errorf("read pcap header: %w", err)
	}
	var bo binary.ByteOrder = binary.LittleEndian
	switch m := bo.Uint32(hdr[:]); {
	case m == pcapMagicMicro:
	case m == pcapMagicNano:
		fi.Nano = true
	case binary.BigEndian.Uint32(hdr[:]) == pcapMagicMicro:
		bo = binary.BigEndian
	case binary.BigEndian.Uint32(hdr[:]) == pcapMagicNano:
		bo, fi.Nano = binary.BigEndian, true
	default:
		return fi, fmt.Errorf("not a pcap file: magic %#x", m)
	}
	fi.Snaplen = int(bo.Uint32(hdr[16:]))
	var rh [pcapRecHdrLen]byte
	var rec FileRecord
	buf := make([]byte, 0, 65536)
	for {
		if _, err := io.ReadFull(r, rh[:]); err != nil {
			if err == io.EOF {
				return fi, nil
			}
			return fi, ErrTruncated
		}
		n := int(bo.Uint32(rh[8:]))
		if n > 1<<24 {
			return fi, fmt.Errorf("pcap record of %d bytes", n)
		}
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			return fi, ErrTruncated
		}
		frac := int64(bo.Uint32(rh[4:]))
		if !fi.Nano {
			frac *= 1000
		}
		rec = FileRecord{Data: buf, OrigLen: int(bo.Uint32(rh[12:])), Time: int64(bo.Uint32(rh[0:]))*1e9 + frac}
		if err := fn(&rec); err != nil {
			return fi, err
		}
	}
}

func readPcapNG(r *bufio.Reader, fn func(*FileRecord) error) (FileInfo, error) {
	fi := FileInfo{PcapNG: true}
	bo := binary.ByteOrder(binary.LittleEndian)
	tsres := int64(1000) // ns per unit: microseconds by default
	var rec FileRecord
	buf := make([]byte, 0, 65536)
	for {
		var h [8]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			if err == io.EOF {
				return fi, nil
			}
			return fi, ErrTruncated
		}
		typ := bo.Uint32(h[0:])
		if typ == ngBlockSHB {
			// The byte-order magic decides the section's order.
			bom, err := r.Peek(4)
			if err != nil {
				return fi, ErrTruncated
			}
			if binary.BigEndian.Uint32(bom) == ngBOM {
				bo = binary.BigEndian
			} else {
				bo = binary.LittleEndian
			}
		}
		total := int(bo.Uint32(h[4:]))
		if total < 12 || total%4 != 0 || total > 1<<24 {
			return fi, fmt.Errorf("pcapng block of %d bytes", total)
		}
		if cap(buf) < total-8 {
			buf = make([]byte, total-8)
		}
		body := buf[:total-8]
		if _, err := io.ReadFull(r, body); err != nil {
			return fi, ErrTruncated
		}
		body = body[:len(body)-4] // the trailing length
		switch typ {
		case ngBlockIDB:
			if len(body) < 8 {
				return fi, errors.New("pcapng IDB too short")
			}
			fi.Snaplen = int(bo.Uint32(body[4:]))
			walkOpts(body[8:], bo, func(code uint16, v []byte) {
				switch code {
				case ngIfName:
					fi.IfName = string(v)
				case ngIfDescription:
					fi.IfDescription = string(v)
				case ngIfFilter:
					if len(v) > 0 {
						fi.Filter = string(v[1:])
					}
				case ngIfTsresol:
					if len(v) == 1 && v[0] == 9 {
						fi.Nano, tsres = true, 1
					}
				}
			})
		case ngBlockEPB:
			if len(body) < 20 {
				return fi, errors.New("pcapng EPB too short")
			}
			capLen := int(bo.Uint32(body[12:]))
			if 20+pad4(capLen) > len(body) {
				return fi, errors.New("pcapng EPB: captured length beyond the block")
			}
			ts := int64(bo.Uint32(body[4:]))<<32 | int64(bo.Uint32(body[8:]))
			rec = FileRecord{Data: body[20 : 20+capLen], OrigLen: int(bo.Uint32(body[16:])), Time: ts * tsres}
			walkOpts(body[20+pad4(capLen):], bo, func(code uint16, v []byte) {
				switch {
				case code == ngEpbFlags && len(v) == 4:
					rec.Flags = bo.Uint32(v)
				case code == ngEpbQueue && len(v) == 4:
					rec.Queue, rec.HasQueue = bo.Uint32(v), true
				case code == ngEpbDropCount && len(v) == 8:
					rec.DropCount = bo.Uint64(v)
				case code == ngOptCustomBin && len(v) == 12 && binary.BigEndian.Uint32(v) == sluicePEN && v[4] == sluiceOptVersion:
					rec.HasSluice = true
					rec.Mode = v[5]
					rec.Channel = binary.BigEndian.Uint16(v[6:])
					rec.GSOSegments = binary.BigEndian.Uint32(v[8:])
				}
			})
			if err := fn(&rec); err != nil {
				return fi, err
			}
		case ngBlockISB:
			if len(body) < 12 {
				return fi, errors.New("pcapng ISB too short")
			}
			fi.HasStats = true
			walkOpts(body[12:], bo, func(code uint16, v []byte) {
				if len(v) != 8 {
					return
				}
				switch code {
				case ngIsbFilterAccep:
					fi.Accepted = bo.Uint64(v)
				case ngIsbOSDrop:
					fi.OSDrop = bo.Uint64(v)
				case ngIsbUsrDeliv:
					fi.Delivered = bo.Uint64(v)
				}
			})
		}
	}
}

// walkOpts calls fn for each option in b up to opt_endofopt.
func walkOpts(b []byte, bo binary.ByteOrder, fn func(code uint16, v []byte)) {
	for len(b) >= 4 {
		code, n := bo.Uint16(b), int(bo.Uint16(b[2:]))
		if code == ngOptEnd || 4+n > len(b) {
			return
		}
		fn(code, b[4:4+n])
		b = b[min(len(b), 4+pad4(n)):]
	}
}
