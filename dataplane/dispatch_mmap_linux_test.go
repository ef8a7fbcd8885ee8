//go:build linux

package dataplane

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/rawfile"
	"github.com/sluicenet/sluice/internal/testenv"
)

// Ethertypes of the test traffic: IEEE 802 local experimental, so nothing
// else on the veth (IPv6 autoconfiguration, say) is mistaken for it.
const (
	mmapTestEtherType  = 0x88b5
	mmapTestReplyType  = 0x88b6
	mmapTestWaitBound  = 20 * time.Second // how long a test waits for frames before it fails
	mmapTestStopBound  = 10 * time.Second // how long dispatch may take to notice stopFD before the test fails
	mmapTestEthPIP     = 0x0800
	mmapTestRetireTOV  = mmapRetireTOVms
	mmapTestSmallBlock = 8192
)

var mmapVersions = []struct {
	name    string
	version int
}{{"v2", tpacketV2}, {"v3", tpacketV3}}

// mmapOpenSocket opens a non-blocking AF_PACKET SOCK_RAW socket bound to
// ifname in ns, receiving proto, with PACKET_VNET_HDR when vnet: what the
// Link's socket opener hands the mmap dispatcher. It is closed in Cleanup.
func mmapOpenSocket(tb testing.TB, ns, ifname string, proto uint16, vnet bool) int {
	tb.Helper()
	fd, err := OpenPacketSocket(SocketOptions{NetNS: ns, Interface: ifname, Protocol: proto, VnetHdr: vnet})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { unix.Close(fd) })
	return fd
}

// mmapCollector is a deliver function that keeps a copy of every frame.
type mmapCollector struct {
	mu     sync.Mutex
	frames []mmapGot
	notify chan struct{}
}

type mmapGot struct {
	data    []byte
	length  int
	nbufs   int
	vnet    VnetHdr
	hasVnet bool
}

func newMMapCollector() *mmapCollector { return &mmapCollector{notify: make(chan struct{}, 1)} }

func (c *mmapCollector) deliver(frames []Frame) {
	c.mu.Lock()
	for i := range frames {
		f := &frames[i]
		b := make([]byte, f.Len)
		f.CopyTo(b)
		c.frames = append(c.frames, mmapGot{data: b, length: f.Len, nbufs: len(f.Data), vnet: f.Vnet, hasVnet: f.HasVnet})
	}
	c.mu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// await returns the first n frames once they have arrived; it fails tb
// after mmapTestWaitBound.
func (c *mmapCollector) await(tb testing.TB, n int) []mmapGot {
	tb.Helper()
	deadline := time.After(mmapTestWaitBound)
	for {
		c.mu.Lock()
		got := len(c.frames)
		if got >= n {
			out := append([]mmapGot(nil), c.frames[:n]...)
			c.mu.Unlock()
			return out
		}
		c.mu.Unlock()
		select {
		case <-c.notify:
		case <-deadline:
			tb.Fatalf("got %d frames, want %d within %v", got, n, mmapTestWaitBound)
		}
	}
}

func (c *mmapCollector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.frames)
}

// mmapTestChannel builds the rxChannel a Link would give the dispatcher:
// opts with defaults, a fresh stop eventfd and counters.
func mmapTestChannel(tb testing.TB, fd int, opts LinkOptions, deliver func([]Frame)) *rxChannel {
	tb.Helper()
	opts.FDs = []int{fd}
	opts.Mode = PacketMMap
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		tb.Fatal(err)
	}
	stop, err := rawfile.NewStopFD()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { unix.Close(stop) })
	return &rxChannel{fd: fd, stopFD: stop, opts: &opts, counters: &Counters{}, alloc: opts.Allocator, deliver: deliver}
}

// mmapRun runs d.dispatch in a loop on its own goroutine until it fails, as
// a Link's reader does. The returned stop fires stopFD and returns the error
// dispatch ended with; it fails tb if that takes longer than
// mmapTestStopBound. Cleanup stops the loop, then releases d.
func mmapRun(tb testing.TB, ch *rxChannel, d dispatcher) (stop func() error) {
	tb.Helper()
	done := make(chan error, 1)
	go func() {
		for {
			if err := d.dispatch(); err != nil {
				done <- err
				return
			}
		}
	}()
	var once sync.Once
	var result error
	stop = func() error {
		once.Do(func() {
			if err := rawfile.Stop(ch.stopFD); err != nil {
				tb.Error(err)
			}
			select {
			case result = <-done:
			case <-time.After(mmapTestStopBound):
				tb.Fatalf("dispatch did not return within %v of stopFD firing", mmapTestStopBound)
			}
		})
		return result
	}
	tb.Cleanup(func() {
		stop()
		d.release()
	})
	return stop
}

// mmapSender is an AF_PACKET socket on ifname in ns that writes whole frames
// (preceded by a virtio_net_hdr when vnet). Protocol 0: it receives nothing.
type mmapSender struct {
	fd   int
	vnet bool
}

