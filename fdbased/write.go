package fdbased

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/gso"
	"github.com/sluicenet/sluice/internal/csum"
	"github.com/sluicenet/sluice/qdisc"
)

// txBatch is the reusable state of one batched write: the dataplane batch
// and the memory its frames point into. Its arrays only grow, and a txBatch
// goes back to the endpoint's pool after each write, so steady state
// allocates nothing per frame.
type txBatch struct {
	b dataplane.TxBatch
	// vnet holds the virtio_net_hdrs, hdrs the headers of software GSO
	// segments. When one runs out, a larger one replaces it; frames
	// already in b keep pointing into the old one, which lives until
	// Reset drops them.
	vnet, hdrs []byte
	// flat holds contiguous copies of super-segments to be cut in
	// software (gso.Split needs the packet in one piece); nflat are in
	// use.
	flat  [][]byte
	nflat int
	segs  []gso.Frame
}

func (tb *txBatch) reset() {
	tb.b.Reset()
	tb.vnet, tb.hdrs = tb.vnet[:0], tb.hdrs[:0]
	tb.nflat = 0
	clear(tb.segs)
}

// take returns n bytes from the end of *arena, growing it (into a new
// array) when full.
func take(arena *[]byte, n, minCap int) []byte {
	a := *arena
	if len(a)+n > cap(a) {
		a = make([]byte, 0, max(2*cap(a), minCap, n))
	}
	a = a[:len(a)+n]
	*arena = a
	return a[len(a)-n : len(a) : len(a)]
}

// appendVnet adds h to the frame being built.
func (tb *txBatch) appendVnet(h dataplane.VnetHdr) {
	b := take(&tb.vnet, dataplane.VnetHdrLen, 64*dataplane.VnetHdrLen)
	h.Encode(b)
	tb.b.Append(b)
}

// flatBuf returns a buffer of n bytes for a contiguous copy of a packet.
func (tb *txBatch) flatBuf(n int) []byte {
	if tb.nflat == len(tb.flat) {
		tb.flat = append(tb.flat, nil)
	}
	b := tb.flat[tb.nflat]
	if cap(b) < n {
		// 64 KiB of IP packet plus link headers covers every
		// super-segment the stack makes (GSOMaxSize <= 65536).
		b = make([]byte, max(n, 65536+128))
		tb.flat[tb.nflat] = b
	}
	tb.nflat++
	return b[:n]
}

// WritePackets implements stack.LinkWriter. Without a qdisc the packets are
// written at once, in one batched call per channel; with the FIFO qdisc they
// are queued, and a packet that finds its queue full for QdiscMaxWait is
// dropped (counted in TxDropped) with the rest of the list, and
// ErrNoBufferSpace returned, as gVisor's fifo does. A packet the kernel
// rejects is counted and skipped.
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	list := pkts.AsSlice()
	if len(list) == 0 {
		return 0, nil
	}
	if e.qd != nil {
		for i, pkt := range list {
			err := e.qd.Enqueue(pkt.Hash, pkt.IncRef())
			if err == nil {
				continue
			}
			pkt.DecRef()
			e.link.Counters().TxDropped.Add(uint64(len(list) - i))
			if errors.Is(err, qdisc.ErrClosed) {
				return i, &tcpip.ErrClosedForSend{}
			}
			return i, &tcpip.ErrNoBufferSpace{}
		}
		return len(list), nil
	}
	n, err := e.writeList(list)
	if err != nil {
		if errors.Is(err, dataplane.ErrClosed) {
			return n, &tcpip.ErrClosedForSend{}
		}
		return n, &tcpip.ErrAborted{}
	}
	return n, nil
}

