//go:build linux

package xdp

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/netns"
)

// Sockets are AF_XDP sockets on queues of one device, sharing one UMEM: the
// first socket registers it, the others bind with XDP_SHARED_UMEM and have
// fill and completion rings of their own, which a socket on another queue
// needs (Documentation/networking/af_xdp.rst, "XDP_SHARED_UMEM bind flag").
// Each socket's frames are a fixed slice of the UMEM, half for receiving and
// half for sending, so that no two goroutines ever share a chunk.
//
// Close releases everything; it must not run while anything uses the rings
// (an Endpoint stops its readers first).
type Sockets struct {
	dev     Device
	ifindex int
	mac     net.HardwareAddr
	mtu     int
	opts    Options
	geo     geometry
	mem     []byte
	socks   []*Socket
	mode    BindMode // BindCopy or BindZeroCopy, as bound
	once    sync.Once
	closeMu sync.Mutex
	err     error // guarded by closeMu
}

// Socket is one AF_XDP socket bound to one queue, with its four rings.
//
// The receive side (RX, Fill and the receive chunks) belongs to one
// goroutine, the send side (TX, Completion and the send chunks) to one
// goroutine at a time: an Endpoint runs one reader per socket and sends
// under a per-socket lock.
type Socket struct {
	fd    int
	queue int
	mem   []byte // the whole UMEM, shared with the other sockets
	geo   geometry
	maps  [][]byte

	// Fill and RX are the receive side; TX and Completion the send side.
	Fill       FillRing
	RX         RXRing
	TX         TXRing
	Completion CompletionRing

	rxPool *chunkPool
	txPool *chunkPool

	// rxFrames is WithFrames' reusable batch.
	rxFrames [][]byte
	// txChunks are the chunks of the tx slots reserved by txAcquire.
	txChunks []uint64
	txIdx    uint32

	zeroCopy   bool
	needWakeup bool

	// bad counts refused descriptors by reason, from any ring.
	bad [numDescErrors]atomic.Uint64
	// kicks counts sendto calls, kickErrors those that failed.
	kicks, kickErrors atomic.Uint64
}

