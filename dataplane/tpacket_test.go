package dataplane

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// Frame builders for ring tests: they lay headers and frames out the way
// tpacket_rcv does (af_packet.c), so parsing what they build must give the
// frames back.

// testFrame returns an n-byte Ethernet frame (n >= 14) from 02:00:00:00:00:02
// to 02:00:00:00:00:01 with EtherType 0x88b5 (IEEE local experimental) and a
// payload whose bytes encode seq and their position.
func testFrame(n int, seq uint32) []byte {
	f := make([]byte, n)
	copy(f, []byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x88, 0xb5})
	for i := 14; i < n; i++ {
		f[i] = byte(i) ^ byte(seq)
	}
	if n >= 18 {
		binary.BigEndian.PutUint32(f[14:], seq)
	}
	return f
}

// tcp4TestFrame is testFrame made to look like an IPv4 TCP packet as far as
// VnetHdr.ValidateFrame looks (ethertype, version, protocol), so that a TCPv4
// GSO header on it is plausible.
func tcp4TestFrame(n int) []byte {
	f := testFrame(n, 1)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	f[14] = 0x45
	f[14+9] = 6
	return f
}

// putTPacketHdr writes a frame header of version at b[0:] for a frame at
// mac with snaplen bytes present of length on the wire.
func putTPacketHdr(version int, b []byte, status uint32, length, snaplen, mac, next int) {
	switch version {
	case tpacketV1:
		binary.LittleEndian.PutUint64(b[0:], uint64(status))
		binary.LittleEndian.PutUint32(b[8:], uint32(length))
		binary.LittleEndian.PutUint32(b[12:], uint32(snaplen))
		binary.LittleEndian.PutUint16(b[16:], uint16(mac))
		binary.LittleEndian.PutUint16(b[18:], uint16(mac+14))
		binary.LittleEndian.PutUint32(b[20:], 1700000000)
		binary.LittleEndian.PutUint32(b[24:], 123456)
	case tpacketV2:
		binary.LittleEndian.PutUint32(b[0:], status)
		binary.LittleEndian.PutUint32(b[4:], uint32(length))
		binary.LittleEndian.PutUint32(b[8:], uint32(snaplen))
		binary.LittleEndian.PutUint16(b[12:], uint16(mac))
		binary.LittleEndian.PutUint16(b[14:], uint16(mac+14))
		binary.LittleEndian.PutUint32(b[16:], 1700000000)
		binary.LittleEndian.PutUint32(b[20:], 123456789)
	case tpacketV3:
		binary.LittleEndian.PutUint32(b[0:], uint32(next))
		binary.LittleEndian.PutUint32(b[4:], 1700000000)
		binary.LittleEndian.PutUint32(b[8:], 123456789)
		binary.LittleEndian.PutUint32(b[12:], uint32(snaplen))
		binary.LittleEndian.PutUint32(b[16:], uint32(length))
		binary.LittleEndian.PutUint32(b[20:], status)
		binary.LittleEndian.PutUint16(b[24:], uint16(mac))
		binary.LittleEndian.PutUint16(b[26:], uint16(mac+14))
	}
}

// ringFrame is one frame to lay into a test ring: its bytes, the length the
// header claims on the wire (0: len(data)), and an optional virtio_net_hdr.
type ringFrame struct {
	data   []byte
	length int
	vnet   *VnetHdr
}

// buildTPacketSlot returns a V1/V2 slot of size bytes holding f, owned by
// user space, with vnetLen bytes of virtio_net_hdr room before the frame.
func buildTPacketSlot(version, size, vnetLen int, f ringFrame) []byte {
	slot := make([]byte, size)
	mac := tpacketMacOff(version, vnetLen)
	n := copy(slot[mac:], f.data)
	length := f.length
	if length == 0 {
		length = len(f.data)
	}
	putTPacketHdr(version, slot, tpStatusUser, length, n, mac, 0)
	if f.vnet != nil {
		f.vnet.Encode(slot[mac-vnetLen:])
	}
	return slot
}