func newMMapSender(tb testing.TB, ns, ifname string, vnet bool) *mmapSender {
	tb.Helper()
	var fd int
	testenv.Do(tb, ns, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return os.NewSyscallError("socket", err)
		}
		if vnet {
			if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
				unix.Close(fd)
				return os.NewSyscallError("setsockopt PACKET_VNET_HDR", err)
			}
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return os.NewSyscallError("bind", err)
		}
		return nil
	})
	tb.Cleanup(func() { unix.Close(fd) })
	return &mmapSender{fd: fd, vnet: vnet}
}

// send writes one frame, with vh first when the socket has PACKET_VNET_HDR.
func (s *mmapSender) send(tb testing.TB, vh VnetHdr, frame []byte) {
	tb.Helper()
	b := frame
	if s.vnet {
		b = make([]byte, VnetHdrLen+len(frame))
		vh.Encode(b)
		copy(b[VnetHdrLen:], frame)
	}
	if n, err := unix.Write(s.fd, b); err != nil || n != len(b) {
		tb.Fatalf("send %d-byte frame: %d, %v", len(b), n, err)
	}
}

// mmapTCP4GSOFrame returns a TCPv4 super-frame with payload bytes of data
// from 192.0.2.2:40000 to 192.0.2.1:5201 and the virtio_net_hdr that asks
// the kernel to segment it at 1448 bytes (KERNEL-NOTES, virtio_net_hdr): a
// valid IPv4 header for the whole super-frame and the pseudo-header sum in
// the TCP checksum field.
func mmapTCP4GSOFrame(payload int, seed byte) (VnetHdr, []byte) {
	f := make([]byte, 14+20+20+payload)
	copy(f, []byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00})
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+20+payload))
	binary.BigEndian.PutUint16(ip[4:], 0x1234)
	ip[6] = 0x40 // DF
	ip[8] = 64
	ip[9] = unix.IPPROTO_TCP
	copy(ip[12:], []byte{192, 0, 2, 2, 192, 0, 2, 1})
	binary.BigEndian.PutUint16(ip[10:], ^mmapFold(mmapSum(ip, 0)))
	tcp := f[34:54]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 5201)
	binary.BigEndian.PutUint32(tcp[4:], 1000)
	binary.BigEndian.PutUint32(tcp[8:], 1)
	tcp[12] = 5 << 4
	tcp[13] = 0x18 // PSH|ACK
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	for i := range payload {
		f[54+i] = byte(i*7) ^ seed
	}
	pseudo := mmapSum(ip[12:20], uint32(unix.IPPROTO_TCP)+uint32(20+payload))
	binary.BigEndian.PutUint16(tcp[16:], mmapFold(pseudo))
	vh := VnetHdr{Flags: VnetFlagNeedsCsum, GSOType: VnetGSOTCPv4, HdrLen: 54, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}
	return vh, f
}

func mmapSum(b []byte, s uint32) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

func mmapFold(s uint32) uint16 {
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// mmapIPv4Frame returns a small, complete IPv4/UDP frame of n bytes with a
// marker byte, for the ETH_P_IP sockets of the GSO tests.
func mmapIPv4Frame(n int, marker byte) []byte {
	f := make([]byte, n)
	copy(f, []byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00})
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(n-14))
	ip[8] = 64
	ip[9] = unix.IPPROTO_UDP
	copy(ip[12:], []byte{192, 0, 2, 2, 192, 0, 2, 1})
	binary.BigEndian.PutUint16(ip[10:], ^mmapFold(mmapSum(ip, 0)))
	binary.BigEndian.PutUint16(f[34:], 40000)
	binary.BigEndian.PutUint16(f[36:], 9)
	binary.BigEndian.PutUint16(f[38:], uint16(n-34))
	for i := 42; i < n; i++ {
		f[i] = marker
	}
	return f
}

// TestMMapDispatchInOrder sends frames of many sizes from NSB and checks
// that each arrives once, byte for byte and in order, through a ring small
// enough to wrap around many times. The sender waits for each burst to be
// read so that the small ring never overflows.
func TestMMapDispatchInOrder(t *testing.T) {
	for _, v := range mmapVersions {
		t.Run("version="+v.name, func(t *testing.T) {
			veth := testenv.NewVeth(t)
			fd := mmapOpenSocket(t, veth.NSA, veth.A, mmapTestEtherType, false)
			col := newMMapCollector()
			// 4 blocks of 8 KiB: a V3 block holds about 5 1514-byte
			// frames, a V2 ring has 5 1584-byte slots per block.
			ch := mmapTestChannel(t, fd, LinkOptions{EthernetHeader: true, MaxFrameSize: 1514,
				RingBlockSize: mmapTestSmallBlock, RingBlocks: 4}, col.deliver)
			d, err := newMMapDispatcherConfig(ch, mmapConfig{version: v.version, retireTOVms: mmapTestRetireTOV})
			if err != nil {
				t.Fatal(err)
			}
			stop := mmapRun(t, ch, d)

			const total, burst = 400, 8
			snd := newMMapSender(t, veth.NSB, veth.B, false)
			var want [][]byte
			for i := 0; i < total; i += burst {
				for j := i; j < i+burst; j++ {
					f := testFrame(60+j*37%1455, uint32(j))
					want = append(want, f)
					snd.send(t, VnetHdr{}, f)
				}
				col.await(t, i+burst)
			}
			if err := stop(); !errors.Is(err, ErrClosed) {
				t.Errorf("dispatch after stop = %v, want ErrClosed", err)
			}
			got := col.await(t, total)
			if n := col.count(); n != total {
				t.Errorf("got %d frames, sent %d", n, total)
			}
			for i := range want {
				g := got[i]
				if !bytes.Equal(g.data, want[i]) || g.length != len(want[i]) || g.nbufs != 1 || g.hasVnet {
					t.Fatalf("frame %d: got %d bytes in %d buffers (hasVnet %v, seq %d), want %d bytes: %x",
						i, g.length, g.nbufs, g.hasVnet, binary.BigEndian.Uint32(g.data[14:]), len(want[i]), g.data[:min(32, len(g.data))])
				}
			}
			if s := ch.counters.Snapshot(); s.RxErrors != 0 || s.RxDropped != 0 {
				t.Errorf("counters %+v, want no errors or drops", s)
			}
		})
	}
}