// writeList writes pkts in one batch and returns how many packets were
// written: all of them when every frame was, else at most as many as the
// frames written (software GSO makes several frames of one packet). It is
// the qdisc's BatchWriter too.
func (e *Endpoint) writeList(pkts []*stack.PacketBuffer) (int, error) {
	tb := e.batches.Get().(*txBatch)
	defer func() {
		tb.reset()
		e.batches.Put(tb)
	}()
	for _, pkt := range pkts {
		if err := e.appendPacket(tb, pkt); err != nil {
			e.link.Counters().TxErrors.Add(1)
			e.logBadPacket(err)
		}
	}
	if tb.b.Len() == 0 {
		return 0, nil
	}
	n, err := e.link.WriteBatch(&tb.b)
	if n == tb.b.Len() {
		return len(pkts), err
	}
	return min(n, len(pkts)), err
}

// logBadPacket logs a packet the endpoint refused to write, at most once a
// second: a stack bug (or a raw socket's garbage) must be visible without
// flooding the log.
func (e *Endpoint) logBadPacket(err error) {
	now := time.Now().Unix()
	if last := e.badLogged.Load(); last == now || !e.badLogged.CompareAndSwap(last, now) {
		return
	}
	e.log.Warn("fdbased: outbound packet not written", "err", err.Error())
}

// appendPacket adds pkt's frames to tb: one frame, or one per segment when
// the endpoint segments it. See the package documentation for which
// checksums are whose.
func (e *Endpoint) appendPacket(tb *txBatch, pkt *stack.PacketBuffer) error {
	g := pkt.GSOOptions
	l4 := e.hdrSize + len(pkt.NetworkHeader().Slice())
	if g.Type != stack.GSONone && g.MSS > 0 && pkt.Data().Size() > int(g.MSS) {
		if (g.Type == stack.GSOTCPv4 && e.plan.hostGSO4) || (g.Type == stack.GSOTCPv6 && e.plan.hostGSO6) {
			tb.b.Begin(pkt.Hash)
			tb.appendVnet(e.hostGSOHdr(pkt, l4))
			appendViews(tb, pkt)
			return nil
		}
		return e.appendSegments(tb, pkt)
	}
	var h dataplane.VnetHdr
	switch {
	case g.Type != stack.GSONone && g.NeedsCsum:
		// The stack left the TCP checksum partial, seeded with the
		// pseudo-header sum (tcp/connect.go, buildTCPHdr).
		if e.vnetHdr && e.plan.csumPartial {
			h = dataplane.VnetHdr{Flags: dataplane.VnetFlagNeedsCsum, CsumStart: uint16(l4), CsumOffset: g.CsumOffset}
		} else if err := completeChecksum(pkt, int(g.CsumOffset)); err != nil {
			return err
		}
	case e.plan.txCsumCap:
		// The stack left TCP and UDP checksums out; seed them and let
		// the kernel finish.
		if off, ok := seedChecksum(pkt); ok {
			h = dataplane.VnetHdr{Flags: dataplane.VnetFlagNeedsCsum, CsumStart: uint16(l4), CsumOffset: off}
		}
	}
	tb.b.Begin(pkt.Hash)
	if e.vnetHdr {
		tb.appendVnet(h)
	}
	appendViews(tb, pkt)
	return nil
}

// appendViews adds pkt's bytes, headers and payload, without copying.
func appendViews(tb *txBatch, pkt *stack.PacketBuffer) {
	views, off := pkt.AsViewList()
	for v := views.Front(); v != nil; v = v.Next() {
		s := v.AsSlice()
		if off >= len(s) {
			off -= len(s)
			continue
		}
		tb.b.Append(s[off:])
		off = 0
	}
}