// buildTPacketBlock returns a V3 block of size bytes holding frames, owned by
// user space, as prb_fill_curr_block and prb_close_block leave it: packets
// from offset 48, each tp_next_offset the 8-aligned mac+snaplen, the last
// one 0, blk_len the end of the last packet. It panics if they do not fit.
func buildTPacketBlock(size, vnetLen int, frames ...ringFrame) []byte {
	blk := make([]byte, size)
	mac := tpacketMacOff(tpacketV3, vnetLen)
	off := tpacketBlockDescLen
	for i, f := range frames {
		stride := (mac + len(f.data) + 7) &^ 7
		next := stride
		if i == len(frames)-1 {
			next = 0
		}
		length := f.length
		if length == 0 {
			length = len(f.data)
		}
		copy(blk[off+mac:], f.data)
		putTPacketHdr(tpacketV3, blk[off:], tpStatusUser, length, len(f.data), mac, next)
		if f.vnet != nil {
			f.vnet.Encode(blk[off+mac-vnetLen:])
		}
		off += stride
	}
	binary.LittleEndian.PutUint32(blk[0:], tpacketV3)
	binary.LittleEndian.PutUint32(blk[4:], tpacketBlockDescLen)
	binary.LittleEndian.PutUint32(blk[8:], tpStatusUser)
	binary.LittleEndian.PutUint32(blk[12:], uint32(len(frames)))
	binary.LittleEndian.PutUint32(blk[16:], tpacketBlockDescLen)
	binary.LittleEndian.PutUint32(blk[20:], uint32(off))
	binary.LittleEndian.PutUint64(blk[24:], 7)
	return blk
}

func TestTPacketMacOff(t *testing.T) {
	// The offsets KERNEL-NOTES measured on Linux 6.18 veth.
	for _, c := range []struct {
		version, vnet, want int
	}{
		{tpacketV1, 0, 66}, {tpacketV2, 0, 66}, {tpacketV3, 0, 82},
		{tpacketV2, VnetHdrLen, 76}, {tpacketV3, VnetHdrLen, 92},
	} {
		if got := tpacketMacOff(c.version, c.vnet); got != c.want {
			t.Errorf("tpacketMacOff(V%d, vnet %d) = %d, want %d", c.version+1, c.vnet, got, c.want)
		}
	}
}

func TestParseTPacketHdrValid(t *testing.T) {
	frame := testFrame(100, 9)
	for _, v := range []int{tpacketV1, tpacketV2} {
		slot := buildTPacketSlot(v, 256, 0, ringFrame{data: frame})
		f, err := parseTPacketHdr(v, slot)
		if err != nil {
			t.Fatalf("V%d: %v", v+1, err)
		}
		want := tpacketFrame{status: tpStatusUser, length: 100, snaplen: 100, mac: 66, net: 80, sec: 1700000000}
		want.nsec = map[int]uint32{tpacketV1: 123456000, tpacketV2: 123456789}[v]
		if f != want {
			t.Errorf("V%d: got %+v, want %+v", v+1, f, want)
		}
		if got := slot[f.mac : f.mac+f.snaplen]; !bytes.Equal(got, frame) {
			t.Errorf("V%d: frame bytes differ", v+1)
		}
	}
	blk := buildTPacketBlock(4096, 0, ringFrame{data: frame})
	f, err := parseTPacketHdr(tpacketV3, blk[tpacketBlockDescLen:])
	if err != nil {
		t.Fatal(err)
	}
	want := tpacketFrame{status: tpStatusUser, length: 100, snaplen: 100, mac: 82, net: 96, sec: 1700000000, nsec: 123456789}
	if f != want {
		t.Errorf("V3: got %+v, want %+v", f, want)
	}
}