// TestMMapDispatchGSO writes a 30000-byte TCPv4 GSO super-frame from NSB.
// The veth keeps it whole (TSO is on by default), so it must arrive as one
// frame with its virtio_net_hdr, followed by a plain frame.
func TestMMapDispatchGSO(t *testing.T) {
	for _, v := range mmapVersions {
		t.Run("version="+v.name, func(t *testing.T) {
			veth := testenv.NewVeth(t)
			fd := mmapOpenSocket(t, veth.NSA, veth.A, mmapTestEthPIP, true)
			col := newMMapCollector()
			// The defaults: 32 blocks of 128 KiB, MaxFrameSize 65664.
			ch := mmapTestChannel(t, fd, LinkOptions{EthernetHeader: true, VnetHdr: true}, col.deliver)
			d, err := newMMapDispatcherConfig(ch, mmapConfig{version: v.version, retireTOVms: mmapTestRetireTOV})
			if err != nil {
				t.Fatal(err)
			}
			mmapRun(t, ch, d)

			snd := newMMapSender(t, veth.NSB, veth.B, true)
			vh, gso := mmapTCP4GSOFrame(30000, 1)
			plain := mmapIPv4Frame(100, 0xab)
			snd.send(t, vh, gso)
			snd.send(t, VnetHdr{}, plain)
			got := col.await(t, 2)
			g := got[0]
			if !bytes.Equal(g.data, gso) || g.length != len(gso) || !g.hasVnet {
				t.Fatalf("super-frame: got %d bytes (hasVnet %v), want %d bytes", g.length, g.hasVnet, len(gso))
			}
			// hdr_len is the kernel's skb_headlen, not ours; the rest
			// comes back as sent.
			want := vh
			want.HdrLen = g.vnet.HdrLen
			if g.vnet != want {
				t.Errorf("super-frame virtio_net_hdr %+v, want %+v", g.vnet, want)
			}
			if g := got[1]; !bytes.Equal(g.data, plain) || !g.hasVnet || g.vnet.IsGSO() {
				t.Errorf("plain frame: got %d bytes, vnet %+v (has %v); want %d bytes, no GSO", g.length, g.vnet, g.hasVnet, len(plain))
			}
			if s := ch.counters.Snapshot(); s.RxErrors != 0 {
				t.Errorf("counters %+v, want no errors", s)
			}
		})
	}
}

// TestMMapDispatchTooLarge checks that frames the ring cut short, and
// frames longer than MaxFrameSize, are counted in RxErrors and dropped while
// the frames around them are delivered.
func TestMMapDispatchTooLarge(t *testing.T) {
	for _, v := range mmapVersions {
		t.Run("version="+v.name, func(t *testing.T) {
			veth := testenv.NewVeth(t)
			fd := mmapOpenSocket(t, veth.NSA, veth.A, mmapTestEthPIP, true)
			col := newMMapCollector()
			// V3: 16 KiB blocks hold a 16244-byte frame, MaxFrameSize
			// is 9000. V2: 9088-byte slots.
			ch := mmapTestChannel(t, fd, LinkOptions{EthernetHeader: true, VnetHdr: true, MaxFrameSize: 9000,
				RingBlockSize: 16 << 10, RingBlocks: 4}, col.deliver)
			d, err := newMMapDispatcherConfig(ch, mmapConfig{version: v.version, retireTOVms: mmapTestRetireTOV})
			if err != nil {
				t.Fatal(err)
			}
			mmapRun(t, ch, d)

			snd := newMMapSender(t, veth.NSB, veth.B, true)
			vhBig, big := mmapTCP4GSOFrame(30000, 2) // larger than a block or slot: truncated
			vhMid, mid := mmapTCP4GSOFrame(10000, 3) // fits a V3 block, longer than MaxFrameSize
			first, last := mmapIPv4Frame(60, 1), mmapIPv4Frame(1514, 2)
			snd.send(t, VnetHdr{}, first)
			snd.send(t, vhBig, big)
			snd.send(t, vhMid, mid)
			snd.send(t, VnetHdr{}, last)
			got := col.await(t, 2)
			if !bytes.Equal(got[0].data, first) || !bytes.Equal(got[1].data, last) {
				t.Errorf("got frames of %d and %d bytes, want %d and %d", got[0].length, got[1].length, len(first), len(last))
			}
			// The frames after a drop arrived, so the drops are counted.
			if s := ch.counters.Snapshot(); s.RxErrors != 2 || col.count() != 2 {
				t.Errorf("RxErrors %d with %d frames delivered; want 2 errors, 2 frames", s.RxErrors, col.count())
			}
		})
	}
}