// Open creates, maps and binds one AF_XDP socket per queue of dev, sharing
// one UMEM of opts.NumFrames chunks per queue. Nothing redirects frames to
// the sockets yet: put them in an XSKMAP (Register) for that. On error
// everything made so far is released.
func Open(dev Device, opts Options) (*Sockets, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if dev.Iface == "" {
		return nil, errors.New("xdp: Device.Iface: required")
	}
	dev.Queues = slices.Clone(dev.Queues)
	s := &Sockets{dev: dev, opts: opts}
	err := netns.Do(dev.Netns, s.open)
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// open runs on a thread in the device's namespace.
func (s *Sockets) open() error {
	dev := &s.dev
	l, err := netlink.LinkByName(dev.Iface)
	if err != nil {
		return fmt.Errorf("xdp: interface %q: %w", dev.Iface, err)
	}
	s.ifindex = l.Attrs().Index
	s.mac = l.Attrs().HardwareAddr
	s.mtu = l.Attrs().MTU
	nq, err := rxChannels(dev.Iface)
	if err != nil || nq == 0 {
		// No ethtool channel support: what netlink says was allocated.
		nq = max(1, l.Attrs().NumRxQueues)
	}
	if len(dev.Queues) == 0 {
		dev.Queues = make([]int, nq)
		for i := range dev.Queues {
			dev.Queues[i] = i
		}
	}
	for i, q := range dev.Queues {
		if q < 0 || q >= nq {
			return fmt.Errorf("xdp: %s has %d rx queues: no queue %d", dev.Iface, nq, q)
		}
		if slices.Contains(dev.Queues[:i], q) {
			return fmt.Errorf("xdp: queue %d of %s given twice", q, dev.Iface)
		}
	}
	if max := maxFrameLen(s.opts.FrameSize) - 14; s.mtu > max {
		s.opts.Logger.Warn("xdp: device MTU above what a frame holds; longer frames are dropped by the kernel (rx_dropped)",
			"iface", dev.Iface, "mtu", s.mtu, "max", max, "frame_size", s.opts.FrameSize)
	}

	perQueue := uint64(s.opts.NumFrames)
	s.geo = geometry{frameSize: uint64(s.opts.FrameSize), size: perQueue * uint64(len(dev.Queues)) * uint64(s.opts.FrameSize)}
	// Anonymous, private, page-aligned memory; MAP_POPULATE so that the
	// kernel's pinning at registration does not fault every page in.
	s.mem, err = unix.Mmap(-1, 0, int(s.geo.size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("xdp: mmap %d-byte UMEM: %w", s.geo.size, os.NewSyscallError("mmap", err))
	}
	for i, q := range dev.Queues {
		first := uint64(i) * perQueue
		rxN := perQueue / 2
		sk := &Socket{
			fd: -1, queue: q, mem: s.mem, geo: s.geo,
			rxPool: newChunkPool(s.geo, first, rxN),
			txPool: newChunkPool(s.geo, first+rxN, perQueue-rxN),
		}
		s.socks = append(s.socks, sk)
		var owner *Socket
		if i > 0 {
			owner = s.socks[0]
		}
		if err := sk.setup(s, owner); err != nil {
			return fmt.Errorf("xdp: %s queue %d: %w", dev.Iface, q, err)
		}
	}
	s.mode = BindCopy
	if s.socks[0].zeroCopy {
		s.mode = BindZeroCopy
	}
	s.opts.Logger.Info("xdp: sockets bound", "iface", dev.Iface, "ifindex", s.ifindex, "queues", dev.Queues,
		"mode", s.mode, "need_wakeup", s.opts.NeedWakeup, "umem_bytes", s.geo.size)
	return nil
}

// setup creates, maps and binds one socket; owner is the socket whose UMEM
// it shares, nil for the one that registers it.
func (sk *Socket) setup(s *Sockets, owner *Socket) error {
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EAFNOSUPPORT) {
			return fmt.Errorf("socket(AF_XDP): %w (kernel built without CONFIG_XDP_SOCKETS, or before 4.18)", dataplane.ErrNotSupported)
		}
		return os.NewSyscallError("socket AF_XDP", err)
	}
	sk.fd = fd
	n := s.opts.RingSize
	if owner == nil {
		if err := registerUMEM(fd, s.mem, s.opts.FrameSize); err != nil {
			if errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.EPERM) {
				return fmt.Errorf("register %d-byte UMEM: %w (raise RLIMIT_MEMLOCK or run with CAP_IPC_LOCK, or lower Options.NumFrames)", len(s.mem), err)
			}
			return fmt.Errorf("register UMEM: %w", err)
		}
	}
	// A socket sharing the UMEM on another queue needs fill and completion
	// rings of its own; every queue here is another queue.
	for _, r := range []struct {
		opt  int
		name string
	}{
		{unix.XDP_UMEM_FILL_RING, "XDP_UMEM_FILL_RING"},
		{unix.XDP_UMEM_COMPLETION_RING, "XDP_UMEM_COMPLETION_RING"},
		{unix.XDP_RX_RING, "XDP_RX_RING"},
		{unix.XDP_TX_RING, "XDP_TX_RING"},
	} {
		if err := unix.SetsockoptInt(fd, unix.SOL_XDP, r.opt, int(n)); err != nil {
			return fmt.Errorf("set %s to %d entries: %w", r.name, n, os.NewSyscallError("setsockopt", err))
		}
	}
	off, err := mmapOffsets(fd)
	if err != nil {
		return err
	}
	mapRing := func(pgoff int64, length int, name string) ([]byte, error) {
		m, err := unix.Mmap(fd, pgoff, length, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			return nil, fmt.Errorf("mmap %s ring: %w", name, os.NewSyscallError("mmap", err))
		}
		sk.maps = append(sk.maps, m)
		return m, nil
	}
	fm, err := mapRing(unix.XDP_UMEM_PGOFF_FILL_RING, ringBytes[uint64](off.Fr, n), "fill")
	if err != nil {
		return err
	}
	cm, err := mapRing(unix.XDP_UMEM_PGOFF_COMPLETION_RING, ringBytes[uint64](off.Cr, n), "completion")
	if err != nil {
		return err
	}
	rm, err := mapRing(unix.XDP_PGOFF_RX_RING, ringBytes[Desc](off.Rx, n), "rx")
	if err != nil {
		return err
	}
	tm, err := mapRing(unix.XDP_PGOFF_TX_RING, ringBytes[Desc](off.Tx, n), "tx")
	if err != nil {
		return err
	}
	if err := errors.Join(
		sk.Fill.init(ringView[uint64](fm, off.Fr, n)),
		sk.Completion.init(ringView[uint64](cm, off.Cr, n)),
		sk.RX.init(ringView[Desc](rm, off.Rx, n)),
		sk.TX.init(ringView[Desc](tm, off.Tx, n)),
	); err != nil {
		return err
	}
	sk.rxFrames = make([][]byte, 0, s.opts.BatchSize)
	// Give the kernel every receive chunk the fill ring holds before
	// binding, so that the first frames find room.
	sk.refill()

	// Copy mode builds an skb per frame sent, charged to the socket's send
	// buffer (sock_alloc_send_skb in xsk_build_skb): the default 208 KiB
	// stalls sending after about a hundred frames in flight. Room for a
	// full tx ring of page-sized skbs; SO_SNDBUFFORCE because it is above
	// wmem_max, SO_SNDBUF as the unprivileged fallback.
	sndbuf := int(n) * 4096
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sndbuf); err != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sndbuf)
	}

	sa := &unix.SockaddrXDP{Ifindex: uint32(s.ifindex), QueueID: uint32(sk.queue)}
	if owner != nil {
		// Flags other than XDP_SHARED_UMEM are refused here: copy or
		// zero-copy and need_wakeup come from the owner (xsk_bind).
		sa.Flags = unix.XDP_SHARED_UMEM
		sa.SharedUmemFD = uint32(owner.fd)
	} else {
		switch s.opts.BindMode {
		case BindCopy:
			sa.Flags |= unix.XDP_COPY
		case BindZeroCopy:
			sa.Flags |= unix.XDP_ZEROCOPY
		}
		if s.opts.NeedWakeup {
			sa.Flags |= unix.XDP_USE_NEED_WAKEUP
		}
	}
	if err := bindRetry(fd, sa); err != nil {
		return bindError(err, s, sk.queue, owner != nil)
	}
	sk.needWakeup = s.opts.NeedWakeup
	flags, err := xdpOptionsFlags(fd)
	if err != nil {
		return err
	}
	sk.zeroCopy = flags&unix.XDP_OPTIONS_ZEROCOPY != 0
	// Copy mode sends at most TX_BATCH_SIZE (32) frames per sendto unless
	// told otherwise (XDP_MAX_TX_SKB_BUDGET, Linux 6.17): let one call
	// send a whole ring. Older kernels refuse the option; they get more
	// calls.
	if !sk.zeroCopy {
		if err := unix.SetsockoptInt(fd, unix.SOL_XDP, unix.XDP_MAX_TX_SKB_BUDGET, int(n)); err != nil && owner == nil {
			s.opts.Logger.Debug("xdp: XDP_MAX_TX_SKB_BUDGET not set; copy mode sends 32 frames per call", "err", err)
		}
	}
	return nil
}

