//go:build linux

package capture

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/rawfile"
)

const (
	// recvBatch is the frames per recvmmsg(2): more than the dataplane's 8
	// because a capture's consumer is a memory copy, not a stack.
	recvBatch = 32
	// recvBufMax bounds each frame buffer: the largest GSO super-frame
	// without BIG TCP plus room; a longer frame is cut and keeps its wire
	// length (from PACKET_AUXDATA).
	recvBufMax = 65536 + 1024
	// sockaddrLLLen is sizeof(struct sockaddr_ll).
	sockaddrLLLen = 20
	// recvCtrlLen holds the two control messages each frame brings:
	// PACKET_AUXDATA (CMSG_SPACE(20) = 40) and SCM_TIMESTAMPNS
	// (CMSG_SPACE(16) = 32), with room to spare.
	recvCtrlLen = 128
	// tpacketAuxdataLen is sizeof(struct tpacket_auxdata).
	tpacketAuxdataLen = 20
)

// recvFrame is one frame read by recvmmsg, with its metadata. data aliases
// the reader's buffer until the next read.
type recvFrame struct {
	data      []byte
	wireLen   int
	sec, nsec uint32
	status    uint32
	pktType   uint8
	tci, tpid uint16
	hasVLAN   bool
	vnet      dataplane.VnetHdr
	hasVnet   bool
}

// recvReader reads one AF_PACKET socket with recvmmsg, taking each frame's
// direction from its address, and its wire length, VLAN tag and timestamp
// from control messages. Single goroutine.
type recvReader struct {
	fd int
	// file is a duplicate of fd in the Go runtime's netpoller, and rc its
	// RawConn: the reader waits there, as dataplane's RingReader does and
	// for the same reason (no system call blocking a P).
	file    *os.File
	rc      syscall.RawConn
	stopped atomic.Bool
	vnetLen int
	bufSize int // per frame, including vnetLen
	buf     []byte
	names   []byte // batch × sockaddr_ll
	ctrl    []byte // batch × recvCtrlLen
	iovs    []unix.Iovec
	msgs    []unix.Mmsghdr
	frames  []recvFrame
	down    bool // the socket reported ENETDOWN and nothing came since
}

// newRecvReader prepares fd (PACKET_AUXDATA, SO_TIMESTAMPNS) and the
// buffers for frames of up to snaplen bytes.
func newRecvReader(fd, snaplen, vnetLen int) (*recvReader, error) {
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
		return nil, os.NewSyscallError("setsockopt PACKET_AUXDATA", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		return nil, os.NewSyscallError("setsockopt SO_TIMESTAMPNS", err)
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err)
	}
	file := os.NewFile(uintptr(dup), fmt.Sprintf("packet socket %d", fd))
	rc, err := file.SyscallConn()
	if err == nil {
		err = file.SetReadDeadline(time.Time{})
	}
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("packet socket %d not pollable: %w", fd, err)
	}
	r := &recvReader{fd: fd, file: file, rc: rc, vnetLen: vnetLen, bufSize: vnetLen + min(snaplen, recvBufMax)}
	r.buf = make([]byte, recvBatch*r.bufSize)
	r.names = make([]byte, recvBatch*sockaddrLLLen)
	r.ctrl = make([]byte, recvBatch*recvCtrlLen)
	r.iovs = make([]unix.Iovec, recvBatch)
	r.msgs = make([]unix.Mmsghdr, recvBatch)
	r.frames = make([]recvFrame, 0, recvBatch)
	for i := range r.iovs {
		r.iovs[i] = rawfile.IovecFromBytes(r.buf[i*r.bufSize : (i+1)*r.bufSize])
	}
	return r, nil
}

// stop makes a waiting read return dataplane.ErrClosed. Safe from any
// goroutine.
func (r *recvReader) stop() error {
	if r.stopped.Swap(true) {
		return nil
	}
	return r.file.SetReadDeadline(time.Unix(1, 0))
}

func (r *recvReader) close() { r.file.Close() }

// setDeadline sets the wait's deadline unless stop was called (see
// dataplane's RingReader.setDeadline).
func (r *recvReader) setDeadline(t time.Time) {
	if r.stopped.Load() {
		return
	}
	_ = r.file.SetReadDeadline(t)
	if r.stopped.Load() {
		_ = r.file.SetReadDeadline(time.Unix(1, 0))
	}
}

// recv reads one batch without waiting.
func (r *recvReader) recv() (int, unix.Errno) {
	for i := range r.msgs {
		h := &r.msgs[i].Hdr
		*h = unix.Msghdr{}
		h.Name = &r.names[i*sockaddrLLLen]
		h.Namelen = sockaddrLLLen
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
		h.Control = &r.ctrl[i*recvCtrlLen]
		h.SetControllen(recvCtrlLen)
		r.msgs[i].Len = 0
	}
	return rawfile.RecvMMsg(r.fd, r.msgs, 0)
}