func TestParseTPacketHdrMalformed(t *testing.T) {
	for _, c := range []struct {
		name    string
		version int
		size    int // slot bytes
		length  int
		snaplen int
		mac     int
		net     int // -1: mac+14
	}{
		{"unknown version", 3, 256, 10, 10, 66, -1},
		{"slot shorter than the header", tpacketV2, 31, 0, 0, 0, 0},
		{"V3 slot shorter than the header", tpacketV3, 47, 0, 0, 0, 0},
		{"mac inside the header", tpacketV2, 256, 60, 60, 31, -1},
		{"V3 mac inside the header", tpacketV3, 256, 60, 60, 47, -1},
		{"frame beyond the slot", tpacketV2, 256, 200, 200, 66, -1},
		{"snaplen beyond the slot by one", tpacketV2, 256, 191, 191, 66, -1},
		{"snaplen > len", tpacketV2, 256, 50, 60, 66, -1},
		{"huge snaplen does not wrap", tpacketV3, 256, 0xffffffff, 0xffffffff, 66, -1},
		{"net before mac", tpacketV2, 256, 60, 60, 66, 65},
		{"net beyond the slot", tpacketV2, 256, 60, 60, 66, 257},
		{"mac beyond the slot", tpacketV1, 256, 0, 0, 300, 300},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := make([]byte, max(c.size, 64))
			putTPacketHdr(c.version, b, tpStatusUser, c.length, c.snaplen, c.mac, 0)
			if c.net >= 0 {
				off := map[int]int{tpacketV1: 18, tpacketV2: 14, tpacketV3: 26}[c.version]
				binary.LittleEndian.PutUint16(b[off:], uint16(c.net))
			}
			f, err := parseTPacketHdr(c.version, b[:c.size])
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %+v, %v; want an ErrMalformed error", f, err)
			}
		})
	}
	// The boundary itself is fine: a frame that ends exactly at the slot.
	b := make([]byte, 256)
	putTPacketHdr(tpacketV2, b, tpStatusUser, 190, 190, 66, 0)
	if _, err := parseTPacketHdr(tpacketV2, b); err != nil {
		t.Errorf("frame ending at the slot's end: %v", err)
	}
}

func TestParseTPacketBlock(t *testing.T) {
	good := buildTPacketBlock(4096, 0, ringFrame{data: testFrame(60, 1)}, ringFrame{data: testFrame(61, 2)})
	d, err := parseTPacketBlock(good)
	if err != nil {
		t.Fatal(err)
	}
	// 82+60 -> 144, 82+61 -> 144 (8-aligned), after the 48-byte descriptor.
	want := tpacketBlock{status: tpStatusUser, numPkts: 2, first: 48, length: 48 + 144 + 144, seq: 7}
	if d != want {
		t.Errorf("got %+v, want %+v", d, want)
	}
	for _, c := range []struct {
		name  string
		edit  func(b []byte)
		short int
	}{
		{"shorter than a descriptor", nil, 47},
		{"blk_len beyond the block", func(b []byte) { binary.LittleEndian.PutUint32(b[20:], 4097) }, 0},
		{"first packet inside the descriptor", func(b []byte) { binary.LittleEndian.PutUint32(b[16:], 40) }, 0},
		{"first packet after blk_len", func(b []byte) { binary.LittleEndian.PutUint32(b[16:], 400) }, 0},
		{"too many packets for blk_len", func(b []byte) { binary.LittleEndian.PutUint32(b[12:], 7) }, 0},
		{"num_pkts near 2^32", func(b []byte) { binary.LittleEndian.PutUint32(b[12:], 0xffffffff) }, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := bytes.Clone(good)
			if c.edit != nil {
				c.edit(b)
			}
			if c.short > 0 {
				b = b[:c.short]
			}
			if d, err := parseTPacketBlock(b); !errors.Is(err, ErrMalformed) {
				t.Errorf("got %+v, %v; want an ErrMalformed error", d, err)
			}
		})
	}
}