// bindBusyWait bounds how long bind waits for a queue to come free. The
// kernel releases a closed socket's claim on its queue from a workqueue
// (xp_release_deferred, net/xdp/xsk_buff_pool.c), so a socket closed just
// before, by this process or one that exited, still holds it for a moment.
const bindBusyWait = 2 * time.Second

// bindRetry binds, retrying EBUSY for up to bindBusyWait.
func bindRetry(fd int, sa *unix.SockaddrXDP) error {
	deadline := time.Now().Add(bindBusyWait)
	for delay := time.Millisecond; ; delay = min(2*delay, 100*time.Millisecond) {
		err := unix.Bind(fd, sa)
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(delay)
	}
}

func bindError(err error, s *Sockets, queue int, shared bool) error {
	err = os.NewSyscallError("bind", err)
	switch {
	case errors.Is(err, unix.EOPNOTSUPP) && s.opts.BindMode == BindZeroCopy:
		return fmt.Errorf("zero-copy mode: %w: the driver of %s has no AF_XDP zero-copy support (%w); use BindAuto or BindCopy", err, s.dev.Iface, dataplane.ErrNotSupported)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("%w: queue %d of %s already has an AF_XDP socket (another process's, or one not released within %v)", err, queue, s.dev.Iface, bindBusyWait)
	case shared && errors.Is(err, unix.EINVAL):
		return fmt.Errorf("XDP_SHARED_UMEM: %w (kernel before 5.10 cannot share a UMEM across queues)", err)
	}
	return err
}

