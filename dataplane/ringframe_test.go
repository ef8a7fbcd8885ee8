package dataplane

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// putRingMeta writes the fields parseRingFrame reads beyond the common
// header into the V3 packet at pkt: the VLAN tag and the sockaddr_ll.
func putRingMeta(pkt []byte, tci, tpid uint16, pktType uint8, ifindex int32) {
	binary.LittleEndian.PutUint32(pkt[tpacket3VLANTCIOff:], uint32(tci))
	binary.LittleEndian.PutUint16(pkt[tpacket3VLANTPIDOff:], tpid)
	binary.LittleEndian.PutUint16(pkt[tpacket3SLLOff:], 17) // AF_PACKET
	binary.LittleEndian.PutUint32(pkt[tpacket3SLLOff+4:], uint32(ifindex))
	pkt[tpacket3SLLOff+10] = pktType
}

func TestParseRingFrame(t *testing.T) {
	gso := VnetHdr{Flags: VnetFlagNeedsCsum, GSOType: VnetGSOTCPv4, HdrLen: 66, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}
	for _, c := range []struct {
		name    string
		vnetLen int
		status  uint32
		tci     uint16
		tpid    uint16
		length  int // tp_len, 0: the data's length
		want    RingFrame
	}{
		{name: "plain", want: RingFrame{PktType: PacketOutgoing, Ifindex: 7}},
		{name: "vlan valid", status: TPStatusVLANValid | TPStatusVLANTPIDValid, tci: 0x2064, tpid: 0x88a8,
			want: RingFrame{HasVLAN: true, VLANTCI: 0x2064, VLANTPID: 0x88a8, PktType: PacketOutgoing, Ifindex: 7}},
		{name: "vlan tci 0 valid", status: TPStatusVLANValid,
			want: RingFrame{HasVLAN: true, PktType: PacketOutgoing, Ifindex: 7}},
		{name: "vlan old kernel", tci: 5, tpid: 0x88a8, // no VALID bits: TPID not trusted
			want: RingFrame{HasVLAN: true, VLANTCI: 5, PktType: PacketOutgoing, Ifindex: 7}},
		{name: "cut", length: 9000, want: RingFrame{PktType: PacketOutgoing, Ifindex: 7}},
		{name: "vnet", vnetLen: VnetHdrLen, want: RingFrame{HasVnet: true, Vnet: gso, PktType: PacketOutgoing, Ifindex: 7}},
	} {
		t.Run(c.name, func(t *testing.T) {
			data := testFrame(300, 9)
			rf := ringFrame{data: data, length: c.length}
			if c.vnetLen > 0 {
				rf.vnet = &gso
			}
			blk := buildTPacketBlock(4096, c.vnetLen, rf)
			pkt := blk[tpacketBlockDescLen:]
			putRingMeta(pkt, c.tci, c.tpid, PacketOutgoing, 7)
			binary.LittleEndian.PutUint32(pkt[20:], tpStatusUser|c.status)
			desc, err := parseTPacketBlock(blk)
			if err != nil {
				t.Fatal(err)
			}
			it := newTPacketBlockIter(blk, desc)
			p, f, ok, err := it.next()
			if err != nil || !ok {
				t.Fatalf("iter: %v %v", ok, err)
			}
			var got RingFrame
			if err := parseRingFrame(p, f, c.vnetLen, &got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Data, data) {
				t.Errorf("Data differs from the frame")
			}
			wantLen := c.length
			if wantLen == 0 {
				wantLen = len(data)
			}
			if got.WireLen != wantLen || got.Sec != 1700000000 || got.Nsec != 123456789 || got.Status != tpStatusUser|c.status {
				t.Errorf("WireLen %d Sec %d Nsec %d Status %#x", got.WireLen, got.Sec, got.Nsec, got.Status)
			}
			got.Data, got.WireLen, got.Sec, got.Nsec, got.Status = nil, 0, 0, 0, 0
			if diff := cmp.Diff(c.want, got); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

func TestParseRingFrameNoRoomForSLL(t *testing.T) {
	blk := buildTPacketBlock(4096, 0, ringFrame{data: testFrame(60, 1)})
	pkt := blk[tpacketBlockDescLen:]
	f, err := parseTPacketHdr(tpacketV3, pkt)
	if err != nil {
		t.Fatal(err)
	}
	f.mac = 60 // inside the sockaddr_ll
	var rf RingFrame
	if err := parseRingFrame(pkt, f, 0, &rf); !errors.Is(err, ErrMalformed) {
		t.Errorf("parseRingFrame with tp_mac 60 = %v, want ErrMalformed", err)
	}
}

func TestGSOSegments(t *testing.T) {
	tcp4 := VnetHdr{GSOType: VnetGSOTCPv4, GSOSize: 1448}
	for _, c := range []struct {
		name          string
		v             VnetHdr
		wire, hdr, ok int
	}{
		{"not gso", VnetHdr{}, 1514, 54, 1},
		{"exact", tcp4, 54 + 3*1448, 54, 3},
		{"partial last", tcp4, 54 + 3*1448 + 1, 54, 4},
		{"ecn", VnetHdr{GSOType: VnetGSOTCPv4 | VnetGSOECN, GSOSize: 1000}, 66 + 10000, 66, 10},
		{"no size", VnetHdr{GSOType: VnetGSOTCPv4}, 60000, 54, 0},
		{"headers only", tcp4, 54, 54, 0},
	} {
		if got := GSOSegments(c.v, c.wire, c.hdr); got != c.ok {
			t.Errorf("%s: GSOSegments = %d, want %d", c.name, got, c.ok)
		}
	}
}

// FuzzParseRingFrame feeds arbitrary V3 packets: parseRingFrame must not
// panic, and what it accepts must lie inside the packet.
func FuzzParseRingFrame(f *testing.F) {
	blk := buildTPacketBlock(4096, VnetHdrLen, ringFrame{data: testFrame(100, 4), length: 5000})
	putRingMeta(blk[tpacketBlockDescLen:], 3, 0x8100, PacketHost, 2)
	f.Add(blk[tpacketBlockDescLen:], uint8(VnetHdrLen))
	f.Add(buildTPacketBlock(4096, 0, ringFrame{data: testFrame(60, 1)})[tpacketBlockDescLen:], uint8(0))
	f.Fuzz(func(t *testing.T, pkt []byte, vnetLen uint8) {
		hdr, err := parseTPacketHdr(tpacketV3, pkt)
		if err != nil {
			return
		}
		var rf RingFrame
		if err := parseRingFrame(pkt, hdr, int(vnetLen%16), &rf); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if len(rf.Data) != hdr.snaplen || rf.WireLen < len(rf.Data) {
			t.Fatalf("Data %d bytes, WireLen %d, header %+v", len(rf.Data), rf.WireLen, hdr)
		}
		if hdr.mac < tpacket3SLLOff+sockaddrLLLen {
			t.Fatalf("accepted tp_mac %d inside the sockaddr_ll", hdr.mac)
		}
	})
}

// FuzzParseV3Frame holds the fast parser to the general ones: it accepts
// exactly what parseTPacketHdr and parseRingFrame accept, with the same
// result.
func FuzzParseV3Frame(f *testing.F) {
	blk := buildTPacketBlock(4096, VnetHdrLen, ringFrame{data: testFrame(100, 4), length: 5000})
	putRingMeta(blk[tpacketBlockDescLen:], 3, 0x8100, PacketHost, 2)
	binary.LittleEndian.PutUint32(blk[tpacketBlockDescLen+20:], tpStatusUser|TPStatusVLANValid|TPStatusVLANTPIDValid)
	f.Add(blk[tpacketBlockDescLen:], uint8(VnetHdrLen))
	f.Add(buildTPacketBlock(4096, 0, ringFrame{data: testFrame(60, 1)})[tpacketBlockDescLen:], uint8(0))
	f.Add(make([]byte, 47), uint8(0))
	f.Fuzz(func(t *testing.T, p []byte, vnetLen uint8) {
		vl := int(vnetLen % 16)
		var fast, slow RingFrame
		okFast := parseV3Frame(p, vl, &fast)
		hdr, err := parseTPacketHdr(tpacketV3, p)
		okSlow := err == nil && parseRingFrame(p, hdr, vl, &slow) == nil
		if okFast != okSlow {
			t.Fatalf("parseV3Frame %v, general parsers %v (%v)", okFast, okSlow, err)
		}
		if okFast && !cmp.Equal(fast, slow) {
			t.Fatalf("parseV3Frame %+v\ngeneral parsers %+v", fast, slow)
		}
	})
}
