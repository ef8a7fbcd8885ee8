//go:build linux

package capture

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/testenv"
)

// These tests capture on veth pairs between namespaces they create, while a
// packet socket in the other namespace sends a known set of frames. Every
// capture is bounded by a context deadline and every send loop by count.

// rig is a veth pair with IPv6 off (so the kernel sends nothing of its own)
// and a sending socket on A.
type rig struct {
	v  *testenv.Veth
	tx int
}

func newRig(t *testing.T) *rig {
	t.Helper()
	testenv.RequireRoot(t)
	v := testenv.NewVeth(t)
	for _, x := range []struct{ ns, dev string }{{v.NSA, v.A}, {v.NSB, v.B}} {
		testenv.Exec(t, x.ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1", "net.ipv6.conf."+x.dev+".disable_ipv6=1")
	}
	tx, err := dataplane.OpenPacketSocket(dataplane.SocketOptions{NetNS: v.NSA, Interface: v.A, SndBufBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(tx) })
	return &rig{v: v, tx: tx}
}

func (r *rig) send(t *testing.T, frames ...[]byte) {
	t.Helper()
	for i, f := range frames {
		for try := 0; ; try++ {
			_, err := unix.Write(r.tx, f)
			if err == nil {
				break
			}
			if (errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ENOBUFS)) && try < 1000 {
				time.Sleep(time.Millisecond)
				continue
			}
			t.Fatalf("send frame %d: %v", i, err)
		}
	}
}

func dataOf(fs []testFrame) [][]byte {
	var out [][]byte
	for _, f := range fs {
		out = append(out, f.data)
	}
	return out
}

// fileFrame is a FileRecord with its data copied.
type fileFrame struct {
	FileRecord
	data []byte
}

func readFrames(t *testing.T, path string) ([]fileFrame, FileInfo) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []fileFrame
	fi, err := ReadFile(f, func(r *FileRecord) error {
		out = append(out, fileFrame{FileRecord: *r, data: bytes.Clone(r.Data)})
		return nil
	})
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return out, fi
}

