package capture

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tcpdump -ddd -r - 'vlan and tcp' for a savefile, and tcpdump -ddd -i vb
// -s 100 'vlan and tcp' on Linux 6.18 (libpcap 1.10.3): the second tests the
// tag with the kernel's ancillary loads (SKF_AD_VLAN_TAG_PRESENT).
const (
	dddVLANTCPDead = `16
40 0 0 12
21 2 0 33024
21 1 0 34984
21 0 11 37120
40 0 0 16
21 0 2 2048
48 0 0 27
21 6 7 6
21 0 6 34525
48 0 0 24
21 3 0 6
21 0 3 44
48 0 0 58
21 0 1 6
6 0 0 262144
6 0 0 0
`
	dddVLANTCPLive = `28
0 0 0 0
2 0 0 0
2 0 0 1
48 0 0 4294963248
21 7 0 1
0 0 0 4
2 0 0 0
2 0 0 1
40 0 0 12
21 2 0 33024
21 1 0 34984
21 0 15 37120
97 0 0 1
72 0 0 12
21 0 3 2048
97 0 0 0
80 0 0 23
21 8 9 6
21 0 8 34525
97 0 0 0
80 0 0 20
21 4 0 6
21 0 4 44
97 0 0 0
80 0 0 54
21 0 1 6
6 0 0 100
6 0 0 0
`
)