// TestMMapDispatchStop checks that a dispatcher blocked on an idle ring
// returns ErrClosed once stopFD fires, and that a stopped dispatcher keeps
// returning it.
func TestMMapDispatchStop(t *testing.T) {
	for _, v := range mmapVersions {
		t.Run("version="+v.name, func(t *testing.T) {
			veth := testenv.NewVeth(t)
			fd := mmapOpenSocket(t, veth.NSA, veth.A, mmapTestEtherType, false)
			ch := mmapTestChannel(t, fd, LinkOptions{EthernetHeader: true}, func([]Frame) {
				t.Error("delivered a frame on an idle link")
			})
			d, err := newMMapDispatcherConfig(ch, mmapConfig{version: v.version, retireTOVms: mmapTestRetireTOV})
			if err != nil {
				t.Fatal(err)
			}
			stop := mmapRun(t, ch, d)
			if err := stop(); !errors.Is(err, ErrClosed) {
				t.Errorf("dispatch after stop = %v, want ErrClosed", err)
			}
			if err := d.dispatch(); !errors.Is(err, ErrClosed) {
				t.Errorf("dispatch again = %v, want ErrClosed", err)
			}
		})
	}
}

// TestMMapReleaseRemovesRing checks that release unmaps the ring and takes
// it off the socket, which the Link only borrows: the socket can take a new
// PACKET_VERSION (EBUSY while a ring exists) and a new ring afterwards.
func TestMMapReleaseRemovesRing(t *testing.T) {
	veth := testenv.NewVeth(t)
	fd := mmapOpenSocket(t, veth.NSA, veth.A, mmapTestEtherType, false)
	ch := mmapTestChannel(t, fd, LinkOptions{EthernetHeader: true}, func([]Frame) {})
	d, err := newMMapDispatcher(ch)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, tpacketV2); !errors.Is(err, unix.EBUSY) {
		t.Fatalf("PACKET_VERSION with a ring = %v, want EBUSY", err)
	}
	d.release()
	d.release() // idempotent
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, tpacketV2); err != nil {
		t.Fatalf("PACKET_VERSION after release = %v, want success", err)
	}
	d2, err := newMMapDispatcher(ch)
	if err != nil {
		t.Fatalf("second ring on the same socket: %v", err)
	}
	d2.release()
}

// TestMMapNotSupported checks which setups refuse to build a ring, and that
// descriptors that are not AF_PACKET sockets say ErrNotSupported (so the
// Link falls back) while a misconfiguration says what to change.
func TestMMapNotSupported(t *testing.T) {
	udp, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(udp)
	var pipe [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pipe[0])
	defer unix.Close(pipe[1])
	for _, c := range []struct {
		name string
		fd   int
	}{{"UDP socket", udp}, {"pipe", pipe[0]}} {
		ch := mmapTestChannel(t, c.fd, LinkOptions{EthernetHeader: true}, func([]Frame) {})
		if d, err := newMMapDispatcher(ch); !errors.Is(err, ErrNotSupported) {
			t.Errorf("%s: got %v, %v; want ErrNotSupported", c.name, d, err)
		}
	}

	testenv.RequireRoot(t)
	veth := testenv.NewVeth(t)
	for _, c := range []struct {
		name     string
		vnetSock bool
		opts     LinkOptions
		want     string // in the error
	}{
		{"VnetHdr without PACKET_VNET_HDR", false, LinkOptions{VnetHdr: true}, "PACKET_VNET_HDR"},
		{"PACKET_VNET_HDR without VnetHdr", true, LinkOptions{}, "PACKET_VNET_HDR"},
		{"block too small for MaxFrameSize", false, LinkOptions{RingBlockSize: 64 << 10}, "RingBlockSize"},
	} {
		t.Run(c.name, func(t *testing.T) {
			fd := mmapOpenSocket(t, veth.NSA, veth.A, mmapTestEtherType, c.vnetSock)
			ch := mmapTestChannel(t, fd, c.opts, func([]Frame) {})
			d, err := newMMapDispatcher(ch)
			if err == nil || errors.Is(err, ErrNotSupported) || !bytes.Contains([]byte(err.Error()), []byte(c.want)) {
				t.Fatalf("got %v, %v; want an error naming %s that is not ErrNotSupported", d, err, c.want)
			}
			// Nothing was left on the socket.
			if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, tpacketV2); err != nil {
				t.Errorf("PACKET_VERSION after a failed setup = %v", err)
			}
		})
	}
}

