//go:build linux

package dataplane

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/testenv"
)

// ringReaderOn opens an ETH_P_ALL socket on v.A and a RingReader of blocks
// 64 KiB blocks with a 1 ms retire timeout on it, and a socket on v.B to send from.
func ringReaderOn(t *testing.T, v *testenv.Veth, vnet bool, blocks int) (*RingReader, int, int) {
	t.Helper()
	fd, err := OpenPacketSocket(SocketOptions{NetNS: v.NSA, Interface: v.A, VnetHdr: vnet})
	if err != nil {
		t.Fatal(err)
	}
	tx, err := OpenPacketSocket(SocketOptions{NetNS: v.NSB, Interface: v.B})
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	r, err := NewRingReader(fd, RingOptions{BlockSize: 64 << 10, Blocks: blocks, RetireTimeout: time.Millisecond})
	if err != nil {
		unix.Close(fd)
		unix.Close(tx)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
		unix.Close(fd)
		unix.Close(tx)
	})
	return r, fd, tx
}

// vlanTagged inserts an 802.1Q tag with tci after f's MAC addresses.
func vlanTagged(f []byte, tci uint16) []byte {
	out := append([]byte{}, f[:12]...)
	out = binary.BigEndian.AppendUint16(out, EthPVLAN)
	out = binary.BigEndian.AppendUint16(out, tci)
	return append(out, f[12:]...)
}