// Close unmaps the rings and the UMEM and closes the sockets, which takes
// them out of any XSKMAP. It must not run while a reader or writer uses
// them. Closing twice is harmless.
func (s *Sockets) Close() error {
	s.once.Do(func() {
		var errs []error
		for _, sk := range s.socks {
			errs = append(errs, sk.close())
		}
		// The UMEM goes last: the kernel keeps its pages pinned until
		// the last socket that uses it is released, and our mapping of
		// it must outlive every ring that points into it.
		if s.mem != nil {
			if err := unix.Munmap(s.mem); err != nil {
				errs = append(errs, fmt.Errorf("xdp: munmap UMEM: %w", err))
			}
			s.mem = nil
		}
		s.closeMu.Lock()
		s.err = errors.Join(errs...)
		s.closeMu.Unlock()
	})
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	return s.err
}

func (sk *Socket) close() error {
	var errs []error
	for _, m := range sk.maps {
		if err := unix.Munmap(m); err != nil {
			errs = append(errs, fmt.Errorf("xdp: munmap ring of queue %d: %w", sk.queue, err))
		}
	}
	sk.maps = nil
	if sk.fd >= 0 {
		if err := unix.Close(sk.fd); err != nil {
			errs = append(errs, fmt.Errorf("xdp: close socket of queue %d: %w", sk.queue, err))
		}
		sk.fd = -1
	}
	return errors.Join(errs...)
}

// Register puts every socket in xsks, an XSKMAP indexed by rx queue (the
// redirect program's map), so that the program redirects each queue's
// frames to its socket. Closing the sockets takes them out again.
func (s *Sockets) Register(xsks *ebpf.Map) error {
	for _, sk := range s.socks {
		if err := xsks.Put(uint32(sk.queue), uint32(sk.fd)); err != nil {
			return fmt.Errorf("xdp: put the socket of %s queue %d in the XSKMAP: %w", s.dev.Iface, sk.queue, err)
		}
	}
	return nil
}

// Len returns the number of sockets.
func (s *Sockets) Len() int { return len(s.socks) }

// Socket returns the i-th socket (in the order of Device.Queues).
func (s *Sockets) Socket(i int) *Socket { return s.socks[i] }

// Mode returns how the sockets are bound: BindCopy or BindZeroCopy.
func (s *Sockets) Mode() BindMode { return s.mode }

// Ifindex returns the device's interface index in its namespace.
func (s *Sockets) Ifindex() int { return s.ifindex }

// Iface returns the device's name.
func (s *Sockets) Iface() string { return s.dev.Iface }

// HardwareAddr returns the device's MAC address when the sockets were
// opened.
func (s *Sockets) HardwareAddr() net.HardwareAddr { return slices.Clone(s.mac) }