// TestMMapLinkFanout runs the dispatcher the way a Link does: two sockets
// in one PACKET_FANOUT group (joined before the rings exist, as
// OpenPacketSockets does), each with its own V3 ring, and the Link counting
// what is delivered.
func TestMMapLinkFanout(t *testing.T) {
	veth := testenv.NewVeth(t)
	fds, err := OpenPacketSockets(SocketOptions{NetNS: veth.NSA, Interface: veth.A, Protocol: mmapTestEtherType}, 2)
	if err != nil {
		t.Fatal(err)
	}
	col := newMMapCollector()
	l, err := New(LinkOptions{FDs: fds, Mode: PacketMMap, EthernetHeader: true}, DelivererFunc(col.deliver))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		l.Close()
		l.Wait()
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for i := range fds {
		if m := l.Mode(i); m != PacketMMap {
			t.Fatalf("channel %d uses %v, want mmap", i, m)
		}
	}
	l.Start()
	const total = 100
	snd := newMMapSender(t, veth.NSB, veth.B, false)
	want := map[uint32][]byte{}
	size := 0
	for i := range total {
		f := testFrame(60+i, uint32(i))
		want[uint32(i)] = f
		size += len(f)
		snd.send(t, VnetHdr{}, f)
	}
	for _, g := range col.await(t, total) {
		seq := binary.BigEndian.Uint32(g.data[14:])
		if !bytes.Equal(g.data, want[seq]) {
			t.Errorf("frame %d differs or is repeated", seq)
		}
		delete(want, seq)
	}
	if s := l.Stats(); s.RxPackets != total || s.RxBytes != uint64(size) || s.RxErrors != 0 {
		t.Errorf("stats %+v, want %d packets, %d bytes, no errors", s, total, size)
	}
}

// mmapFakeDispatcher returns a dispatcher over ring, a slice standing in for
// the kernel's mapping, without a socket: enough to drive readBlock and
// readSlots. fd -1 makes the PACKET_STATISTICS read after TP_STATUS_LOSING
// fail quietly.
func mmapFakeDispatcher(tb testing.TB, version int, g tpacketGeometry, ring []byte, lim frameLimits, deliver func([]Frame)) *mmapDispatcher {
	opts := LinkOptions{FDs: []int{0}, EthernetHeader: true, MaxFrameSize: lim.maxLen}.withDefaults()
	ch := &rxChannel{fd: -1, stopFD: -1, opts: &opts, counters: &Counters{}, alloc: opts.Allocator, deliver: deliver}
	d := &mmapDispatcher{ch: ch, version: version, geo: g, ring: ring, hdrLen: tpacketHdrLen(version), lim: lim}
	d.slots = g.blockNr
	if version != tpacketV3 {
		d.slots = g.frameNr
		d.batch = min(g.frameNr, 64)
	}
	return d
}

// TestMMapGarbageRing fills rings with random bytes, marks every slot or
// block as ours, and reads them all: the dispatcher must not panic, must
// hand every block and slot back, and may only deliver frames that meet the
// limits.
func TestMMapGarbageRing(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	lim := frameLimits{vnetLen: VnetHdrLen, minLen: 14, maxLen: 1514}
	for round := range 200 {
		version := []int{tpacketV2, tpacketV3}[round%2]
		g, err := newTPacketGeometry(version, 4096, 4, 1514, VnetHdrLen, 4096, 1)
		if err != nil {
			t.Fatal(err)
		}
		ring := make([]byte, g.ringSize())
		for i := range ring {
			ring[i] = byte(rng.Uint32())
		}
		// Sometimes plausible values, so that deeper checks are reached.
		for off := 0; off+64 <= len(ring); off += 16 {
			if rng.IntN(4) == 0 {
				binary.LittleEndian.PutUint32(ring[off+rng.IntN(8)*4:], uint32(rng.IntN(300)))
			}
		}
		delivered := 0
		d := mmapFakeDispatcher(t, version, g, ring, lim, func(frames []Frame) {
			for _, f := range frames {
				if f.Len < lim.minLen || f.Len > lim.maxLen || len(f.Data) != 1 || len(f.Data[0].Data) != f.Len {
					t.Fatalf("round %d: delivered a frame of %d bytes in %d buffers", round, f.Len, len(f.Data))
				}
				if err := f.Vnet.Validate(f.Len); err != nil {
					t.Fatalf("round %d: delivered an invalid virtio_net_hdr: %v", round, err)
				}
			}
			delivered += len(frames)
		})
		for i := range d.slots {
			storeStatus(ring, d.statusOff(i), tpStatusUser)
		}
		for range d.slots {
			if version == tpacketV3 {
				d.readBlock()
			} else {
				d.readSlots()
			}
		}
		for i := range d.slots {
			if loadStatus(ring, d.statusOff(i)) != tpStatusKernel {
				t.Fatalf("round %d: V%d slot %d not handed back", round, version+1, i)
			}
		}
		if s := d.ch.counters.Snapshot(); s.RxErrors == 0 && delivered == 0 {
			t.Fatalf("round %d: nothing delivered and no errors counted", round)
		}
	}
}

// fixedAllocator hands out slices of one preallocated arena, so that
// allocations measured around it are the dispatcher's own.
type fixedAllocator struct{ arena []byte }