// TestRingReaderVeth sends plain and VLAN-tagged frames across a veth: the
// reader hands them over in order, untagged with the tag in the metadata
// (the kernel strips it on receive), inbound and with timestamps.
func TestRingReaderVeth(t *testing.T) {
	testenv.RequireRoot(t)
	v := quietVeth(t)
	// 32 blocks: the 1 ms timer retires a block every millisecond of
	// sending, so the frames spread over more blocks than they fill.
	r, _, tx := ringReaderOn(t, v, false, 32)
	type sent struct {
		data []byte
		tci  int // -1: untagged
	}
	var want []sent
	for i := range 200 {
		f := testFrame(60+i*13%1400, uint32(i))
		s := sent{data: f, tci: -1}
		if i%3 == 0 {
			s.tci = i % 4095
			f = vlanTagged(f, uint16(s.tci))
		}
		want = append(want, s)
		if _, err := unix.Write(tx, f); err != nil {
			t.Fatalf("send frame %d: %v", i, err)
		}
	}
	start := uint32(time.Now().Add(-time.Minute).Unix())
	var got []RingFrame
	var datas [][]byte
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < len(want) && time.Now().Before(deadline) {
		_, err := r.Drain(func(fs []RingFrame) error {
			for _, f := range fs {
				datas = append(datas, bytes.Clone(f.Data))
				f.Data = nil
				got = append(got, f)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if len(got) != len(want) {
		st, _ := r.Stats()
		for i, d := range datas {
			t.Logf("%d: %d bytes % x", i, len(d), d[:min(20, len(d))])
		}
		t.Fatalf("got %d frames, sent %d (stats %+v)", len(got), len(want), st)
	}
	for i, w := range want {
		g := got[i]
		if !bytes.Equal(datas[i], w.data) || g.WireLen != len(w.data) {
			t.Fatalf("frame %d: %d bytes (wire %d), want %d: % x", i, len(datas[i]), g.WireLen, len(w.data), datas[i][:min(32, len(datas[i]))])
		}
		if w.tci >= 0 && (!g.HasVLAN || int(g.VLANTCI) != w.tci || (g.VLANTPID != 0 && g.VLANTPID != EthPVLAN)) {
			t.Errorf("frame %d: VLAN %v %#x/%#x, want tci %#x", i, g.HasVLAN, g.VLANTCI, g.VLANTPID, w.tci)
		}
		if w.tci < 0 && g.HasVLAN {
			t.Errorf("frame %d: VLAN tag %#x on an untagged frame", i, g.VLANTCI)
		}
		if g.PktType != PacketOtherHost || g.Ifindex <= 0 || g.Sec < start {
			t.Errorf("frame %d: pkttype %d ifindex %d sec %d", i, g.PktType, g.Ifindex, g.Sec)
		}
	}
	st, err := r.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Packets != uint64(len(want)) || st.Drops != 0 {
		t.Errorf("stats %+v, want %d packets and no drops", st, len(want))
	}
}

// TestRingReaderStop: a waiting WithFrames returns ErrClosed on Stop, and
// a full ring's drops show in Stats.
func TestRingReaderStop(t *testing.T) {
	testenv.RequireRoot(t)
	v := quietVeth(t)
	r, _, tx := ringReaderOn(t, v, false, 4)
	done := make(chan error, 1)
	go func() {
		_, err := r.WithFrames(func([]RingFrame) error { return nil })
		for err == nil {
			_, err = r.WithFrames(func([]RingFrame) error { return nil })
		}
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("WithFrames after Stop = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WithFrames did not return after Stop")
	}
	// 4 blocks of 64 KiB hold about 500 1400-byte frames: 2000 overflow it.
	for i := range 2000 {
		if _, err := unix.Write(tx, testFrame(1400, uint32(i))); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(10 * time.Millisecond)
	var losing bool
	drain := func() int {
		n, err := r.Drain(func(fs []RingFrame) error {
			for _, f := range fs {
				losing = losing || f.Status&TPStatusLosing != 0
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	n := drain()
	// Frames that arrive after drops (and before PACKET_STATISTICS is
	// read) carry TP_STATUS_LOSING.
	if _, err := unix.Write(tx, testFrame(100, 9999)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	n += drain()
	st, err := r.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Drops == 0 || n == 0 || uint64(n)+st.Drops != st.Packets || !losing {
		t.Errorf("read %d, stats %+v, losing %v: want drops, read + drops = packets, TP_STATUS_LOSING seen", n, st, losing)
	}
}

// TestRingReaderDeviceGone: removing the device ends a waiting reader with
// ErrDeviceGone.
func TestRingReaderDeviceGone(t *testing.T) {
	testenv.RequireRoot(t)
	v := quietVeth(t)
	r, _, _ := ringReaderOn(t, v, false, 4)
	done := make(chan error, 1)
	go func() {
		var err error
		for err == nil {
			_, err = r.WithFrames(func([]RingFrame) error { return nil })
		}
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	testenv.IP(t, v.NSA, "link", "del", v.A)
	select {
	case err := <-done:
		if !errors.Is(err, ErrDeviceGone) {
			t.Errorf("WithFrames after link del = %v, want ErrDeviceGone", err)
		}
	case <-time.After(5 * time.Second):
		r.Stop()
		t.Fatalf("WithFrames did not return after the device was removed: %v", <-done)
	}
}

// TestRingReaderDownUp: a device that goes down and up again does not end
// the reader, and frames flow again afterwards.
func TestRingReaderDownUp(t *testing.T) {
	testenv.RequireRoot(t)
	v := quietVeth(t)
	r, _, tx := ringReaderOn(t, v, false, 4)
	got := make(chan int, 100)
	done := make(chan error, 1)
	go func() {
		for {
			n, err := r.WithFrames(func(fs []RingFrame) error { return nil })
			if err != nil {
				done <- err
				return
			}
			got <- n
		}
	}()
	testenv.IP(t, v.NSA, "link", "set", v.A, "down")
	time.Sleep(500 * time.Millisecond) // more than the reader's look at the device
	select {
	case err := <-done:
		t.Fatalf("reader ended while the device was down: %v", err)
	default:
	}
	testenv.IP(t, v.NSA, "link", "set", v.A, "up")
	deadline := time.Now().Add(5 * time.Second)
	for n := 0; n == 0; {
		if _, err := unix.Write(tx, testFrame(100, 1)); err != nil && !errors.Is(err, unix.ENETDOWN) {
			t.Fatal(err)
		}
		select {
		case n = <-got:
		case err := <-done:
			t.Fatalf("reader ended after the device came back: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no frames after the device came back up")
		}
	}
	r.Stop()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Errorf("after Stop: %v", err)
	}
}

// TestRingReaderVnetGSO: with PACKET_VNET_HDR a GSO super-frame sent from
// the peer arrives whole with its virtio_net_hdr, from which the segments
// are counted.
func TestRingReaderVnetGSO(t *testing.T) {
	testenv.RequireRoot(t)
	v := quietVeth(t)
	r, _, _ := ringReaderOn(t, v, true, 4)
	if !r.VnetHdr() {
		t.Fatal("VnetHdr() = false on a PACKET_VNET_HDR socket")
	}
	tx, err := OpenPacketSocket(SocketOptions{NetNS: v.NSB, Interface: v.B, VnetHdr: true})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(tx)
	frame := tcp4Frame(30000)
	vh := VnetHdr{Flags: VnetFlagNeedsCsum, GSOType: VnetGSOTCPv4, HdrLen: 54, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}
	b := make([]byte, VnetHdrLen+len(frame))
	vh.Encode(b)
	copy(b[VnetHdrLen:], frame)
	if _, err := unix.Write(tx, b); err != nil {
		t.Fatalf("send GSO frame: %v", err)
	}
	var got []RingFrame
	deadline := time.Now().Add(5 * time.Second)
	for len(got) == 0 && time.Now().Before(deadline) {
		if _, err := r.Drain(func(fs []RingFrame) error {
			for _, f := range fs {
				f.Data = nil
				got = append(got, f)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if len(got) != 1 {
		t.Fatalf("got %d frames, want 1", len(got))
	}
	g := got[0]
	if !g.HasVnet || !g.Vnet.IsGSO() || g.WireLen != len(frame) {
		t.Fatalf("frame: %+v, want a %d-byte GSO frame", g, len(frame))
	}
	if n := GSOSegments(g.Vnet, g.WireLen, 54); n != (30000+1447)/1448 {
		t.Errorf("GSOSegments = %d, want %d", n, (30000+1447)/1448)
	}
}

// tcp4Frame is an Ethernet + IPv4 + TCP frame with payload bytes of data,
// addressed to nobody in particular (TEST-NET-1), with a valid IP header
// checksum; the TCP checksum is left for the GSO path.
func tcp4Frame(payload int) []byte {
	b := make([]byte, 54+payload)
	copy(b[0:12], []byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2})
	binary.BigEndian.PutUint16(b[12:], etherTypeIPv4)
	ip := b[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(40+payload))
	ip[8], ip[9] = 64, 6
	copy(ip[12:], []byte{192, 0, 2, 2, 192, 0, 2, 1})
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
	tcp := b[34:54]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 5201)
	tcp[12] = 5 << 4
	tcp[13] = 0x18
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	return b
}

// BenchmarkRingReaderBlock is the cost per frame of walking a V3 block of
// 64-byte frames and describing them (RingReader.readBlock without the
// kernel: a block built in memory, handed back and reused).
func BenchmarkRingReaderBlock(b *testing.B) {
	const blockSize = 1 << 20
	var frames []ringFrame
	for i := 0; ; i++ {
		frames = append(frames, ringFrame{data: testFrame(64, uint32(i))})
		if (tpacketMacOff(tpacketV3, VnetHdrLen)+64+7)&^7*(len(frames)+1)+tpacketBlockDescLen > blockSize {
			break
		}
	}
	blk := buildTPacketBlock(blockSize, VnetHdrLen, frames...)
	r := &RingReader{geo: tpacketGeometry{blockSize: blockSize, blockNr: 1}, ring: blk, vnetLen: VnetHdrLen}
	n := 0
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		binary.LittleEndian.PutUint32(blk[tpacketBlockStatusOff:], tpStatusUser)
		k, _ := r.readBlock(func(fs []RingFrame) error { n += len(fs); return nil })
		if k != len(frames) {
			b.Fatalf("read %d frames of %d", k, len(frames))
		}
	}
	// CPU time, not b.Elapsed: on a shared machine the wall clock also
	// counts the time other processes had the CPU.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(n), "cpu-ns/frame")
}
