package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"time"
)

// pcapWriter writes the classic libpcap file format
// (https://www.tcpdump.org/manpages/pcap-savefile.5.html): a 24-byte file
// header, then a 16-byte record header before each frame. Microsecond
// timestamps, little-endian, link type Ethernet: what tcpdump -r and tshark
// read everywhere.
type pcapWriter struct {
	w   io.Writer
	hdr [16]byte
}

const (
	pcapMagicMicros  = 0xa1b2c3d4
	pcapLinkEthernet = 1 // LINKTYPE_ETHERNET
)

func newPcapWriter(w io.Writer, snaplen uint32) (*pcapWriter, error) {
	var h [24]byte
	binary.LittleEndian.PutUint32(h[0:], pcapMagicMicros)
	binary.LittleEndian.PutUint16(h[4:], 2) // version 2.4
	binary.LittleEndian.PutUint16(h[6:], 4)
	binary.LittleEndian.PutUint32(h[16:], snaplen)
	binary.LittleEndian.PutUint32(h[20:], pcapLinkEthernet)
	if _, err := w.Write(h[:]); err != nil {
		return nil, fmt.Errorf("pcap: write file header: %w", err)
	}
	return &pcapWriter{w: w}, nil
}

// writeFrame writes one frame captured at t whose wire length was origLen.
func (p *pcapWriter) writeFrame(t time.Time, origLen int, data []byte) error {
	us := t.UnixMicro()
	binary.LittleEndian.PutUint32(p.hdr[0:], uint32(us/1e6))
	binary.LittleEndian.PutUint32(p.hdr[4:], uint32(us%1e6))
	binary.LittleEndian.PutUint32(p.hdr[8:], uint32(len(data)))
	binary.LittleEndian.PutUint32(p.hdr[12:], uint32(max(origLen, len(data))))
	if _, err := p.w.Write(p.hdr[:]); err != nil {
		return fmt.Errorf("pcap: write record header: %w", err)
	}
	if _, err := p.w.Write(data); err != nil {
		return fmt.Errorf("pcap: write frame: %w", err)
	}
	return nil
}