// capture runs a capture with opts (Output in a temp dir unless set), calls
// send once it is capturing, and returns when Run does: at the count, or
// after stopAfter from the end of send when that is set.
func capture(t *testing.T, opts Options, stopAfter time.Duration, send func()) (string, Stats, error) {
	t.Helper()
	if opts.Output == "" {
		ext := "pcap"
		if opts.Format == FormatPcapNG {
			ext = "pcapng"
		}
		opts.Output = filepath.Join(t.TempDir(), "c."+ext)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ready := make(chan struct{})
	opts.Ready = func() { close(ready) }
	c, err := Open(ctx, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run ended before it was ready: %v", err)
	}
	send()
	if stopAfter > 0 {
		time.Sleep(stopAfter)
		stop()
	}
	select {
	case err = <-done:
	case <-ctx.Done():
		t.Fatal("capture did not end within 20 s")
	}
	return opts.Output, c.Stats(), err
}

// tools checks a capture file with tcpdump -r and tshark -r: both read it
// whole, count n frames, and tshark sees the VLAN ids of the frames.
func tools(t *testing.T, path string, want []testFrame) {
	t.Helper()
	if _, err := exec.LookPath("tcpdump"); err == nil {
		out, err := exec.Command("tcpdump", "-nn", "-e", "-r", path).CombinedOutput()
		if err != nil {
			t.Fatalf("tcpdump -r %s: %v\n%s", path, err, out)
		}
		lines := 0
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, " > ") {
				lines++
			}
		}
		if lines != len(want) {
			t.Errorf("tcpdump -r read %d frames, want %d:\n%s", lines, len(want), out)
		}
	} else {
		testenv.Skip(t, "requires tcpdump on PATH (test.sh installs it)")
	}
	if _, err := exec.LookPath("tshark"); err != nil {
		testenv.Skip(t, "requires tshark on PATH (test.sh installs it)")
		return
	}
	out, err := exec.Command("tshark", "-r", path, "-T", "fields", "-e", "frame.len", "-e", "vlan.id").Output()
	if err != nil {
		t.Fatalf("tshark -r %s: %v", path, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(want) {
		t.Fatalf("tshark -r read %d frames, want %d", len(lines), len(want))
	}
	for i, l := range lines {
		f := strings.Split(l, "\t")
		wantVLAN := ""
		if want[i].vlan >= 0 {
			wantVLAN = strconv.Itoa(want[i].vlan)
		}
		if f[0] != strconv.Itoa(len(want[i].data)) || (len(f) > 1 && f[1] != wantVLAN) || (len(f) == 1 && wantVLAN != "") {
			t.Errorf("tshark frame %d: %q, want length %d vlan %q", i+1, l, len(want[i].data), wantVLAN)
		}
	}
	// tshark's own pcap conversion must give the same bytes.
	conv := path + ".conv.pcap"
	if b, err := exec.Command("editcap", "-F", "pcap", path, conv).CombinedOutput(); err != nil {
		t.Fatalf("editcap: %v\n%s", err, b)
	}
	got, _ := readFrames(t, conv)
	for i := range min(len(got), len(want)) {
		if !bytes.Equal(got[i].data, want[i].data) {
			t.Errorf("frame %d after editcap differs", i)
		}
	}
}

// TestCaptureKnownFrames captures the test frames (TCP, UDP, ICMP, IPv6,
// VLAN-tagged) on the receiving veth in each AF_PACKET way, format and
// precision: the file holds exactly the frames sent, in order, byte for byte
// (tags put back), with their lengths, sane times and metadata, and tcpdump
// and tshark read it.
func TestCaptureKnownFrames(t *testing.T) {
	r := newRig(t)
	want := testFrames()
	for _, via := range []Via{ViaMMap, ViaRecvMMsg} {
		for _, format := range []Format{FormatPcap, FormatPcapNG} {
			for _, prec := range []Precision{Micro, Nano} {
				t.Run(fmt.Sprintf("%v/%v/%v", via, format, prec), func(t *testing.T) {
					start := time.Now()
					path, st, err := capture(t, Options{Interface: r.v.B, NetNS: r.v.NSB, Via: via, Format: format, Precision: prec,
						Count: uint64(len(want))}, 0, func() { r.send(t, dataOf(want)...) })
					if err != nil {
						t.Fatalf("Run: %v", err)
					}
					got, fi := readFrames(t, path)
					checkFrames(t, got, want, start)
					if st.Frames != uint64(len(want)) || st.KernelDrops != 0 {
						t.Errorf("stats %+v", st)
					}
					if fi.Nano != (prec == Nano) {
						t.Errorf("file nano %v", fi.Nano)
					}
					if format == FormatPcapNG {
						for i, g := range got {
							if g.Flags != epbInbound|epbPromiscuous || !g.HasQueue || g.Queue != 0 || !g.HasSluice ||
								g.Mode != via.modeCode() || g.GSOSegments != 1 || g.DropCount != 0 {
								t.Errorf("frame %d metadata %+v", i, g.FileRecord)
							}
						}
						if !fi.HasStats || fi.Delivered != uint64(len(want)) || fi.IfName != r.v.B || !strings.Contains(fi.IfDescription, via.String()) {
							t.Errorf("file info %+v", fi)
						}
					}
					tools(t, path, want)
				})
			}
		}
	}
}

// checkFrames compares a file's frames with those sent.
func checkFrames(t *testing.T, got []fileFrame, want []testFrame, start time.Time) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("file holds %d frames, sent %d", len(got), len(want))
	}
	last := start.UnixNano() - int64(time.Second)
	for i, g := range got {
		if !bytes.Equal(g.data, want[i].data) || g.OrigLen != len(want[i].data) {
			t.Fatalf("frame %d (%s): %d bytes (orig %d) % x\nwant %d bytes % x", i, want[i].name,
				len(g.data), g.OrigLen, g.data[:min(24, len(g.data))], len(want[i].data), want[i].data[:24])
		}
		if g.Time < last || g.Time > time.Now().UnixNano() {
			t.Errorf("frame %d: time %v out of order or range", i, time.Unix(0, g.Time))
		}
		last = g.Time
	}
}

