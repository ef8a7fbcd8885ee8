package dataplane

import "fmt"

// EthPAll is ETH_P_ALL (include/uapi/linux/if_ether.h): every protocol, and
// the only protocol whose packet sockets also see the frames their interface
// sends (a socket bound to one ethertype sees ingress only).
const EthPAll = 0x0003

// SocketOptions describe AF_PACKET sockets for OpenPacketSocket and
// OpenPacketSockets. The zero value of each field means its default.
type SocketOptions struct {
	// NetNS is the network namespace of Interface, by name (under
	// /var/run/netns) or path (/proc/PID/ns/net); "" is the caller's. The
	// socket is opened inside it and keeps it, so the descriptor works
	// from any thread afterwards.
	NetNS string
	// Interface is the device to bind to. Required: binding to "every
	// device" is never what a link wants.
	Interface string
	// Protocol is the ethertype to receive, in host byte order. Default
	// EthPAll, which a fanout group needs and which is the only one that
	// also sees outgoing frames.
	Protocol uint16
	// FanoutGroup is the PACKET_FANOUT group id to join (hash mode, with
	// defragmentation); 0 means no group for OpenPacketSocket and a
	// fresh unique group for OpenPacketSockets.
	FanoutGroup uint16
	// VnetHdr sets PACKET_VNET_HDR: every frame read or written is preceded
	// by a virtio_net_hdr, which is what carries GSO super-frames and
	// checksum offload to and from the kernel. The Link must then be
	// created with LinkOptions.VnetHdr.
	VnetHdr bool
	// QdiscBypass sets PACKET_QDISC_BYPASS: frames go straight to the
	// driver, skipping the device's queueing discipline (and its drops and
	// shaping).
	QdiscBypass bool
	// RcvBufBytes and SndBufBytes set SO_RCVBUF and SO_SNDBUF in bytes; 0
	// keeps the kernel default (net.core.rmem_default). They are set with
	// SO_RCVBUFFORCE/SO_SNDBUFFORCE, which may exceed net.core.rmem_max and
	// need CAP_NET_ADMIN, falling back to the plain, capped options. The
	// kernel doubles the value for its bookkeeping.
	RcvBufBytes, SndBufBytes int
}

func (o SocketOptions) withDefaults() SocketOptions {
	if o.Protocol == 0 {
		o.Protocol = EthPAll
	}
	return o
}

func (o SocketOptions) validate() error {
	if o.Interface == "" {
		return fmt.Errorf("dataplane: SocketOptions.Interface is empty: name the device to bind to")
	}
	if o.RcvBufBytes < 0 || o.SndBufBytes < 0 {
		return fmt.Errorf("dataplane: SocketOptions.RcvBufBytes %d, SndBufBytes %d: must not be negative", o.RcvBufBytes, o.SndBufBytes)
	}
	return nil
}

// nsName is how errors show a namespace.
func nsName(ns string) string {
	if ns == "" {
		return "current"
	}
	return ns
}