// walkBlock returns the frames of a block and the error that stopped the
// walk, with the packets it lost.
func walkBlock(t *testing.T, blk []byte) (frames [][]byte, lost int, err error) {
	t.Helper()
	d, err := parseTPacketBlock(blk)
	if err != nil {
		return nil, 0, err
	}
	it := newTPacketBlockIter(blk, d)
	for range d.numPkts + 1 {
		pkt, f, ok, err := it.next()
		if err != nil {
			return frames, it.remaining(), err
		}
		if !ok {
			return frames, 0, nil
		}
		frames = append(frames, pkt[f.mac:f.mac+f.snaplen])
	}
	t.Fatalf("iterator returned more than num_pkts %d packets", d.numPkts)
	return
}

func TestTPacketBlockIter(t *testing.T) {
	in := []ringFrame{{data: testFrame(60, 1)}, {data: testFrame(1514, 2)}, {data: testFrame(77, 3)}}
	blk := buildTPacketBlock(8192, 0, in...)
	got, _, err := walkBlock(t, blk)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(in) {
		t.Fatalf("got %d frames, want %d", len(got), len(in))
	}
	for i := range in {
		if !bytes.Equal(got[i], in[i].data) {
			t.Errorf("frame %d differs", i)
		}
	}

	second := tpacketBlockDescLen + (82+60+7)&^7 // offset of the second header
	for _, c := range []struct {
		name string
		edit func(b []byte)
		good int // frames still returned before the error
		lost int
	}{
		{"next_offset 0 before the last packet", func(b []byte) { binary.LittleEndian.PutUint32(b[48:], 0) }, 0, 3},
		{"next_offset smaller than a header", func(b []byte) { binary.LittleEndian.PutUint32(b[48:], 40) }, 0, 3},
		{"next_offset beyond blk_len", func(b []byte) { binary.LittleEndian.PutUint32(b[second:], 8000) }, 1, 2},
		{"next_offset cutting the frame", func(b []byte) { binary.LittleEndian.PutUint32(b[second:], 100) }, 1, 2},
		{"last packet beyond blk_len", func(b []byte) {
			binary.LittleEndian.PutUint32(b[20:], binary.LittleEndian.Uint32(b[20:])-16)
		}, 2, 1},
		{"num_pkts longer than the chain", func(b []byte) {
			binary.LittleEndian.PutUint32(b[12:], 4) // the third packet's next_offset is 0
		}, 2, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := bytes.Clone(blk)
			c.edit(b)
			got, lost, err := walkBlock(t, b)
			if !errors.Is(err, ErrMalformed) || len(got) != c.good || lost != c.lost {
				t.Errorf("got %d frames, %d lost, %v; want %d, %d lost, ErrMalformed", len(got), lost, err, c.good, c.lost)
			}
		})
	}

	// The kernel zeroes the last packet's tp_next_offset; a stale value
	// there is ignored rather than followed.
	b := bytes.Clone(blk)
	third := second + (82+1514+7)&^7
	binary.LittleEndian.PutUint32(b[third:], 9999)
	if got, _, err := walkBlock(t, b); err != nil || len(got) != 3 {
		t.Errorf("stale last next_offset: %d frames, %v", len(got), err)
	}
	// An empty block (num_pkts 0) yields nothing.
	if got, _, err := walkBlock(t, buildTPacketBlock(4096, 0)); err != nil || len(got) != 0 {
		t.Errorf("empty block: %d frames, %v", len(got), err)
	}
}