// hostGSOHdr builds the virtio_net_hdr of a super-segment for the kernel to
// segment, by the rules KERNEL-NOTES measured (and virtio_net_hdr_to_skb
// checks): NEEDS_CSUM with csum_start at the TCP header (34 behind Ethernet
// and a 20-byte IPv4 header, 20 on an L3 TUN) and csum_offset 16; the TCP
// checksum field already holds the folded pseudo-header sum over the whole
// TCP length, which is how gVisor seeds it for host GSO; gso_size the MSS;
// hdr_len every header byte. csum_start is taken from the packet's actual
// network header, not GSO.L3HdrLen (always the minimum, 20 or 40), so IPv6
// extension headers cannot misplace it. A segment carrying CWR asks for ECN
// segmentation (SKB_GSO_TCP_ECN: CWR on the first segment only).
func (e *Endpoint) hostGSOHdr(pkt *stack.PacketBuffer, l4 int) dataplane.VnetHdr {
	g := pkt.GSOOptions
	h := dataplane.VnetHdr{
		Flags:      dataplane.VnetFlagNeedsCsum,
		GSOType:    dataplane.VnetGSOTCPv4,
		HdrLen:     uint16(pkt.HeaderSize()),
		GSOSize:    g.MSS,
		CsumStart:  uint16(l4),
		CsumOffset: header.TCPChecksumOffset,
	}
	if g.Type == stack.GSOTCPv6 {
		h.GSOType = dataplane.VnetGSOTCPv6
	}
	if th := pkt.TransportHeader().Slice(); len(th) >= header.TCPMinimumSize && header.TCP(th).Flags().Contains(header.TCPFlagCwr) {
		h.GSOType |= dataplane.VnetGSOECN
	}
	return h
}

// appendSegments cuts a super-segment into MSS-sized frames (software GSO)
// and adds them to tb. Each segment's checksum is computed afresh, or left
// partial behind a NEEDS_CSUM virtio_net_hdr when the kernel completes those.
func (e *Endpoint) appendSegments(tb *txBatch, pkt *stack.PacketBuffer) error {
	flat := tb.flatBuf(pkt.Size())
	n := 0
	views, off := pkt.AsViewList()
	for v := views.Front(); v != nil; v = v.Next() {
		s := v.AsSlice()
		if off >= len(s) {
			off -= len(s)
			continue
		}
		n += copy(flat[n:], s[off:])
		off = 0
	}
	o := gso.Options{MSS: int(pkt.GSOOptions.MSS), Ethernet: e.hdrSize > 0, PartialChecksum: e.vnetHdr && e.plan.csumPartial}
	info, err := gso.Inspect(flat[:n], o)
	if err != nil {
		return fmt.Errorf("software GSO of a %d-byte packet: %w", n, err)
	}
	if len(tb.segs) < info.Segments {
		tb.segs = make([]gso.Frame, info.Segments)
	}
	hdrs := take(&tb.hdrs, info.Segments*info.HdrLen, 64*128)
	k, err := gso.Split(tb.segs, hdrs, flat[:n], o)
	if err != nil {
		return fmt.Errorf("software GSO of a %d-byte packet: %w", n, err)
	}
	h := dataplane.VnetHdr{}
	if o.PartialChecksum {
		h = dataplane.VnetHdr{Flags: dataplane.VnetFlagNeedsCsum, CsumStart: uint16(info.CsumStart), CsumOffset: uint16(info.CsumOffset)}
	}
	for _, s := range tb.segs[:k] {
		tb.b.Begin(pkt.Hash)
		if e.vnetHdr {
			tb.appendVnet(h)
		}
		tb.b.Append(s.Header)
		tb.b.Append(s.Payload)
	}
	return nil
}

// completeChecksum completes, in place, the partial transport checksum of
// pkt whose field at csumOffset in the transport header holds the
// pseudo-header seed, over the transport header and the payload: what the
// kernel's skb_checksum_help does for a CHECKSUM_PARTIAL skb.
func completeChecksum(pkt *stack.PacketBuffer, csumOffset int) error {
	th := pkt.TransportHeader().Slice()
	if csumOffset < 0 || csumOffset+2 > len(th) || len(th)%2 != 0 {
		return fmt.Errorf("partial checksum at offset %d of a %d-byte transport header", csumOffset, len(th))
	}
	// The header's length is even, so the payload's sum needs no swap.
	sum := checksum.Combine(checksum.Checksum(th, 0), pkt.Data().Checksum())
	v := ^sum
	if v == 0 {
		v = 0xffff // CSUM_MANGLED_0: the same to TCP, required by UDP
	}
	binary.BigEndian.PutUint16(th[csumOffset:], v)
	return nil
}