// DeviceMTU returns the device's MTU when the sockets were opened.
func (s *Sockets) DeviceMTU() int { return s.mtu }

// Queues returns the queue of each socket.
func (s *Sockets) Queues() []int { return slices.Clone(s.dev.Queues) }

// Options returns the options in effect (defaults filled in).
func (s *Sockets) Options() Options { return s.opts }

// FD returns the socket's descriptor (owned by the Sockets).
func (sk *Socket) FD() int { return sk.fd }

// Queue returns the rx queue the socket is bound to.
func (sk *Socket) Queue() int { return sk.queue }

// ZeroCopy reports whether the socket is bound in zero-copy mode.
func (sk *Socket) ZeroCopy() bool { return sk.zeroCopy }

// KernelStats reads the kernel's counters for the socket.
func (sk *Socket) KernelStats() (KernelStats, error) {
	st, err := xdpStatistics(sk.fd)
	if err != nil {
		return KernelStats{}, fmt.Errorf("xdp: queue %d: %w", sk.queue, err)
	}
	return KernelStats{
		RxDropped: st.Rx_dropped, RxInvalidDescs: st.Rx_invalid_descs, TxInvalidDescs: st.Tx_invalid_descs,
		RxRingFull: st.Rx_ring_full, RxFillRingEmpty: st.Rx_fill_ring_empty_descs, TxRingEmpty: st.Tx_ring_empty_descs,
	}, nil
}

// BadDescs returns the descriptors this socket refused, by reason (indexed
// by DescError; DescOK's slot is always zero).
func (sk *Socket) BadDescs() [numDescErrors]uint64 {
	var out [numDescErrors]uint64
	for i := range out {
		out[i] = sk.bad[i].Load()
	}
	return out
}

func (sk *Socket) refused(e DescError) { sk.bad[e].Add(1) }

// refill hands every free receive chunk the fill ring has room for to the
// kernel. Receive side.
func (sk *Socket) refill() {
	want := uint32(sk.rxPool.Free())
	if want == 0 {
		return
	}
	n := min(want, sk.Fill.Free(want))
	idx, ok := sk.Fill.Reserve(n)
	if !ok {
		return
	}
	for i := uint32(0); i < n; i++ {
		c, _ := sk.rxPool.take()
		sk.Fill.Set(idx+i, c)
	}
	sk.Fill.Submit(n)
}

// WithFrames takes up to max frames from the rx ring and calls fn with
// them. The slices alias the UMEM: they are valid only until fn returns,
// after which their chunks go back to the kernel through the fill ring.
// Descriptors that fail the checks (outside the UMEM, past their chunk,
// empty, or for a chunk the kernel was not given) are counted (BadDescs)
// and skipped. It returns the number of descriptors taken from the ring,
// good or bad; zero means the ring was empty. Receive side.
func (sk *Socket) WithFrames(max int, fn func(frames [][]byte)) int {
	idx, n := sk.RX.Peek(uint32(max))
	if n == 0 {
		return 0
	}
	frames := sk.rxFrames[:0]
	for i := uint32(0); i < n; i++ {
		d := sk.RX.At(idx + i)
		chunk, e := sk.geo.checkRX(d)
		if e == DescOutsideUMEM {
			sk.refused(e)
			continue
		}
		// Take the chunk back first: a descriptor for a chunk the kernel
		// does not hold must not be read (the memory may be in use).
		if re := sk.rxPool.reclaim(chunk); re != DescOK {
			sk.refused(re)
			continue
		}
		if e != DescOK {
			sk.refused(e)
			continue
		}
		frames = append(frames, sk.mem[d.Addr:d.Addr+uint64(d.Len)])
	}
	if len(frames) > 0 {
		fn(frames)
	}
	clear(frames) // no references into the UMEM outlive the call
	sk.rxFrames = frames[:0]
	sk.RX.Release(n)
	sk.refill()
	if sk.needWakeup && sk.Fill.NeedsWakeup() {
		// The driver sleeps until told the fill ring has chunks again
		// (af_xdp.rst, "XDP_USE_NEED_WAKEUP bind flag"); poll(2) is the
		// documented way to say so for rx.
		_, _, _ = pollRevents(sk.fd, unix.POLLIN, -1, 0)
	}
	return int(n)
}