func (a *fixedAllocator) Alloc(n int) Buffer { return Buffer{Data: a.arena[:n]} }
func (a *fixedAllocator) Free(Buffer)        {}

// TestMMapSyntheticRing reads well-formed rings built like the kernel's and
// checks frames, order and that steady-state reading allocates nothing.
func TestMMapSyntheticRing(t *testing.T) {
	frames := []ringFrame{{data: testFrame(60, 1)}, {data: testFrame(1514, 2)}, {data: testFrame(200, 3)}}
	lim := frameLimits{minLen: 14, maxLen: 1514}
	for _, v := range mmapVersions {
		t.Run("version="+v.name, func(t *testing.T) {
			g, err := newTPacketGeometry(v.version, 8192, 2, 1514, 0, 4096, 1)
			if err != nil {
				t.Fatal(err)
			}
			ring := make([]byte, g.ringSize())
			if v.version == tpacketV3 {
				copy(ring, buildTPacketBlock(g.blockSize, 0, frames...))
			} else {
				for i, f := range frames {
					copy(ring[g.frameOffset(i):], buildTPacketSlot(v.version, g.frameSize, 0, f))
				}
			}
			pristine := bytes.Clone(ring)
			var got [][]byte
			d := mmapFakeDispatcher(t, v.version, g, ring, lim, func(fr []Frame) {
				for _, f := range fr {
					got = append(got, bytes.Clone(f.Data[0].Data))
				}
			})
			if v.version == tpacketV3 {
				d.readBlock()
			} else {
				d.readSlots()
			}
			if len(got) != len(frames) {
				t.Fatalf("got %d frames, want %d", len(got), len(frames))
			}
			for i := range frames {
				if !bytes.Equal(got[i], frames[i].data) {
					t.Errorf("frame %d differs", i)
				}
			}
			if want := map[int]int{tpacketV2: 3, tpacketV3: 1}[v.version]; d.next != want {
				t.Errorf("next = %d after one batch, want %d", d.next, want)
			}

			// Steady state: the same batch again and again, into
			// memory that is not allocated per frame.
			d.ch.alloc = &fixedAllocator{arena: make([]byte, 2048)}
			d.ch.deliver = func([]Frame) {}
			allocs := testing.AllocsPerRun(100, func() {
				copy(ring, pristine)
				d.next = 0
				if v.version == tpacketV3 {
					d.readBlock()
				} else {
					d.readSlots()
				}
			})
			if allocs != 0 {
				t.Errorf("%v allocations per batch, want 0", allocs)
			}
		})
	}
}

// mmapThreadCPU returns the CPU time (user + system) of the calling thread.
func mmapThreadCPU() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_THREAD, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func mmapProcessCPU() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// mmapBenchRings are the rings BenchmarkMMapRing compares, all of the
// default 4 MiB (32 blocks of 128 KiB): V2 with slots for MTU-sized frames
// (which cannot hold a GSO super-frame), V2 with slots for the default
// MaxFrameSize (65664, so one slot per block), and V3. recvmmsg (batch 8,
// the default buffer shape) is there for scale: no ring at all.
var mmapBenchRings = []struct {
	name     string
	version  int // -1: the recvmmsg dispatcher
	maxFrame int
}{
	{"version=v2/slot=2k", tpacketV2, 1514},
	{"version=v2/slot=64k", tpacketV2, 65664},
	{"version=v3/block=128k", tpacketV3, 65664},
	{"mode=recvmmsg", -1, 65664},
}

// mmapBenchTraffic is what the sender in NSB writes in one iteration.
var mmapBenchTraffic = []struct {
	name   string
	count  int  // frames per iteration
	gso    bool // 65000-byte TCPv4 super-frames instead of 64-byte frames
	window int  // most frames in flight (sent, not yet read); 0: no limit
}{
	// As fast as the sender can: shows the rate a ring sustains and how
	// it absorbs bursts.
	{"traffic=udp64", 200_000, false, 0},
	// Super-frames with at most 16 in flight, as a TCP sender's window
	// would keep them: shows whether, and how fast, a ring delivers
	// them whole.
	{"traffic=gso64k", 4_000, true, 16},
}

// BenchmarkMMapRing measures frames delivered per second, drops, and CPU per
// delivered frame for each ring, on a veth pair between two namespaces. One
// iteration is one bounded burst: the sender writes count frames with
// sendmmsg (64 per call) as fast as it can, the reader drains the ring until
// it has been idle for 50 ms.
//
//	go test ./dataplane -run '^$' -bench 'BenchmarkMMapRing$' -benchtime 5x -count 3
//
// Metrics: rx-pkts/s (delivered frames over the time from the first send to
// the last delivery), drop-ratio (frames not delivered: ring overflow or,
// for super-frames, truncation), reader-ns/pkt (CPU time, user + system, of
// the reader's thread per delivered frame), proc-ns/pkt (CPU time of the
// whole process, sender included, per delivered frame), rx-Gbit/s.
func BenchmarkMMapRing(b *testing.B) {
	for _, tr := range mmapBenchTraffic {
		for _, r := range mmapBenchRings {
			b.Run(tr.name+"/"+r.name, func(b *testing.B) {
				benchmarkMMapRing(b, r.version, r.maxFrame, tr.count, tr.gso, tr.window)
			})
		}
	}
}