// udpChecksumOffset is the offset of the UDP checksum field (RFC 768);
// gVisor's header package keeps its constant unexported.
const udpChecksumOffset = 6

// seedChecksum writes the pseudo-header sum into the checksum field of pkt
// if it is a TCP or UDP packet the kernel can finish (not an IPv4 fragment,
// whose checksum covers the datagram; not an IPv6 packet with extension
// headers the kernel's csum_start would not skip correctly from the
// pseudo-header's point of view), and returns the field's offset in the
// transport header. The stack left the field out because the endpoint
// advertised TX checksum offload.
func seedChecksum(pkt *stack.PacketBuffer) (uint16, bool) {
	th := pkt.TransportHeader().Slice()
	nh := pkt.NetworkHeader().Slice()
	var off int
	switch pkt.TransportProtocolNumber {
	case header.TCPProtocolNumber:
		off = header.TCPChecksumOffset
	case header.UDPProtocolNumber:
		off = udpChecksumOffset
	default:
		return 0, false
	}
	if len(th) < off+2 || len(th)%2 != 0 {
		return 0, false
	}
	l4len := len(th) + pkt.Data().Size()
	var pseudo uint16
	switch pkt.NetworkProtocolNumber {
	case header.IPv4ProtocolNumber:
		if len(nh) < header.IPv4MinimumSize || header.IPv4(nh).More() || header.IPv4(nh).FragmentOffset() != 0 {
			return 0, false
		}
		pseudo = csum.PseudoV4(uint8(pkt.TransportProtocolNumber), nh[12:16], nh[16:20], uint16(l4len))
	case header.IPv6ProtocolNumber:
		if len(nh) != header.IPv6MinimumSize {
			return 0, false
		}
		pseudo = csum.PseudoV6(uint8(pkt.TransportProtocolNumber), nh[8:24], nh[24:40], uint32(l4len))
	default:
		return 0, false
	}
	binary.BigEndian.PutUint16(th[off:], pseudo)
	return uint16(off), true
}

var _ stack.InjectableLinkEndpoint = (*InjectableEndpoint)(nil)

// InjectableEndpoint writes to a descriptor but reads nothing from it: all
// inbound packets are injected with InjectInbound.
type InjectableEndpoint struct {
	*Endpoint
}

// NewInjectable creates an injectable endpoint writing to fd (borrowed, made
// non-blocking) with the given MTU and capabilities.
func NewInjectable(fd int, mtu uint32, capabilities stack.LinkEndpointCapabilities) (*InjectableEndpoint, error) {
	e, err := NewEndpoint(Options{FDs: []int{fd}, MTU: mtu, PacketDispatchMode: dataplane.Readv})
	if err != nil {
		return nil, fmt.Errorf("fdbased: injectable: %w", err)
	}
	e.caps = capabilities
	return &InjectableEndpoint{Endpoint: e}, nil
}

// Attach stores the dispatcher for InjectInbound; no reader is started.
func (e *InjectableEndpoint) Attach(d stack.NetworkDispatcher) {
	if d == nil {
		e.dispatcher.Store(nil)
		return
	}
	e.dispatcher.Store(&dispatcherBox{d})
}

// InjectInbound delivers pkt to the attached stack, if any.
func (e *InjectableEndpoint) InjectInbound(protocol tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if box := e.dispatcher.Load(); box != nil {
		box.d.DeliverNetworkPacket(protocol, pkt)
	}
}

// InjectOutbound writes a raw frame to the descriptor.
func (e *InjectableEndpoint) InjectOutbound(dest tcpip.Address, packet *buffer.View) tcpip.Error {
	var b dataplane.TxBatch
	b.Begin(0)
	b.Append(packet.AsSlice())
	if n, err := e.link.WriteBatch(&b); err != nil || n != 1 {
		return &tcpip.ErrAborted{}
	}
	return nil
}