// read reads one batch and hands it to fn; the frames' data is valid during
// the call. With wait it blocks until frames arrive, stop is called or the
// device goes; without, it returns 0 when nothing is queued.
func (r *recvReader) read(wait bool, fn func([]recvFrame) error) (int, error) {
	for {
		var (
			n int
			e unix.Errno
		)
		if wait {
			err := r.rc.Read(func(uintptr) bool {
				n, e = r.recv()
				return e != unix.EAGAIN && !(e == 0 && n == 0)
			})
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if r.stopped.Load() {
					return 0, dataplane.ErrClosed
				}
				if deviceGone(r.fd) {
					return 0, fmt.Errorf("capture: recvmmsg (fd %d): %w", r.fd, dataplane.ErrDeviceGone)
				}
				r.setDeadline(time.Now().Add(200 * time.Millisecond))
				continue
			}
			if err != nil {
				return 0, fmt.Errorf("capture: wait (fd %d): %w", r.fd, err)
			}
		} else {
			n, e = r.recv()
		}
		switch {
		case e == 0 && n > 0:
			if r.down {
				r.down = false
				r.setDeadline(time.Time{})
			}
			return n, fn(r.parse(n))
		case e == 0, e == unix.EAGAIN:
			if !wait {
				return 0, nil
			}
		case e == unix.EINTR:
		case e == unix.ENETDOWN:
			// Down or removed: the kernel says ENETDOWN for both;
			// see dataplane's RingReader. Look at the device again
			// in a while unless frames come.
			r.down = true
			if deviceGone(r.fd) {
				return 0, fmt.Errorf("capture: recvmmsg (fd %d): %w", r.fd, dataplane.ErrDeviceGone)
			}
			if !wait {
				return 0, nil
			}
			r.setDeadline(time.Now().Add(200 * time.Millisecond))
		default:
			return 0, fmt.Errorf("capture: recvmmsg (fd %d): %w", r.fd, os.NewSyscallError("recvmmsg", e))
		}
	}
}

// parse turns the first n messages into frames.
func (r *recvReader) parse(n int) []recvFrame {
	fs := r.frames[:0]
	for i := range n {
		m := &r.msgs[i]
		got := min(int(m.Len), r.bufSize)
		if got < r.vnetLen {
			continue
		}
		b := r.buf[i*r.bufSize : i*r.bufSize+got]
		f := recvFrame{data: b[r.vnetLen:], wireLen: got - r.vnetLen}
		if r.vnetLen > 0 {
			if vh, err := dataplane.ParseVnetHdr(b); err == nil {
				f.vnet, f.hasVnet = vh, true
			}
		}
		if int(m.Hdr.Namelen) >= 11 {
			f.pktType = r.names[i*sockaddrLLLen+10]
		}
		parseCmsgs(r.ctrl[i*recvCtrlLen:i*recvCtrlLen+min(int(m.Hdr.Controllen), recvCtrlLen)], &f)
		fs = append(fs, f)
	}
	r.frames = fs
	return fs
}

// parseCmsgs reads PACKET_AUXDATA and SCM_TIMESTAMPNS out of a control
// buffer (struct cmsghdr: 8-byte length, level, type, data; each message
// aligned to 8 bytes on 64-bit).
func parseCmsgs(b []byte, f *recvFrame) {
	for len(b) >= unix.SizeofCmsghdr {
		l := int(nativeEndian.Uint64(b[0:]))
		level := int32(nativeEndian.Uint32(b[8:]))
		typ := int32(nativeEndian.Uint32(b[12:]))
		if l < unix.SizeofCmsghdr || l > len(b) {
			return
		}
		data := b[unix.SizeofCmsghdr:l]
		switch {
		case level == unix.SOL_PACKET && typ == unix.PACKET_AUXDATA && len(data) >= tpacketAuxdataLen:
			f.status = nativeEndian.Uint32(data[0:])
			f.wireLen = int(nativeEndian.Uint32(data[4:]))
			tci := nativeEndian.Uint16(data[16:])
			if f.status&dataplane.TPStatusVLANValid != 0 || tci != 0 {
				f.hasVLAN, f.tci = true, tci
				if f.status&dataplane.TPStatusVLANTPIDValid != 0 {
					f.tpid = nativeEndian.Uint16(data[18:])
				}
			}
		case level == unix.SOL_SOCKET && typ == unix.SO_TIMESTAMPNS && len(data) >= 16:
			f.sec = uint32(nativeEndian.Uint64(data[0:]))
			f.nsec = uint32(nativeEndian.Uint64(data[8:]))
		}
		b = b[min(len(b), (l+7)&^7):]
	}
}

// deviceGone reports whether the packet socket lost its device: the kernel
// sets its ifindex to -1 on NETDEV_UNREGISTER.
func deviceGone(fd int) bool {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return errors.Is(err, unix.ENODEV)
	}
	ll, ok := sa.(*unix.SockaddrLinklayer)
	return ok && ll.Ifindex <= 0
}
