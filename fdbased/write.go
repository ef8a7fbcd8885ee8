package fdbased

import (
	"errors"
	"fmt"

	"gvisor.dev/gvisor/pkg/buffer"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/sluicenet/sluice/dataplane"
)

// txBatch is the reusable state of one WritePackets call: the dataplane batch
// and the storage of the virtio_net_hdrs it points into.
type txBatch struct {
	b    dataplane.TxBatch
	vnet []byte
}

// WritePackets implements stack.LinkWriter. Packets are written in one
// batched call per channel; a packet the kernel rejects is counted and
// skipped.
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	list := pkts.AsSlice()
	if len(list) == 0 {
		return 0, nil
	}
	tb := e.batches.Get().(*txBatch)
	defer func() {
		tb.b.Reset()
		e.batches.Put(tb)
	}()
	if e.vnetHdr {
		// Size the header storage before any frame points into it.
		if need := len(list) * dataplane.VnetHdrLen; cap(tb.vnet) < need {
			tb.vnet = make([]byte, need)
		}
		tb.vnet = tb.vnet[:len(list)*dataplane.VnetHdrLen]
	}
	for i, pkt := range list {
		tb.b.Begin(pkt.Hash)
		if e.vnetHdr {
			h := tb.vnet[i*dataplane.VnetHdrLen : (i+1)*dataplane.VnetHdrLen]
			e.vnetHdrFor(pkt).Encode(h)
			tb.b.Append(h)
		}
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
	n, err := e.link.WriteBatch(&tb.b)
	if err != nil {
		if errors.Is(err, dataplane.ErrClosed) {
			return n, &tcpip.ErrClosedForSend{}
		}
		return n, &tcpip.ErrAborted{}
	}
	return n, nil
}

// vnetHdrFor builds the virtio_net_hdr of an outbound packet for host GSO,
// as the reference does: a checksum to complete from the transport header
// on, and a GSO type and segment size when the packet is larger than one
// segment.
func (e *Endpoint) vnetHdrFor(pkt *stack.PacketBuffer) dataplane.VnetHdr {
	var h dataplane.VnetHdr
	gso := pkt.GSOOptions
	if gso.Type == stack.GSONone {
		return h
	}
	h.HdrLen = uint16(pkt.HeaderSize())
	if gso.NeedsCsum {
		h.Flags = dataplane.VnetFlagNeedsCsum
		h.CsumStart = uint16(e.hdrSize) + gso.L3HdrLen
		h.CsumOffset = gso.CsumOffset
	}
	if uint16(pkt.Data().Size()) > gso.MSS {
		switch gso.Type {
		case stack.GSOTCPv4:
			h.GSOType = dataplane.VnetGSOTCPv4
		case stack.GSOTCPv6:
			h.GSOType = dataplane.VnetGSOTCPv6
		}
		h.GSOSize = gso.MSS
	}
	return h
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