func TestTPacketFrameData(t *testing.T) {
	gso := VnetHdr{Flags: VnetFlagNeedsCsum, GSOType: VnetGSOTCPv4, HdrLen: 66, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}
	lim := frameLimits{minLen: 14, maxLen: 1600}
	vlim := frameLimits{vnetLen: VnetHdrLen, minLen: 14, maxLen: 1600, ethernet: true}
	for _, c := range []struct {
		name     string
		vnetRoom int // virtio_net_hdr room the slot is built with
		f        ringFrame
		lim      frameLimits
		wantErr  error
		wantVnet VnetHdr
	}{
		{"plain", 0, ringFrame{data: testFrame(60, 1)}, lim, nil, VnetHdr{}},
		{"exactly MaxFrameSize", 0, ringFrame{data: testFrame(1600, 1)}, lim, nil, VnetHdr{}},
		{"exactly an Ethernet header", 0, ringFrame{data: testFrame(14, 1)}, lim, nil, VnetHdr{}},
		{"truncated", 0, ringFrame{data: testFrame(200, 1), length: 30000}, lim, errTPacketTruncated, VnetHdr{}},
		{"shorter than an Ethernet header", 0, ringFrame{data: testFrame(14, 1)[:13]}, lim, errTPacketShort, VnetHdr{}},
		{"longer than MaxFrameSize", 0, ringFrame{data: testFrame(1601, 1)}, lim, errTPacketLong, VnetHdr{}},
		{"with a GSO header", VnetHdrLen, ringFrame{data: tcp4TestFrame(1500), vnet: &gso}, vlim, nil, gso},
		{"GSO header on a non-IP frame", VnetHdrLen, ringFrame{data: testFrame(1500, 1), vnet: &gso}, vlim, ErrMalformed, VnetHdr{}},
		{"with an empty header", VnetHdrLen, ringFrame{data: testFrame(60, 1), vnet: &VnetHdr{}}, vlim, nil, VnetHdr{}},
		{"bad gso_type", VnetHdrLen, ringFrame{data: testFrame(60, 1), vnet: &VnetHdr{GSOType: 2, GSOSize: 1}}, vlim, ErrMalformed, VnetHdr{}},
		{"checksum beyond the frame", VnetHdrLen, ringFrame{data: testFrame(60, 1), vnet: &VnetHdr{Flags: VnetFlagNeedsCsum, CsumStart: 50, CsumOffset: 16}}, vlim, ErrMalformed, VnetHdr{}},
		{"PACKET_VNET_HDR_SZ 12", 12, ringFrame{data: tcp4TestFrame(1500), vnet: &gso}, frameLimits{vnetLen: 12, minLen: 14, maxLen: 1600, ethernet: true}, nil, gso},
		{"virtio_net_hdr room too small", 0, ringFrame{data: testFrame(60, 1)}, frameLimits{vnetLen: 5, maxLen: 100}, errTPacketNoVnet, VnetHdr{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			slot := buildTPacketSlot(tpacketV2, 2048, c.vnetRoom, c.f)
			f, err := parseTPacketHdr(tpacketV2, slot)
			if err != nil {
				t.Fatal(err)
			}
			data, vh, err := tpacketFrameData(slot, f, tpacket2HdrLen, c.lim)
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) || data != nil {
					t.Errorf("got %d bytes, %v; want %v", len(data), err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data, c.f.data) || vh != c.wantVnet {
				t.Errorf("got %d bytes (equal %v), vnet %+v; want %d bytes, vnet %+v",
					len(data), bytes.Equal(data, c.f.data), vh, len(c.f.data), c.wantVnet)
			}
		})
	}

	// The virtio_net_hdr may not reach back into the frame header: with
	// tp_mac at 40 there are only 8 bytes after a V2 header.
	slot := make([]byte, 256)
	putTPacketHdr(tpacketV2, slot, tpStatusUser, 60, 60, 40, 0)
	f, err := parseTPacketHdr(tpacketV2, slot)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tpacketFrameData(slot, f, tpacket2HdrLen, vlim); !errors.Is(err, errTPacketNoVnet) {
		t.Errorf("virtio_net_hdr overlapping the header: %v, want errTPacketNoVnet", err)
	}
	// A header that was never checked against hdr is rejected, not sliced.
	if _, _, err := tpacketFrameData(slot[:50], f, tpacket2HdrLen, lim); !errors.Is(err, ErrMalformed) {
		t.Errorf("frame beyond hdr: %v, want ErrMalformed", err)
	}
}