// TestCaptureOutbound captures on the sending side: frames are outbound,
// tags are in the frames already and come out unchanged.
func TestCaptureOutbound(t *testing.T) {
	r := newRig(t)
	want := testFrames()
	path, _, err := capture(t, Options{Interface: r.v.A, NetNS: r.v.NSA, Format: FormatPcapNG, Count: uint64(len(want))}, 0,
		func() { r.send(t, dataOf(want)...) })
	if err != nil {
		t.Fatal(err)
	}
	got, _ := readFrames(t, path)
	checkFrames(t, got, want, time.Now().Add(-time.Minute))
	for i, g := range got {
		if g.Flags != epbOutbound {
			t.Errorf("frame %d: epb_flags %#x, want outbound", i, g.Flags)
		}
	}
}

// TestCaptureXDP captures through the XDP program: received frames, tags
// still in them, queue and mode in the pcapng options.
func TestCaptureXDP(t *testing.T) {
	r := newRig(t)
	want := testFrames()
	path, st, err := capture(t, Options{Interface: r.v.B, NetNS: r.v.NSB, Via: ViaXDP, Format: FormatPcapNG, Count: uint64(len(want))}, 0,
		func() { r.send(t, dataOf(want)...) })
	if err != nil {
		t.Fatal(err)
	}
	got, _ := readFrames(t, path)
	checkFrames(t, got, want, time.Now().Add(-time.Minute))
	for i, g := range got {
		if g.Flags != epbInbound|epbPromiscuous || g.Mode != ViaXDP.modeCode() || !g.HasQueue {
			t.Errorf("frame %d metadata %+v", i, g.FileRecord)
		}
	}
	if st.Received != uint64(len(want)) {
		t.Errorf("stats %+v", st)
	}
	tools(t, path, want)
}

// TestCaptureFilter: a filter keeps exactly the frames it matches, with the
// semantics tcpdump has on a live Linux interface, in every way in.
func TestCaptureFilter(t *testing.T) {
	testenv.RequireTool(t, "tcpdump")
	r := newRig(t)
	all := testFrames()
	for _, c := range []struct {
		expr string
		via  Via
		keep func(testFrame) bool
	}{
		{"ip6", ViaMMap, func(f testFrame) bool { return strings.HasSuffix(f.kind, "6") }},
		{"vlan 100", ViaMMap, func(f testFrame) bool { return f.vlan == 100 }},
		{"udp port 53", ViaRecvMMsg, func(f testFrame) bool { return f.name == "udp4 dns" }},
		{"icmp or icmp6", ViaMMap, func(f testFrame) bool { return strings.HasPrefix(f.kind, "icmp") }},
		// On a live interface the kernel strips the tag before the
		// filter runs, so "tcp" also matches tagged TCP, as with tcpdump
		// -i; "not vlan" tests the tag with an ancillary load.
		{"tcp and not vlan", ViaMMap, func(f testFrame) bool { return strings.HasPrefix(f.kind, "tcp") && f.vlan < 0 }},
		{"tcp", ViaRecvMMsg, func(f testFrame) bool { return strings.HasPrefix(f.kind, "tcp") }},
		// XDP frames keep their tags: savefile semantics, in user space.
		// (vlan last: libpcap shifts the offsets of everything after it.)
		{"udp port 53 or vlan 200", ViaXDP, func(f testFrame) bool { return f.vlan == 200 || f.name == "udp4 dns" }},
	} {
		t.Run(c.via.String()+"/"+c.expr, func(t *testing.T) {
			var want []testFrame
			for _, f := range all {
				if c.keep(f) {
					want = append(want, f)
				}
			}
			path, st, err := capture(t, Options{Interface: r.v.B, NetNS: r.v.NSB, Via: c.via, Filter: c.expr, Format: FormatPcapNG},
				200*time.Millisecond, func() { r.send(t, dataOf(all)...) })
			if err != nil {
				t.Fatal(err)
			}
			got, fi := readFrames(t, path)
			checkFrames(t, got, want, time.Now().Add(-time.Minute))
			if fi.Filter != c.expr {
				t.Errorf("if_filter %q", fi.Filter)
			}
			if c.via == ViaXDP && st.Filtered != uint64(len(all)-len(want)) {
				t.Errorf("user-space filter rejected %d, want %d", st.Filtered, len(all)-len(want))
			}
			if c.via != ViaXDP && st.Received != uint64(len(want)) {
				t.Errorf("kernel accepted %d frames, want %d", st.Received, len(want))
			}
		})
	}
}