func benchmarkMMapRing(b *testing.B, version, maxFrame, count int, gso bool, window int) {
	b.ReportAllocs()
	veth := testenv.NewVeth(b)
	proto := uint16(mmapTestEtherType)
	if gso {
		proto = mmapTestEthPIP
	}
	fd := mmapOpenSocket(b, veth.NSA, veth.A, proto, gso)
	var delivered, bytes atomic.Uint64
	var lastDelivery atomic.Int64
	progress := make(chan struct{}, 1)
	ch := mmapTestChannel(b, fd, LinkOptions{EthernetHeader: true, VnetHdr: gso, MaxFrameSize: maxFrame}, func(frames []Frame) {
		n := 0
		for i := range frames {
			n += frames[i].Len
		}
		delivered.Add(uint64(len(frames)))
		bytes.Add(uint64(n))
		lastDelivery.Store(time.Now().UnixNano())
		select {
		case progress <- struct{}{}:
		default:
		}
	})
	var d dispatcher
	if version < 0 {
		d = newRecvMMsgDispatcher(ch, false)
	} else {
		md, err := newMMapDispatcherConfig(ch, mmapConfig{version: version, retireTOVms: mmapRetireTOVms})
		if err != nil {
			b.Fatal(err)
		}
		d = md
	}
	b.Cleanup(d.release)

	// The sender: one socket in NSB, a batch of 64 prepared messages all
	// pointing at the same frame (the receiver counts, it does not look).
	snd := newMMapSender(b, veth.NSB, veth.B, gso)
	var frame []byte
	if gso {
		vh, f := mmapTCP4GSOFrame(65000, 1)
		frame = make([]byte, VnetHdrLen+len(f))
		vh.Encode(frame)
		copy(frame[VnetHdrLen:], f)
	} else {
		frame = testFrame(64, 1)
	}
	const sendBatch = 64
	iov := rawfile.IovecFromBytes(frame)
	msgs := make([]unix.Mmsghdr, sendBatch)
	for i := range msgs {
		msgs[i].Hdr.Iov = &iov
		msgs[i].Hdr.SetIovlen(1)
	}

	var rxPkts, readerCPU, procCPU, elapsed, dropped, rxBytes float64
	for b.Loop() {
		stop, err := rawfile.NewStopFD()
		if err != nil {
			b.Fatal(err)
		}
		ch.stopFD = stop
		delivered.Store(0)
		bytes.Store(0)
		type result struct {
			cpu time.Duration
			err error
		}
		done := make(chan result, 1)
		go func() {
			// The reader owns its thread, so the thread's CPU time is
			// the reader's.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			c0 := mmapThreadCPU()
			var err error
			for err == nil {
				err = d.dispatch()
			}
			done <- result{mmapThreadCPU() - c0, err}
		}()

		p0, t0 := mmapProcessCPU(), time.Now()
		lastDelivery.Store(t0.UnixNano())
		sendDeadline := t0.Add(30 * time.Second)
		errs0 := ch.counters.RxErrors.Load()
		lost := 0 // frames of the window given up on: dropped by the kernel
		var stalled time.Time
		for sent := 0; sent < count && time.Now().Before(sendDeadline); {
			k := min(sendBatch, count-sent)
			if window > 0 {
				// Frames cut short by the ring count as done.
				done := int(delivered.Load()) + int(ch.counters.RxErrors.Load()-errs0) + lost
				if sent-done >= window {
					if stalled.IsZero() {
						stalled = time.Now()
					}
					select {
					case <-progress:
					case <-time.After(time.Millisecond):
					}
					if time.Since(stalled) > 20*time.Millisecond {
						// Nothing came back: what is in
						// flight was dropped.
						lost += sent - done
						stalled = time.Time{}
					}
					continue
				}
				stalled = time.Time{}
				k = min(k, window-(sent-done))
			}
			n, e := rawfile.SendMMsg(snd.fd, msgs[:k], 0)
			switch {
			case e == unix.EAGAIN || e == unix.ENOBUFS || e == unix.EINTR:
				rawfile.Wait(snd.fd, unix.POLLOUT, stop, 10)
			case e != 0:
				b.Fatalf("sendmmsg: %v", e)
			}
			sent += n
		}
		// Drain: until nothing has arrived for 50 ms (a V3 block is
		// retired after mmapRetireTOVms), at most 10 s.
		for last, idle, i := uint64(0), 0, 0; idle < 50 && i < 10_000; i++ {
			time.Sleep(time.Millisecond)
			if n := delivered.Load(); n == uint64(count) {
				break
			} else if n == last {
				idle++
			} else {
				last, idle = n, 0
			}
		}
		p1 := mmapProcessCPU()
		if err := rawfile.Stop(stop); err != nil {
			b.Fatal(err)
		}
		var res result
		select {
		case res = <-done:
		case <-time.After(mmapTestStopBound):
			b.Fatal("reader did not stop")
		}
		unix.Close(stop)
		if !errors.Is(res.err, ErrClosed) {
			b.Fatalf("dispatch: %v", res.err)
		}
		n := float64(delivered.Load())
		if n == 0 {
			b.Logf("nothing delivered (RxErrors %d)", ch.counters.RxErrors.Load())
		} else {
			rxPkts += n
			rxBytes += float64(bytes.Load())
			elapsed += time.Duration(lastDelivery.Load() - t0.UnixNano()).Seconds()
			readerCPU += float64(res.cpu.Nanoseconds()) / n
			procCPU += float64((p1 - p0).Nanoseconds()) / n
		}
		dropped += float64(count) - n
	}
	iters := float64(b.N)
	if elapsed > 0 {
		b.ReportMetric(rxPkts/elapsed, "rx-pkts/s")
		b.ReportMetric(rxBytes*8/elapsed/1e9, "rx-Gbit/s")
	}
	b.ReportMetric(dropped/(iters*float64(count)), "drop-ratio")
	b.ReportMetric(readerCPU/iters, "reader-ns/pkt")
	b.ReportMetric(procCPU/iters, "proc-ns/pkt")
}

