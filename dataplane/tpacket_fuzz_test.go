package dataplane

import (
	"bytes"
	"errors"
	"testing"
)

// The fuzz targets feed arbitrary bytes to the TPACKET parsers as if the
// kernel (or a corrupted ring) had written them. They must never panic, and
// whatever they accept must be usable without further checks.

func FuzzTPacketHdr(f *testing.F) {
	gso := VnetHdr{Flags: VnetFlagNeedsCsum, GSOType: VnetGSOTCPv4, HdrLen: 66, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}
	for _, v := range []int{tpacketV1, tpacketV2} {
		f.Add(uint8(v), buildTPacketSlot(v, 256, 0, ringFrame{data: testFrame(60, 1)}), uint8(0), uint16(14), uint16(1514))
		f.Add(uint8(v), buildTPacketSlot(v, 2048, VnetHdrLen, ringFrame{data: testFrame(1514, 2), vnet: &gso}), uint8(VnetHdrLen), uint16(14), uint16(1514))
		f.Add(uint8(v), buildTPacketSlot(v, 512, 0, ringFrame{data: testFrame(400, 3), length: 30000}), uint8(0), uint16(14), uint16(65535))
	}
	blk := buildTPacketBlock(2048, VnetHdrLen, ringFrame{data: testFrame(100, 4), vnet: &gso})
	f.Add(uint8(tpacketV3), blk[tpacketBlockDescLen:], uint8(VnetHdrLen), uint16(0), uint16(1514))
	f.Add(uint8(tpacketV3), make([]byte, 48), uint8(0), uint16(0), uint16(0))

	f.Fuzz(func(t *testing.T, version uint8, b []byte, vnetLen uint8, minLen, maxLen uint16) {
		v := int(version % 4) // mostly real versions, sometimes an unknown one
		fr, err := parseTPacketHdr(v, b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		hdrLen := tpacketHdrLen(v)
		if fr.mac < hdrLen || fr.snaplen < 0 || fr.mac+fr.snaplen > len(b) || fr.snaplen > fr.length ||
			fr.net < fr.mac || fr.net > len(b) {
			t.Fatalf("accepted an inconsistent header %+v for %d bytes", fr, len(b))
		}
		lim := frameLimits{vnetLen: int(vnetLen % 16), minLen: int(minLen), maxLen: int(maxLen)}
		data, vh, err := tpacketFrameData(b, fr, hdrLen, lim)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if fr.truncated() || len(data) != fr.snaplen || len(data) < lim.minLen || len(data) > lim.maxLen {
			t.Fatalf("accepted %d bytes for %+v under %+v", len(data), fr, lim)
		}
		if !bytes.Equal(data, b[fr.mac:fr.mac+fr.snaplen]) {
			t.Fatal("data is not the frame at tp_mac")
		}
		if lim.vnetLen > 0 {
			if fr.mac-lim.vnetLen < hdrLen {
				t.Fatalf("virtio_net_hdr at %d overlaps the %d-byte header", fr.mac-lim.vnetLen, hdrLen)
			}
			if err := vh.Validate(len(data)); err != nil {
				t.Fatalf("returned a virtio_net_hdr that does not validate: %v", err)
			}
		} else if vh != (VnetHdr{}) {
			t.Fatalf("virtio_net_hdr %+v without vnetLen", vh)
		}
	})
}

func FuzzTPacketBlock(f *testing.F) {
	gso := VnetHdr{Flags: VnetFlagNeedsCsum, GSOType: VnetGSOTCPv6, HdrLen: 86, GSOSize: 1428, CsumStart: 54, CsumOffset: 16}
	f.Add(buildTPacketBlock(4096, 0, ringFrame{data: testFrame(60, 1)}, ringFrame{data: testFrame(61, 2)}), uint8(0))
	f.Add(buildTPacketBlock(8192, VnetHdrLen, ringFrame{data: testFrame(3000, 1), vnet: &gso}, ringFrame{data: testFrame(14, 2), vnet: &VnetHdr{}}), uint8(VnetHdrLen))
	f.Add(buildTPacketBlock(4096, 0, ringFrame{data: testFrame(500, 3), length: 9000}), uint8(0))
	f.Add(buildTPacketBlock(4096, 0), uint8(0))
	f.Add(make([]byte, 47), uint8(0))

	f.Fuzz(func(t *testing.T, blk []byte, vnetLen uint8) {
		d, err := parseTPacketBlock(blk)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if d.first < tpacketBlockDescLen || d.first > d.length || d.length > len(blk) ||
			d.numPkts < 0 || d.numPkts*tpacket3HdrLen > d.length-d.first {
			t.Fatalf("accepted an inconsistent descriptor %+v for %d bytes", d, len(blk))
		}
		lim := frameLimits{vnetLen: int(vnetLen % 16), minLen: 14, maxLen: 65535}
		it := newTPacketBlockIter(blk, d)
		got, prevEnd := 0, d.first
		// num_pkts bounds the walk; one more call must report the end.
		for range d.numPkts + 1 {
			pkt, fr, ok, err := it.next()
			if err != nil {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("error %v does not wrap ErrMalformed", err)
				}
				if got+it.remaining() != d.numPkts {
					t.Fatalf("%d packets returned + %d lost != num_pkts %d", got, it.remaining(), d.numPkts)
				}
				return
			}
			if !ok {
				if got != d.numPkts {
					t.Fatalf("walk ended after %d packets, num_pkts %d", got, d.numPkts)
				}
				return
			}
			got++
			// Packets follow each other without overlap, inside blk_len.
			start := cap(blk[:d.length]) - cap(pkt)
			if start != prevEnd || start+len(pkt) > d.length || fr.mac+fr.snaplen > len(pkt) {
				t.Fatalf("packet %d at %d+%d (previous ended at %d, blk_len %d), frame %d+%d",
					got, start, len(pkt), prevEnd, d.length, fr.mac, fr.snaplen)
			}
			prevEnd = start + len(pkt)
			if data, _, err := tpacketFrameData(pkt, fr, tpacket3HdrLen, lim); err == nil && len(data) != fr.snaplen {
				t.Fatalf("frame data %d bytes, snaplen %d", len(data), fr.snaplen)
			}
		}
		t.Fatalf("walk did not end after num_pkts %d packets", d.numPkts)
	})
}