// TestCaptureInvalidFilter: a filter that does not compile is an error from
// Open, before any socket or file exists.
func TestCaptureInvalidFilter(t *testing.T) {
	testenv.RequireTool(t, "tcpdump")
	r := newRig(t)
	out := filepath.Join(t.TempDir(), "never.pcap")
	_, err := Open(context.Background(), Options{Interface: r.v.B, NetNS: r.v.NSB, Output: out, Filter: "tcp and and udp"})
	if err == nil || !strings.Contains(err.Error(), "invalid filter") || !strings.Contains(err.Error(), "syntax error") {
		t.Errorf("Open with a bad filter: %v", err)
	}
	if _, serr := os.Stat(out); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("the output file exists after a failed Open (%v)", serr)
	}
	_, err = Open(context.Background(), Options{Interface: r.v.B, NetNS: r.v.NSB, Output: out, Filter: "tcp", TcpdumpPath: "/nonexistent/tcpdump"})
	if !errors.Is(err, ErrNoTcpdump) {
		t.Errorf("Open without tcpdump: %v, want ErrNoTcpdump", err)
	}
	_, err = Open(context.Background(), Options{Interface: "nope0", NetNS: r.v.NSB, Output: out})
	if err == nil || !strings.Contains(err.Error(), "nope0") {
		t.Errorf("Open on a missing interface: %v", err)
	}
}

// TestCaptureCount: -c stops at exactly the count, with the first frames.
func TestCaptureCount(t *testing.T) {
	r := newRig(t)
	all := testFrames()
	for _, via := range []Via{ViaMMap, ViaRecvMMsg, ViaXDP} {
		t.Run(via.String(), func(t *testing.T) {
			path, st, err := capture(t, Options{Interface: r.v.B, NetNS: r.v.NSB, Via: via, Count: 10}, 0, func() { r.send(t, dataOf(all)...) })
			if err != nil {
				t.Fatal(err)
			}
			got, _ := readFrames(t, path)
			checkFrames(t, got, all[:10], time.Now().Add(-time.Minute))
			if st.Frames != 10 {
				t.Errorf("stats say %d frames", st.Frames)
			}
		})
	}
}

// TestCaptureSnaplen: frames are cut to the snap length (in the kernel, by
// the filter's return value) and keep their wire length.
func TestCaptureSnaplen(t *testing.T) {
	r := newRig(t)
	all := testFrames()
	for _, via := range []Via{ViaMMap, ViaRecvMMsg, ViaXDP} {
		t.Run(via.String(), func(t *testing.T) {
			path, _, err := capture(t, Options{Interface: r.v.B, NetNS: r.v.NSB, Via: via, Snaplen: 64, Count: uint64(len(all))}, 0,
				func() { r.send(t, dataOf(all)...) })
			if err != nil {
				t.Fatal(err)
			}
			got, fi := readFrames(t, path)
			if fi.Snaplen != 64 || len(got) != len(all) {
				t.Fatalf("snaplen %d, %d frames", fi.Snaplen, len(got))
			}
			for i, g := range got {
				w := all[i].data
				if !bytes.Equal(g.data, w[:min(64, len(w))]) || g.OrigLen != len(w) {
					t.Errorf("frame %d: %d bytes, orig %d; want %d of %d", i, len(g.data), g.OrigLen, min(64, len(w)), len(w))
				}
			}
		})
	}
}

// udpFlowFrame is a UDP frame of flow (its source port) carrying seq.
func udpFlowFrame(flow, seq int) []byte {
	p := make([]byte, 32)
	binary.BigEndian.PutUint32(p, uint32(flow))
	binary.BigEndian.PutUint32(p[4:], uint32(seq))
	return frame(-1, false, &layers.UDP{SrcPort: layers.UDPPort(20000 + flow), DstPort: 9}, p)
}