func TestTPacketGeometry(t *testing.T) {
	for _, c := range []struct {
		name                                        string
		version, blockSize, blockNr, maxFrame, vnet int
		want                                        tpacketGeometry
	}{
		{"V3 defaults", tpacketV3, 128 << 10, 32, 65664, VnetHdrLen, tpacketGeometry{
			blockSize: 128 << 10, blockNr: 32, frameSize: 128 << 10, frameNr: 32, retireTOVms: 1}},
		{"V3 small block for small frames", tpacketV3, 4096, 8, 1514, 0, tpacketGeometry{
			blockSize: 4096, blockNr: 8, frameSize: 4096, frameNr: 8, retireTOVms: 1}},
		// 76+65664 = 65740 -> 65744-byte slots: one per 128 KiB block.
		{"V2 64 KiB frames", tpacketV2, 128 << 10, 32, 65664, VnetHdrLen, tpacketGeometry{
			blockSize: 128 << 10, blockNr: 32, frameSize: 65744, frameNr: 32}},
		// 66+1514 = 1580 -> 1584-byte slots, 82 per 128 KiB block.
		{"V2 MTU frames", tpacketV2, 128 << 10, 32, 1514, 0, tpacketGeometry{
			blockSize: 128 << 10, blockNr: 32, frameSize: 1584, frameNr: 82 * 32}},
		// A 4 KiB block cannot hold a 65744-byte slot: 128 KiB blocks
		// instead, as many as fit in the 1 MiB asked for.
		{"V2 block grown to a slot", tpacketV2, 4096, 256, 65664, VnetHdrLen, tpacketGeometry{
			blockSize: 128 << 10, blockNr: 8, frameSize: 65744, frameNr: 8}},
	} {
		t.Run(c.name, func(t *testing.T) {
			g, err := newTPacketGeometry(c.version, c.blockSize, c.blockNr, c.maxFrame, c.vnet, 4096, 1)
			if err != nil {
				t.Fatal(err)
			}
			if c.version != tpacketV3 {
				c.want.retireTOVms = 0
			}
			if g != c.want {
				t.Errorf("got %+v, want %+v", g, c.want)
			}
			if g.frameSize%tpacketAlignment != 0 || g.blockSize%4096 != 0 || g.frameNr != g.framesPerBlock()*g.blockNr {
				t.Errorf("%+v breaks packet_set_ring's rules", g)
			}
		})
	}
	for _, c := range []struct {
		name                                       string
		version, blockSize, blockNr, maxFrame, tov int
	}{
		{"block not a page multiple", tpacketV3, 5000, 4, 1514, 1},
		{"no blocks", tpacketV3, 4096, 0, 1514, 1},
		{"too many blocks", tpacketV3, 4096, 1 << 16, 1514, 1},
		{"V3 block too small for MaxFrameSize", tpacketV3, 64 << 10, 32, 65664, 1},
		{"negative retire timeout", tpacketV3, 4096, 4, 1514, -1},
		{"unknown version", 7, 4096, 4, 1514, 1},
		{"over 2 GiB", tpacketV3, 1 << 20, 4096, 1514, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			if g, err := newTPacketGeometry(c.version, c.blockSize, c.blockNr, c.maxFrame, 0, 4096, c.tov); !errors.Is(err, errTPacketGeometry) {
				t.Errorf("got %+v, %v; want errTPacketGeometry", g, err)
			}
		})
	}

	g := tpacketGeometry{blockSize: 8192, blockNr: 2, frameSize: 3000, frameNr: 4}
	for i, want := range []int{0, 3000, 8192, 11192} {
		if got := g.frameOffset(i); got != want {
			t.Errorf("frameOffset(%d) = %d, want %d", i, got, want)
		}
	}
}
