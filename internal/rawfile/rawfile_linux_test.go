//go:build linux

package rawfile

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"
)

func mustSocketpair(t *testing.T, typ int) (int, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds[0], fds[1]
}

func TestSendRecvMMsg(t *testing.T) {
	a, b := mustSocketpair(t, unix.SOCK_DGRAM)
	payloads := [][]byte{[]byte("one"), []byte("second"), []byte("3")}
	out := make([]unix.Mmsghdr, len(payloads))
	iovs := make([]unix.Iovec, len(payloads))
	for i, p := range payloads {
		iovs[i] = IovecFromBytes(p)
		out[i].Hdr.Iov = &iovs[i]
		out[i].Hdr.SetIovlen(1)
	}
	n, e := SendMMsg(a, out, 0)
	if e != 0 || n != len(payloads) {
		t.Fatalf("SendMMsg = %d, %v; want %d, 0", n, e, len(payloads))
	}

	// Two iovecs per message, the first only 2 bytes long, checks that
	// the kernel scatters across the chain. The third slot has room for
	// 4 bytes only, to see MSG_TRUNC.
	in := make([]unix.Mmsghdr, 4)
	bufs := make([][2][]byte, len(in))
	riovs := make([][2]unix.Iovec, len(in))
	for i := range in {
		bufs[i] = [2][]byte{make([]byte, 2), make([]byte, 16)}
		riovs[i] = [2]unix.Iovec{IovecFromBytes(bufs[i][0]), IovecFromBytes(bufs[i][1])}
		in[i].Hdr.Iov = &riovs[i][0]
		in[i].Hdr.SetIovlen(2)
	}
	riovs[1][1] = IovecFromBytes(bufs[1][1][:2])
	n, e = RecvMMsg(b, in, 0)
	if e != 0 || n != len(payloads) {
		t.Fatalf("RecvMMsg = %d, %v; want %d, 0", n, e, len(payloads))
	}
	for i, p := range payloads {
		got := append(append([]byte{}, bufs[i][0]...), bufs[i][1]...)[:in[i].Len]
		trunc := in[i].Hdr.Flags&unix.MSG_TRUNC != 0
		if i == 1 {
			if !trunc || !bytes.Equal(got, p[:4]) {
				t.Errorf("message 1: got %q trunc=%v, want %q truncated", got, trunc, p[:4])
			}
			continue
		}
		if trunc || !bytes.Equal(got, p) {
			t.Errorf("message %d: got %q trunc=%v, want %q", i, got, trunc, p)
		}
	}
	if n, e := RecvMMsg(b, in, 0); e != unix.EAGAIN {
		t.Errorf("RecvMMsg on an empty socket = %d, %v; want EAGAIN", n, e)
	}
}

func TestReadvWritevAdvance(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	parts := [][]byte{[]byte("abc"), []byte("defg"), []byte("hi")}
	iovs := make([]unix.Iovec, len(parts))
	for i, b := range parts {
		iovs[i] = IovecFromBytes(b)
	}
	// Pretend the first 5 bytes went out already.
	rest := AdvanceIovecs(iovs, 5)
	if len(rest) != 2 || rest[0].Len != 2 {
		t.Fatalf("AdvanceIovecs(5) left %d iovecs, first %d bytes; want 2, 2", len(rest), rest[0].Len)
	}
	if n, e := Writev(p[1], rest); e != 0 || n != 4 {
		t.Fatalf("Writev = %d, %v", n, e)
	}
	if got := AdvanceIovecs(iovs[:0], 3); len(got) != 0 {
		t.Errorf("AdvanceIovecs of nothing = %d iovecs", len(got))
	}
	a, b := make([]byte, 1), make([]byte, 8)
	n, e := Readv(p[0], []unix.Iovec{IovecFromBytes(a), IovecFromBytes(b)})
	if e != 0 || n != 4 || string(a)+string(b[:3]) != "fghi" {
		t.Fatalf("Readv = %d, %v, %q%q", n, e, a, b[:3])
	}
}

func TestWaitStop(t *testing.T) {
	a, _ := mustSocketpair(t, unix.SOCK_DGRAM)
	stop, err := NewStopFD()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(stop)
	if r, e := Wait(a, unix.POLLIN, stop, 10); e != 0 || r != TimedOut {
		t.Fatalf("Wait on a quiet socket = %v, %v; want TimedOut", r, e)
	}
	if r, e := Wait(a, unix.POLLOUT, stop, -1); e != 0 || r != Ready {
		t.Fatalf("Wait POLLOUT = %v, %v; want Ready", r, e)
	}
	if err := Stop(stop); err != nil {
		t.Fatal(err)
	}
	for range 2 { // stays stopped
		if r, e := Wait(a, unix.POLLOUT, stop, -1); e != 0 || r != Stopped {
			t.Fatalf("Wait after Stop = %v, %v; want Stopped", r, e)
		}
	}
}
