package capture

import (
	"strings"
	"testing"
	"time"

	"github.com/sluicenet/sluice/dataplane"
)

func TestHeadersLen(t *testing.T) {
	want := map[string]int{
		"tcp4 syn": 54, "tcp4 data": 54, "udp4 dns": 42, "icmp4 echo": 0, "udp6": 62,
		"tcp6": 74, "icmp6 echo": 0, "vlan100 udp4": 46, "vlan200 tcp4": 58,
	}
	for _, f := range testFrames() {
		if got := headersLen(f.data); got != want[f.name] {
			t.Errorf("%s: headersLen %d, want %d", f.name, got, want[f.name])
		}
	}
	for _, short := range [][]byte{nil, make([]byte, 13), testFrames()[0].data[:40]} {
		if got := headersLen(short); got != 0 {
			t.Errorf("headersLen of %d bytes = %d, want 0", len(short), got)
		}
	}
}

func TestGSOSegmentCount(t *testing.T) {
	data := testFrames()[1].data // TCP, 54 bytes of headers
	v := dataplane.VnetHdr{GSOType: dataplane.VnetGSOTCPv4, GSOSize: 1448, HdrLen: 9999}
	if n := gsoSegments(v, data, 54+10*1448); n != 10 {
		t.Errorf("gsoSegments = %d, want 10 (headers from the frame, not hdr_len)", n)
	}
	if n := gsoSegments(dataplane.VnetHdr{}, data, 1500); n != 1 {
		t.Errorf("gsoSegments of a plain frame = %d, want 1", n)
	}
	v.HdrLen = 66
	if n := gsoSegments(v, []byte{1, 2, 3}, 66+1448+1); n != 2 {
		t.Errorf("gsoSegments of an unparsable frame = %d, want 2 (from hdr_len)", n)
	}
}

// TestSummary checks -v's lines for each kind of test frame.
func TestSummary(t *testing.T) {
	want := map[string]string{
		"tcp4 syn":     "IP 192.0.2.1.40000 > 192.0.2.2.80: Flags [S], seq 1000",
		"udp4 dns":     "IP 192.0.2.1.5353 > 192.0.2.2.53: UDP, length 40",
		"icmp4 echo":   "IP 192.0.2.1 > 192.0.2.2: ICMP EchoRequest, id 7, seq 0, length 64",
		"udp6":         "IP6 2001:db8::1.40001 > 2001:db8::2.9: UDP, length 100",
		"icmp6 echo":   "IP6 2001:db8::1 > 2001:db8::2: ICMP6 EchoRequest",
		"vlan100 udp4": "vlan 100, p 3, IP 192.0.2.1.6000 > 192.0.2.2.7000: UDP, length 80",
	}
	ts := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.Local).UnixNano()
	for _, f := range testFrames()[:9] {
		line := Summary(FrameInfo{Data: f.data, WireLen: len(f.data), Time: ts, Channel: 1, GSOSegments: 3}, false)
		if !strings.HasPrefix(line, "03:04:05.000006 In  ch1 ") || !strings.HasSuffix(line, "(GSO, 3 segments)") {
			t.Errorf("%s: %q: wrong time, direction, channel or GSO note", f.name, line)
		}
		if w, ok := want[f.name]; ok && !strings.Contains(line, w) {
			t.Errorf("%s: %q does not contain %q", f.name, line, w)
		}
	}
	if line := Summary(FrameInfo{Data: []byte{1, 2, 3}, WireLen: 3, Outbound: true}, true); !strings.Contains(line, " Out ") || !strings.Contains(line, "length 3") {
		t.Errorf("garbage frame: %q", line)
	}
}

func TestOptionsValidate(t *testing.T) {
	ok := Options{Interface: "vb", Output: "x.pcap"}
	for name, c := range map[string]struct {
		o    Options
		want string // "" valid
	}{
		"defaults":         {ok, ""},
		"no interface":     {Options{Output: "x"}, "-i"},
		"no output":        {Options{Interface: "vb"}, "-w"},
		"xdp snaplen":      {Options{Interface: "vb", Output: "x", Via: ViaXDP, Snaplen: 9000}, "--via xdp"},
		"xdp channels":     {Options{Interface: "vb", Output: "x", Via: ViaXDP, Channels: 2}, "--channels"},
		"channels":         {Options{Interface: "vb", Output: "x", Channels: 65}, "--channels"},
		"W alone":          {Options{Interface: "vb", Output: "x", FileCount: 3}, "-W"},
		"rotate to stdout": {Options{Interface: "vb", Output: "-", Stdout: &strings.Builder{}, FileSize: 10}, "stdout"},
		"G sub-second":     {Options{Interface: "vb", Output: "x", RotateEvery: time.Millisecond}, "-G"},
		"small buffer":     {Options{Interface: "vb", Output: "x", BufferBytes: 1000}, "-B"},
		"snaplen":          {Options{Interface: "vb", Output: "x", Snaplen: -1}, "-s"},
	} {
		err := c.o.withDefaults().validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: error %v, want one naming %q", name, err, c.want)
		}
	}
	if o := (Options{Via: ViaXDP}).withDefaults(); o.Snaplen != XDPSnaplen {
		t.Errorf("xdp default snaplen %d", o.Snaplen)
	}
	var v Via
	var f Format
	var p Precision
	for _, s := range []string{"mmap", "recvmmsg", "xdp"} {
		if err := v.Set(s); err != nil || v.String() != s {
			t.Errorf("Via.Set(%q): %v %v", s, err, v)
		}
	}
	for _, s := range []string{"pcap", "pcapng"} {
		if err := f.Set(s); err != nil || f.String() != s {
			t.Errorf("Format.Set(%q): %v %v", s, err, f)
		}
	}
	for _, s := range []string{"micro", "nano"} {
		if err := p.Set(s); err != nil || p.String() != s {
			t.Errorf("Precision.Set(%q): %v %v", s, err, p)
		}
	}
	if v.Set("readv") == nil || f.Set("json") == nil || p.Set("milli") == nil {
		t.Error("an unknown value was accepted")
	}
}
