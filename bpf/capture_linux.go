package bpf

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// CaptureOptions say where and how to capture. Zero values mean defaults.
type CaptureOptions struct {
	// Netns is the interface's namespace ("" the caller's).
	Netns string
	// Iface is the interface to capture on (required). It must have no XDP
	// program: the capture program takes the hook for the capture's
	// duration, attached without pinning so it ends with the process.
	Iface string
	// Mode is the XDP attach mode.
	Mode Mode
	// Snaplen is the bytes kept per frame, at most and by default
	// CaptureMax.
	Snaplen uint32
	// Count stops the capture after that many frames; 0 means until ctx
	// ends.
	Count int
	// Ready, if set, is called once the program is attached.
	Ready func(*Attachment)
}

// Frame is one captured frame. Data is valid only during the callback.
type Frame struct {
	Time    time.Time
	Ifindex uint32
	RxQueue uint32
	// Length is the frame's length on the wire; len(Data) may be less.
	Length int
	Data   []byte
}

// captureHeader is the size of struct capture_event before data.
const captureHeader = 24

// CaptureStats summarise a capture.
type CaptureStats struct {
	Captured int
	// Lost frames did not fit in the ring buffer (they were passed on).
	Lost uint64
}

// CaptureFrames attaches the capture program to an interface and calls fn with
// each frame until ctx ends, opts.Count frames were seen, or fn fails. The
// attachment is removed before Capture returns.
func CaptureFrames(ctx context.Context, opts CaptureOptions, fn func(Frame) error) (CaptureStats, error) {
	var st CaptureStats
	if opts.Iface == "" {
		return st, errors.New("bpf: CaptureOptions.Iface: required")
	}
	switch opts.Mode {
	case ModeAuto, ModeGeneric, ModeDriver:
	default:
		return st, fmt.Errorf("bpf: CaptureOptions.Mode %s: want auto, generic or driver", opts.Mode)
	}
	nsID, err := NetnsID(opts.Netns)
	if err != nil {
		return st, err
	}
	objs, err := Load(Capture, LoadOptions{Snaplen: opts.Snaplen})
	if err != nil {
		return st, err
	}
	a := &Attachment{Program: Capture, Role: RoleMain, Objects: objs}
	defer a.Detach()
	rd, err := ringbuf.NewReader(objs.Events)
	if err != nil {
		return st, fmt.Errorf("bpf: capture ring buffer: %w", err)
	}
	defer rd.Close()
	if err := attachXDPChecked(a, opts.Netns, nsID, opts.Iface, opts.Mode); err != nil {
		return st, err
	}
	if opts.Ready != nil {
		opts.Ready(a)
	}
	// bpf_ktime_get_ns is CLOCK_MONOTONIC; pcap wants wall time.
	var mono unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono); err != nil {
		return st, os.NewSyscallError("clock_gettime", err)
	}
	offset := time.Now().UnixNano() - mono.Nano()

	// Flush, not SetDeadline: SetDeadline waits for the reader's lock,
	// which a ReadInto blocked on an idle ring holds until the next
	// record, so cancelling would hang until traffic came. Flush wakes
	// it, hands over what is in the ring, then returns ErrFlushed.
	stop := context.AfterFunc(ctx, func() { _ = rd.Flush() })
	defer stop()
	var rec ringbuf.Record
	for opts.Count == 0 || st.Captured < opts.Count {
		if err := rd.ReadInto(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrFlushed) || errors.Is(err, os.ErrDeadlineExceeded) || ctx.Err() != nil {
				break
			}
			return st, fmt.Errorf("bpf: read capture ring: %w", err)
		}
		f, ok := parseCaptureEvent(rec.RawSample, offset)
		if !ok {
			continue
		}
		st.Captured++
		if err := fn(f); err != nil {
			return st, err
		}
	}
	if c, err := ReadCounters(objs.Stats); err == nil {
		st.Lost = c.Lost.Packets
	}
	return st, nil
}

// parseCaptureEvent decodes struct capture_event (capture.bpf.c), checking
// the kernel-supplied caplen against the record's real size.
func parseCaptureEvent(b []byte, offset int64) (Frame, bool) {
	if len(b) < captureHeader {
		return Frame{}, false
	}
	ts := binary.NativeEndian.Uint64(b[0:8])
	caplen := int(binary.NativeEndian.Uint32(b[20:24]))
	if caplen > len(b)-captureHeader {
		caplen = len(b) - captureHeader
	}
	return Frame{
		Time:    time.Unix(0, int64(ts)+offset),
		Ifindex: binary.NativeEndian.Uint32(b[8:12]),
		RxQueue: binary.NativeEndian.Uint32(b[12:16]),
		Length:  int(binary.NativeEndian.Uint32(b[16:20])),
		Data:    b[captureHeader : captureHeader+caplen],
	}, true
}

// attachXDPChecked is attachXDP with the checks Attach makes first, so a
// busy hook is reported with its owner.
func attachXDPChecked(a *Attachment, ns string, nsID uint64, ifname string, mode Mode) error {
	err := attachXDP(a, ns, nsID, ifname, mode)
	if errors.Is(err, ErrAlreadyAttached) {
		return fmt.Errorf("%w (sluice captures with its own XDP program, so the interface must have none)", err)
	}
	return err
}