// reclaimCompletions takes back the chunks of sent frames. Send side.
func (sk *Socket) reclaimCompletions() {
	for {
		idx, n := sk.Completion.Peek(sk.Completion.Size())
		if n == 0 {
			return
		}
		for i := uint32(0); i < n; i++ {
			chunk, e := sk.geo.checkCompletion(sk.Completion.At(idx + i))
			if e == DescOK {
				e = sk.txPool.reclaim(chunk)
			}
			if e != DescOK {
				sk.refused(e)
			}
		}
		sk.Completion.Release(n)
	}
}

// txAcquire reserves up to n tx slots, each with a free chunk, after
// taking back completed ones, and returns how many it got. txFrame(i)
// gives slot i's chunk to write into; txCommit submits them. Send side.
func (sk *Socket) txAcquire(n int) int {
	sk.reclaimCompletions()
	k := min(uint32(n), uint32(sk.txPool.Free()))
	if k == 0 {
		return 0
	}
	k = min(k, sk.TX.Free(k))
	idx, ok := sk.TX.Reserve(k)
	if !ok {
		return 0
	}
	sk.txIdx = idx
	sk.txChunks = sk.txChunks[:0]
	for i := uint32(0); i < k; i++ {
		c, _ := sk.txPool.take()
		sk.txChunks = append(sk.txChunks, c)
	}
	return int(k)
}

// txFrame returns the memory of the i-th acquired slot: a whole chunk.
func (sk *Socket) txFrame(i int) []byte {
	c := sk.txChunks[i]
	return sk.mem[c : c+sk.geo.frameSize : c+sk.geo.frameSize]
}

// txCommit submits the first len(lens) acquired slots, frame i being
// lens[i] bytes at the start of its chunk, gives back the rest, and kicks
// the kernel. It returns an error only when the kernel refused the kick
// for good (the frames stay queued in the ring either way).
func (sk *Socket) txCommit(lens []int) error {
	used := len(lens)
	for i, l := range lens {
		sk.TX.Set(sk.txIdx+uint32(i), Desc{Addr: sk.txChunks[i], Len: uint32(l)})
	}
	if rest := len(sk.txChunks) - used; rest > 0 {
		sk.TX.Cancel(uint32(rest))
		for _, c := range sk.txChunks[used:] {
			sk.txPool.untake(c)
		}
	}
	sk.txChunks = sk.txChunks[:0]
	if used == 0 {
		return nil
	}
	sk.TX.Submit(uint32(used))
	return sk.flush()
}

// flush kicks the kernel until it has taken every submitted frame from the
// tx ring, or says it cannot for now. In copy mode each sendto sends a
// bounded batch; EAGAIN means a batch ended with frames left (or the
// completion ring was full, so completions are taken back between tries),
// EBUSY that the device queue was full; both are retried a bounded number
// of times. Frames still in the ring afterwards go with the next kick.
func (sk *Socket) flush() error {
	if sk.zeroCopy && sk.needWakeup && !sk.TX.NeedsWakeup() {
		return nil
	}
	// The copy-mode tx ring always asks for a wakeup (KERNEL-NOTES item
	// 5): kick regardless of the flag.
	for try := 0; try < 8; try++ {
		sk.kicks.Add(1)
		e := kick(sk.fd)
		switch e {
		case 0:
			if sk.zeroCopy || sk.TX.Pending() == 0 {
				return nil
			}
		case unix.EAGAIN, unix.EBUSY, unix.ENOBUFS, unix.EINTR:
		default:
			sk.kickErrors.Add(1)
			return os.NewSyscallError("sendto", e)
		}
		sk.reclaimCompletions()
		if sk.TX.Pending() == 0 {
			return nil
		}
	}
	return nil
}