func mustDDD(t *testing.T, s string) Program {
	t.Helper()
	p, err := ParseDDD(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseDDD(t *testing.T) {
	p := mustDDD(t, dddVLANTCPDead)
	if len(p) != 16 || p[1] != (Insn{Op: 21, Jt: 2, K: 33024}) {
		t.Errorf("parsed %v", p)
	}
	if p.String() != dddVLANTCPDead {
		t.Errorf("String() does not give the input back:\n%s", p.String())
	}
	for name, bad := range map[string]string{
		"empty":            "",
		"count mismatch":   "2\n6 0 0 1\n",
		"not numbers":      "1\n6 0 0 x\n",
		"short line":       "1\n6 0 0\n",
		"jump out":         "2\n21 5 0 1\n6 0 0 0\n",
		"ja out":           "2\n5 0 0 7\n6 0 0 0\n",
		"no return":        "1\n40 0 0 12\n",
		"scratch":          "2\n96 0 0 16\n6 0 0 0\n",
		"jt too wide":      "1\n6 300 0 0\n",
		"count too large":  "5000\n",
		"negative":         "-1\n",
		"k beyond 32 bits": "1\n6 0 0 4294967296\n",
	} {
		if _, err := ParseDDD(bad); err == nil {
			t.Errorf("%s: ParseDDD accepted %q", name, bad)
		}
	}
}

// TestProgramRun runs tcpdump's programs for 'vlan and tcp' on the test
// frames: the savefile program on frames with their tags, the live one on
// frames the kernel untagged, with the tag as ancillary data.
func TestProgramRun(t *testing.T) {
	dead, live := mustDDD(t, dddVLANTCPDead), mustDDD(t, dddVLANTCPLive)
	for _, f := range testFrames() {
		want := f.vlan >= 0 && f.kind == "tcp"
		if got := dead.Run(f.data, Aux{}) != 0; got != want {
			t.Errorf("savefile program on %s: %v, want %v", f.name, got, want)
		}
		data, tag := untag(f.data)
		aux := Aux{HasVLAN: tag != 0, VLANTCI: uint16(tag), VLANTPID: uint16(tag >> 16)}
		r := live.Run(data, aux)
		if (r != 0) != want || (want && r != 100) {
			t.Errorf("live program on %s: %d, want match %v returning the snap length 100", f.name, r, want)
		}
	}
	if r := snapProgram(96).Run(nil, Aux{}); r != 96 {
		t.Errorf("snap program returned %d", r)
	}
}

// TestProgramRunMatchesTcpdump compiles expressions with tcpdump and checks
// that Run keeps exactly the frames tcpdump -r keeps from a file of the test
// frames: the interpreter agrees with libpcap's.
func TestProgramRunMatchesTcpdump(t *testing.T) {
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("needs tcpdump on PATH (test.sh installs it)")
	}
	fs := testFrames()
	dir := t.TempDir()
	in := filepath.Join(dir, "in.pcap")
	var out bytes.Buffer
	s := newSink(sinkConfig{output: "-", stdout: &out}, newEncoder(FormatPcap, DefaultSnaplen, false, ViaMMap))
	_ = s.open(time.Now())
	for i, f := range fs {
		r := record{sec: uint32(i), wireLen: len(f.data), data: f.data}
		if err := s.write(&r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.closeFile(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(in, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, expr := range []string{
		"tcp", "udp", "icmp", "ip6", "icmp6", "vlan", "vlan 100", "vlan and udp",
		"tcp[tcpflags] & tcp-syn != 0", "udp port 53", "host 2001:db8::2 and tcp", "greater 500", "ether dst 02:53:4c:00:00:02 and not ip6",
	} {
		p, err := compileDead(context.Background(), "tcpdump", expr, DefaultSnaplen)
		if err != nil {
			t.Fatalf("compile %q: %v", expr, err)
		}
		kept := filepath.Join(dir, "kept.pcap")
		if b, err := exec.Command("tcpdump", "-r", in, "-w", kept, expr).CombinedOutput(); err != nil {
			t.Fatalf("tcpdump -r %q: %v\n%s", expr, err, b)
		}
		b, err := os.ReadFile(kept)
		if err != nil {
			t.Fatal(err)
		}
		var want []int // the seconds stamp is the frame's index
		if _, err := ReadFile(bytes.NewReader(b), func(r *FileRecord) error {
			want = append(want, int(r.Time/1e9))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		var got []int
		for i, f := range fs {
			if p.Run(f.data, Aux{}) != 0 {
				got = append(got, i)
			}
		}
		if !equalInts(got, want) {
			t.Errorf("%q: Run keeps %v, tcpdump keeps %v", expr, got, want)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestCompileErrors(t *testing.T) {
	if _, err := compileDead(context.Background(), "no-such-tcpdump-here", "tcp", 100); err != ErrNoTcpdump {
		t.Errorf("compile without tcpdump = %v, want ErrNoTcpdump", err)
	}
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("needs tcpdump on PATH")
	}
	_, err := compileDead(context.Background(), "tcpdump", "tcp and and", 100)
	if err == nil || !strings.Contains(err.Error(), "syntax error") {
		t.Errorf("compile 'tcp and and' = %v, want tcpdump's syntax error", err)
	}
	p, err := compileDead(context.Background(), "tcpdump", "udp", 1234)
	if err != nil {
		t.Fatal(err)
	}
	if last := p[len(p)-2]; last.Op != bpfRet|bpfK || last.K != 1234 {
		t.Errorf("udp with -s 1234: accepting return is %+v, want ret #1234", last)
	}
}

// FuzzProgramRun runs arbitrary valid programs on arbitrary frames: Run
// must not panic or loop.
func FuzzProgramRun(f *testing.F) {
	f.Add([]byte(mustDDDBytes(dddVLANTCPLive)), testFrames()[7].data, uint16(100), true)
	f.Add([]byte(mustDDDBytes(dddVLANTCPDead)), testFrames()[0].data, uint16(0), false)
	f.Fuzz(func(t *testing.T, code, pkt []byte, tci uint16, vlan bool) {
		var p Program
		for len(code) >= 8 && len(p) < 64 {
			p = append(p, Insn{Op: binary.LittleEndian.Uint16(code), Jt: code[2], Jf: code[3], K: binary.LittleEndian.Uint32(code[4:])})
			code = code[8:]
		}
		if p.validate() != nil {
			return
		}
		p.Run(pkt, Aux{VLANTCI: tci, HasVLAN: vlan})
	})
}

// mustDDDBytes encodes a -ddd program as the fuzzer's instruction bytes.
func mustDDDBytes(s string) string {
	p, err := ParseDDD(s)
	if err != nil {
		panic(err)
	}
	var b []byte
	for _, in := range p {
		b = binary.LittleEndian.AppendUint16(b, in.Op)
		b = append(b, in.Jt, in.Jf)
		b = binary.LittleEndian.AppendUint32(b, in.K)
	}
	return string(b)
}