func FuzzTPacketGeometry(f *testing.F) {
	f.Add(uint8(tpacketV3), uint32(128<<10), uint16(32), uint32(65664), uint8(VnetHdrLen), uint8(1))
	f.Add(uint8(tpacketV2), uint32(128<<10), uint16(32), uint32(65664), uint8(VnetHdrLen), uint8(0))
	f.Add(uint8(tpacketV2), uint32(4096), uint16(1), uint32(1514), uint8(0), uint8(0))
	f.Fuzz(func(t *testing.T, version uint8, blockSize uint32, blockNr uint16, maxFrame uint32, vnetLen, tov uint8) {
		v := int(version % 4)
		g, err := newTPacketGeometry(v, int(blockSize), int(blockNr), int(maxFrame%(1<<20)), int(vnetLen%16), 4096, int(tov))
		if err != nil {
			return
		}
		frame := tpacketMacOff(v, int(vnetLen%16)) + int(maxFrame%(1<<20))
		switch {
		case g.blockSize%4096 != 0, g.blockNr < 1, g.frameSize%tpacketAlignment != 0, g.frameSize < 1,
			g.framesPerBlock() < 1, g.frameNr != g.framesPerBlock()*g.blockNr, g.ringSize() > 1<<31:
			t.Fatalf("geometry %+v breaks packet_set_ring's rules", g)
		case v == tpacketV3 && tpacketBlockDescLen+frame > g.blockSize:
			t.Fatalf("V3 geometry %+v cannot hold a frame ending at %d", g, frame)
		case v != tpacketV3 && frame > g.frameSize:
			t.Fatalf("V%d geometry %+v cannot hold a frame ending at %d", v+1, g, frame)
		}
	})
}