// TestCaptureChannels: with two channels in a fanout group every frame is
// captured once, each flow in order and on one channel, and both channels
// carry flows.
func TestCaptureChannels(t *testing.T) {
	r := newRig(t)
	const flows, per = 16, 40
	var all [][]byte
	for s := range per {
		for f := range flows {
			all = append(all, udpFlowFrame(f, s))
		}
	}
	for _, via := range []Via{ViaMMap, ViaRecvMMsg} {
		t.Run(via.String(), func(t *testing.T) {
			path, _, err := capture(t, Options{Interface: r.v.B, NetNS: r.v.NSB, Via: via, Channels: 2, Format: FormatPcapNG, Count: uint64(len(all))}, 0,
				func() { r.send(t, all...) })
			if err != nil {
				t.Fatal(err)
			}
			got, fi := readFrames(t, path)
			if len(got) != len(all) {
				t.Fatalf("%d frames, sent %d", len(got), len(all))
			}
			next := make([]int, flows)
			chanOf := map[int]uint32{}
			used := map[uint32]int{}
			for _, g := range got {
				p := g.data[42:]
				flow, seq := int(binary.BigEndian.Uint32(p)), int(binary.BigEndian.Uint32(p[4:]))
				if flow >= flows || seq != next[flow] {
					t.Fatalf("flow %d: seq %d, want %d", flow, seq, next[flow])
				}
				next[flow]++
				if c, ok := chanOf[flow]; ok && c != g.Queue {
					t.Errorf("flow %d on channels %d and %d", flow, c, g.Queue)
				}
				chanOf[flow] = g.Queue
				used[g.Queue]++
			}
			if len(used) != 2 {
				t.Errorf("frames per channel %v: want both channels used", used)
			}
			if !strings.Contains(fi.IfDescription, "2 channels") {
				t.Errorf("if_description %q", fi.IfDescription)
			}
		})
	}
}