// BenchmarkMMapRingRTT measures the round trip of a request/response
// exchange through a ring: a client in NSB writes a 64-byte frame and waits
// for the answer; the dispatcher in NSA reads the request from its ring and
// answers from its deliver function through a plain AF_PACKET socket. With
// V3 a lone frame stays in the block the kernel is filling until that block
// is retired, so the round trip is bounded below by tp_retire_blk_tov (and
// the kernel timer's granularity); V2 hands over every frame at once.
//
//	go test ./dataplane -run '^$' -bench 'BenchmarkMMapRingRTT' -benchtime 300x -count 1
//
// Metrics: ns/op is the mean round trip; p50-us and p99-us its percentiles.
func BenchmarkMMapRingRTT(b *testing.B) {
	for _, c := range []struct {
		name    string
		version int
		tov     int
	}{
		{"version=v2", tpacketV2, 0},
		{"version=v3/tov=1ms", tpacketV3, 1},
		{"version=v3/tov=2ms", tpacketV3, 2},
		{"version=v3/tov=4ms", tpacketV3, 4},
		{"version=v3/tov=default", tpacketV3, 0},
		{"mode=recvmmsg", -1, 0},
	} {
		b.Run(c.name, func(b *testing.B) { benchmarkMMapRingRTT(b, c.version, c.tov) })
	}
}

func benchmarkMMapRingRTT(b *testing.B, version, tov int) {
	b.ReportAllocs()
	veth := testenv.NewVeth(b)
	fd := mmapOpenSocket(b, veth.NSA, veth.A, mmapTestEtherType, false)
	reply := newMMapSender(b, veth.NSA, veth.A, false)
	var replyErr atomic.Value
	ch := mmapTestChannel(b, fd, LinkOptions{EthernetHeader: true}, func(frames []Frame) {
		for i := range frames {
			f := frames[i].Data[0].Data
			binary.BigEndian.PutUint16(f[12:], mmapTestReplyType)
			if _, err := unix.Write(reply.fd, f); err != nil {
				replyErr.Store(err)
			}
		}
	})
	var d dispatcher
	if version < 0 {
		d = newRecvMMsgDispatcher(ch, false)
	} else {
		md, err := newMMapDispatcherConfig(ch, mmapConfig{version: version, retireTOVms: tov})
		if err != nil {
			b.Fatal(err)
		}
		d = md
	}
	mmapRun(b, ch, d)

	// The client: blocking, receives only replies, gives up after 2 s.
	var cfd int
	testenv.Do(b, veth.NSB, func() error {
		ifi, err := net.InterfaceByName(veth.B)
		if err != nil {
			return err
		}
		cfd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(mmapTestReplyType)))
		if err != nil {
			return os.NewSyscallError("socket", err)
		}
		if err := unix.SetsockoptTimeval(cfd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 2}); err != nil {
			return err
		}
		return unix.Bind(cfd, &unix.SockaddrLinklayer{Protocol: htons(mmapTestReplyType), Ifindex: ifi.Index})
	})
	b.Cleanup(func() { unix.Close(cfd) })

	req, buf := testFrame(64, 0), make([]byte, 128)
	var rtts []time.Duration
	seq := uint32(0)
	for b.Loop() {
		seq++
		binary.BigEndian.PutUint32(req[14:], seq)
		t0 := time.Now()
		if _, err := unix.Write(cfd, req); err != nil {
			b.Fatal(err)
		}
		for {
			n, err := unix.Read(cfd, buf)
			if err == unix.EINTR { // the Go runtime's preemption signal
				continue
			}
			if err != nil {
				b.Fatalf("waiting for reply %d: %v (reflector: %v)", seq, err, replyErr.Load())
			}
			if n >= 18 && binary.BigEndian.Uint32(buf[14:]) == seq {
				break
			}
		}
		rtts = append(rtts, time.Since(t0))
	}
	slices.Sort(rtts)
	b.ReportMetric(float64(rtts[len(rtts)/2].Microseconds()), "p50-us")
	b.ReportMetric(float64(rtts[len(rtts)*99/100].Microseconds()), "p99-us")
}