// TestCaptureDrops slows the writer down until a small ring overflows: the
// kernel's drops are counted, reported per frame (epb_dropcount) on the
// frames after them and in the statistics block, and frames + drops add up
// to what was sent.
func TestCaptureDrops(t *testing.T) {
	r := newRig(t)
	const burst, after = 2000, 5
	var mu sync.Mutex
	slow := true
	path, st, err := capture(t, Options{
		Interface: r.v.B, NetNS: r.v.NSB, Format: FormatPcapNG, BufferBytes: 64 << 10,
		OnFrame: func(FrameInfo) {
			mu.Lock()
			s := slow
			mu.Unlock()
			if s {
				time.Sleep(100 * time.Microsecond)
			}
		},
	}, 300*time.Millisecond, func() {
		for i := range burst {
			r.send(t, udpFlowFrame(1, i))
		}
		time.Sleep(700 * time.Millisecond)
		mu.Lock()
		slow = false
		mu.Unlock()
		for i := range after {
			r.send(t, udpFlowFrame(2, i))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	got, fi := readFrames(t, path)
	var perFrame uint64
	for _, g := range got {
		perFrame += g.DropCount
	}
	if st.KernelDrops == 0 {
		t.Fatalf("no drops (stats %+v): the ring did not overflow", st)
	}
	if uint64(len(got))+st.KernelDrops != burst+after || st.Received != burst+after {
		t.Errorf("%d frames + %d drops, %d received; sent %d", len(got), st.KernelDrops, st.Received, burst+after)
	}
	if perFrame != st.KernelDrops || fi.OSDrop != st.KernelDrops || fi.Accepted != st.Received {
		t.Errorf("epb_dropcount sum %d, ISB osdrop %d accepted %d; stats %+v", perFrame, fi.OSDrop, fi.Accepted, st)
	}
}

// TestCaptureGSO: a GSO super-frame crosses the veth whole and is recorded
// with the number of segments it stands for.
func TestCaptureGSO(t *testing.T) {
	r := newRig(t)
	tx, err := dataplane.OpenPacketSocket(dataplane.SocketOptions{NetNS: r.v.NSA, Interface: r.v.A, VnetHdr: true})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(tx)
	payload := make([]byte, 30000)
	f := frame(-1, false, &layers.TCP{SrcPort: 40000, DstPort: 5201, Seq: 1, ACK: true, PSH: true, Window: 512}, payload)
	vh := dataplane.VnetHdr{Flags: dataplane.VnetFlagNeedsCsum, GSOType: dataplane.VnetGSOTCPv4, HdrLen: 54, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}
	b := make([]byte, dataplane.VnetHdrLen+len(f))
	vh.Encode(b)
	copy(b[dataplane.VnetHdrLen:], f)
	for _, via := range []Via{ViaMMap, ViaRecvMMsg} {
		t.Run(via.String(), func(t *testing.T) {
			path, _, err := capture(t, Options{Interface: r.v.B, NetNS: r.v.NSB, Via: via, Format: FormatPcapNG, Count: 1}, 0, func() {
				if _, err := unix.Write(tx, b); err != nil {
					t.Fatalf("send GSO frame: %v", err)
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			got, _ := readFrames(t, path)
			if len(got) != 1 || got[0].OrigLen != len(f) || got[0].GSOSegments != (30000+1447)/1448 {
				t.Fatalf("got %d frames: %+v", len(got), got)
			}
		})
	}
}

// TestCaptureInterfaceGone removes the interface mid-capture: Run ends with
// an error that says so and the file is complete.
func TestCaptureInterfaceGone(t *testing.T) {
	for _, via := range []Via{ViaMMap, ViaRecvMMsg, ViaXDP} {
		t.Run(via.String(), func(t *testing.T) {
			r := newRig(t)
			want := testFrames()
			path, st, err := capture(t, Options{Interface: r.v.B, NetNS: r.v.NSB, Via: via, Format: FormatPcapNG}, 0, func() {
				r.send(t, dataOf(want)...)
				time.Sleep(100 * time.Millisecond)
				testenv.IP(t, r.v.NSA, "link", "del", r.v.A)
			})
			if !errors.Is(err, dataplane.ErrDeviceGone) || !strings.Contains(err.Error(), "is gone") {
				t.Fatalf("Run after link del: %v", err)
			}
			got, fi := readFrames(t, path)
			checkFrames(t, got, want, time.Now().Add(-time.Minute))
			if !fi.HasStats || st.Frames != uint64(len(want)) {
				t.Errorf("file stats %v, stats %+v", fi.HasStats, st)
			}
		})
	}
}

// TestCaptureDiskFull writes to a small tmpfs until it is full: Run ends
// with a WriteError and the file holds whole frames only, which tcpdump
// reads.
func TestCaptureDiskFull(t *testing.T) {
	r := newRig(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		testenv.Skip(t, fmt.Sprintf("mount a 64 KiB tmpfs: %v", err))
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	for _, format := range []Format{FormatPcap, FormatPcapNG} {
		t.Run(format.String(), func(t *testing.T) {
			out := filepath.Join(dir, "full."+format.String())
			var frames [][]byte
			for i := range 200 {
				frames = append(frames, udpFlowFrame(i%4, i))
				frames[i] = append(frames[i], make([]byte, 600)...)
			}
			_, _, err := capture(t, Options{Interface: r.v.B, NetNS: r.v.NSB, Format: format, Output: out}, 0, func() {
				r.send(t, frames...)
			})
			var we *WriteError
			if !errors.As(err, &we) || !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("Run on a full disk: %v", err)
			}
			got, _ := readFrames(t, out)
			if uint64(len(got)) != we.Frames || we.Frames == 0 {
				t.Errorf("file holds %d frames, error says %d", len(got), we.Frames)
			}
			for i, g := range got {
				if !bytes.Equal(g.data, frames[i]) {
					t.Fatalf("frame %d differs", i)
				}
			}
			if b, err := exec.Command("tcpdump", "-r", out).CombinedOutput(); err != nil {
				t.Errorf("tcpdump -r on the cut file: %v\n%s", err, b)
			}
			os.Remove(out)
		})
	}
}

// TestCaptureRotationLive rotates by size while frames arrive: a ring of
// three files, each complete.
func TestCaptureRotationLive(t *testing.T) {
	r := newRig(t)
	base := filepath.Join(t.TempDir(), "r.pcapng")
	var frames [][]byte
	for i := range 300 {
		frames = append(frames, udpFlowFrame(0, i))
	}
	_, st, err := capture(t, Options{Interface: r.v.B, NetNS: r.v.NSB, Format: FormatPcapNG, Output: base, FileSize: 4000, FileCount: 3,
		Count: uint64(len(frames))}, 0, func() {
		for _, f := range frames {
			r.send(t, f)
			time.Sleep(200 * time.Microsecond)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if st.Files <= 3 {
		t.Errorf("%d files opened, want the ring of 3 reused", st.Files)
	}
	for i := range 3 {
		got, fi := readFrames(t, fmt.Sprintf("%s%d", base, i))
		if len(got) == 0 || !fi.HasStats {
			t.Errorf("file %d: %d frames, statistics block %v", i, len(got), fi.HasStats)
		}
	}
}
