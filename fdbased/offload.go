package fdbased

import (
	"errors"
	"fmt"
	"log/slog"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/internal/stackrx"
)

// ProbeMode says whether NewEndpoint probes the kernel's offloads.
type ProbeMode uint8

const (
	// ProbeAuto (the zero value, so the default) probes every offload
	// that needs the kernel's help (a virtio_net_hdr: checksum offload,
	// host GSO) on the device, when the device is a veth or a TUN; other
	// devices are not sent to, and their offloads stay as requested with
	// the reason logged.
	ProbeAuto ProbeMode = iota
	// ProbeOff trusts the kernel without asking.
	ProbeOff
)

func (m ProbeMode) String() string {
	switch m {
	case ProbeAuto:
		return "auto"
	case ProbeOff:
		return "off"
	}
	return fmt.Sprintf("ProbeMode(%d)", uint8(m))
}

// offloadPlan is what NewEndpoint decided: which offloads run, and the
// report that says so.
type offloadPlan struct {
	// vnet: every frame on the descriptors carries a virtio_net_hdr.
	vnet bool
	// csumPartial: the kernel completes NEEDS_CSUM checksums, so frames
	// may leave with a partial one.
	csumPartial bool
	// txCsumCap: the stack is told it may leave TCP and UDP checksums
	// out (CapabilityTXChecksumOffload).
	txCsumCap bool
	// hostGSO4, hostGSO6: super-segments of that kind go to the kernel
	// whole; the others are segmented here.
	hostGSO4, hostGSO6 bool
	// stackGSO is what the stack is told; gsoMax the largest segment.
	stackGSO stack.SupportedGSO
	gsoMax   uint32
	trust    stackrx.Trust
	gro      bool
	report   dataplane.OffloadReport
}

// descKind is what a descriptor turned out to be, as far as offloads care.
type descKind uint8

const (
	descOther  descKind = iota // a socketpair or pipe: trusted to match Options
	descPacket                 // an AF_PACKET socket
	descTUN                    // a TUN (or TAP) descriptor
)

// classify returns what fd is and whether it carries a virtio_net_hdr.
func classify(fd int) (descKind, bool, error) {
	if sa, err := unix.Getsockname(fd); err == nil {
		if _, ok := sa.(*unix.SockaddrLinklayer); ok {
			v, err := unix.GetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR)
			if err != nil {
				return descPacket, false, fmt.Errorf("getsockopt PACKET_VNET_HDR: %w", err)
			}
			return descPacket, v != 0, nil
		}
		return descOther, false, nil
	}
	info, err := dataplane.TUNInfoOf(fd)
	if err != nil {
		if errors.Is(err, dataplane.ErrNotSupported) {
			return descOther, false, nil
		}
		return descOther, false, err
	}
	return descTUN, info.VnetHdr, nil
}

// planOffloads decides the endpoint's offloads from opts, the descriptors
// and, unless opts.OffloadProbe is ProbeOff, what the kernel does with them.
// It may set or clear PACKET_VNET_HDR on packet sockets (before any ring
// exists) to make them match the decision.
func planOffloads(opts *Options, log *slog.Logger) (offloadPlan, error) {
	var p offloadPlan
	hostWanted := opts.GSOMaxSize > 0 && !opts.GVisorGSOEnabled
	vnetWanted := opts.VnetHdr || hostWanted
	vnetReason := ""
	switch {
	case opts.VnetHdr:
		vnetReason = "Options.VnetHdr"
	case hostWanted:
		vnetReason = "host GSO needs it"
	}

	// Make the descriptors agree with the decision, or the decision with
	// the descriptors where they cannot change.
	kinds := make([]descKind, len(opts.FDs))
	has := make([]bool, len(opts.FDs))
	vnet := vnetWanted
	for i, fd := range opts.FDs {
		k, h, err := classify(fd)
		if err != nil {
			return p, fmt.Errorf("fdbased: Options.FDs[%d] = %d: %w", i, fd, err)
		}
		kinds[i], has[i] = k, h
		if k == descTUN && h != vnetWanted {
			if !h {
				return p, fmt.Errorf("fdbased: Options.FDs[%d] = %d: the TUN device has no IFF_VNET_HDR, which %s; open it with dataplane.TUNOptions.VnetHdr", i, fd, vnetReason)
			}
			// A TUN's header cannot be turned off on an attached
			// descriptor (IFF_VNET_HDR is fixed at TUNSETIFF):
			// read and write it, offload nothing through it.
			vnet, vnetReason = true, "the TUN device was opened with IFF_VNET_HDR"
		}
	}
	for i, fd := range opts.FDs {
		if kinds[i] == descTUN && has[i] != vnet {
			return p, fmt.Errorf("fdbased: Options.FDs mixes TUN descriptors with and without IFF_VNET_HDR (fd %d: %t)", fd, has[i])
		}
	}
	if err := setPacketVnet(opts.FDs, kinds, has, vnet, log); err != nil {
		return p, err
	}
	p.vnet = vnet

	// Without a probe, the kernel is trusted with what was asked.
	p.csumPartial = vnet
	host4, host6 := hostWanted && vnet, hostWanted && vnet
	probeState := map[string]string{} // offload name -> verdict
	probeReason := map[string]string{}
	vnetBroken := false
	if vnet && opts.OffloadProbe != ProbeOff {
		tests := []dataplane.ProbeTest{dataplane.ProbePlain, dataplane.ProbeChecksum}
		if hostWanted {
			tests = append(tests, dataplane.ProbeGSOTCPv4, dataplane.ProbeGSOTCPv6)
		}
		res, err := dataplane.ProbeOffloads(dataplane.ProbeOptions{
			FD:             opts.FDs[0],
			EthernetHeader: opts.EthernetHeader,
			VnetHdr:        true,
			Tests:          tests,
			Timeout:        opts.ProbeTimeout,
			Fault:          opts.probeFault,
		})
		p.report.Device, p.report.Driver = res.Device, res.Driver
		switch {
		case err != nil:
			p.report.ProbeSkipped = err.Error()
		case res.Skipped != "":
			p.report.ProbeSkipped = res.Skipped
		default:
			p.report.Probed = true
		}
		if !p.report.Probed {
			log.Warn("fdbased: offloads not probed; trusting the kernel with what was asked", "reason", p.report.ProbeSkipped)
		}
		verdict := func(t dataplane.ProbeTest) (ok bool, ran bool, reason string) {
			v, ran := res.Verdict(t)
			return v.OK, ran, v.Reason
		}
		if ok, ran, why := verdict(dataplane.ProbePlain); ran && !ok {
			vnetBroken = true
			probeState[dataplane.OffloadVnetHdr], probeReason[dataplane.OffloadVnetHdr] = dataplane.ProbeFailed, why
		} else if ran {
			probeState[dataplane.OffloadVnetHdr] = dataplane.ProbeOK
		}
		if ok, ran, why := verdict(dataplane.ProbeChecksum); ran && !ok {
			p.csumPartial = false
			probeState[dataplane.OffloadTxChecksum], probeReason[dataplane.OffloadTxChecksum] = dataplane.ProbeFailed, why
		} else if ran {
			probeState[dataplane.OffloadTxChecksum] = dataplane.ProbeOK
		}
		for _, g := range []struct {
			test dataplane.ProbeTest
			name string
			on   *bool
		}{{dataplane.ProbeGSOTCPv4, dataplane.OffloadHostGSOTCPv4, &host4}, {dataplane.ProbeGSOTCPv6, dataplane.OffloadHostGSOTCPv6, &host6}} {
			if ok, ran, why := verdict(g.test); ran && !ok {
				*g.on = false
				probeState[g.name], probeReason[g.name] = dataplane.ProbeFailed, why
			} else if ran {
				probeState[g.name] = dataplane.ProbeOK
			}
		}
		if !p.report.Probed {
			for _, n := range []string{dataplane.OffloadVnetHdr, dataplane.OffloadTxChecksum, dataplane.OffloadHostGSOTCPv4, dataplane.OffloadHostGSOTCPv6} {
				probeState[n], probeReason[n] = dataplane.ProbeSkipped, p.report.ProbeSkipped
			}
		}
	}
	if vnetBroken {
		// Frames behind a virtio_net_hdr do not even leave intact: drop
		// the header where the descriptor allows, and every offload
		// that rides on it.
		canDrop := true
		for _, k := range kinds {
			canDrop = canDrop && k != descTUN
		}
		if canDrop {
			if err := setPacketVnet(opts.FDs, kinds, nil, false, log); err != nil {
				return p, err
			}
			p.vnet = false
		}
		p.csumPartial, host4, host6 = false, false, false
	}
	if !p.csumPartial {
		// Every GSO frame is NEEDS_CSUM (the kernel segments and then
		// completes each segment's checksum from the seed).
		host4, host6 = false, false
	}
	p.hostGSO4, p.hostGSO6 = host4, host6
	p.txCsumCap = opts.TXChecksumOffload && p.vnet && p.csumPartial
	if opts.GSOMaxSize > 0 {
		// The stack is told "host" GSO in both modes: it then hands
		// over whole super-segments, which the endpoint either passes
		// to the kernel or segments itself in one batch. Told
		// GVisorGSOSupported, gVisor's TCP splits them itself, one
		// WritePacket per segment (sendTCPBatch, tcp/connect.go),
		// before the endpoint could batch them.
		p.stackGSO, p.gsoMax = stack.HostGSOSupported, opts.GSOMaxSize
	}
	switch {
	case opts.RXChecksumOffload:
		p.trust = stackrx.TrustAll
	case p.vnet || opts.GRO:
		p.trust = stackrx.VerifyHere
	default:
		p.trust = stackrx.StackVerifies
	}
	p.gro = opts.GRO

	// The report.
	st := func(name string, requested, effective bool, reason string) {
		s := dataplane.OffloadState{Name: name, Requested: requested, Effective: effective,
			Probe: probeState[name], Reason: reason}
		if r := probeReason[name]; r != "" && s.Probe == dataplane.ProbeFailed {
			s.Reason = "probe: " + r
		}
		p.report.Offloads = append(p.report.Offloads, s)
	}
	switch {
	case vnetBroken && p.vnet:
		st(dataplane.OffloadVnetHdr, vnetWanted, true, "kept: a TUN's IFF_VNET_HDR cannot be turned off; no offload uses it")
	case vnetBroken:
		st(dataplane.OffloadVnetHdr, vnetWanted, false, "")
	default:
		st(dataplane.OffloadVnetHdr, vnetWanted, p.vnet, vnetReason)
	}
	txReason := ""
	switch {
	case opts.TXChecksumOffload && !p.vnet:
		txReason = "no virtio_net_hdr on the descriptors: the kernel never completes the checksum of a frame written without one (packet_snd and tun_get_user make CHECKSUM_NONE skbs), so frames would leave with the stack's empty checksums"
	case opts.TXChecksumOffload && !p.csumPartial:
		txReason = "the kernel does not complete NEEDS_CSUM checksums here"
	case !opts.TXChecksumOffload && p.csumPartial:
		txReason = "the stack computes checksums; the endpoint's own segments and host GSO frames still leave partial (NEEDS_CSUM)"
	}
	st(dataplane.OffloadTxChecksum, opts.TXChecksumOffload, p.txCsumCap, txReason)
	st(dataplane.OffloadRxChecksum, opts.RXChecksumOffload, p.trust != stackrx.StackVerifies, p.trust.String())
	for _, g := range []struct {
		name string
		on   bool
	}{{dataplane.OffloadHostGSOTCPv4, host4}, {dataplane.OffloadHostGSOTCPv6, host6}} {
		reason := ""
		switch {
		case !hostWanted || g.on || probeState[g.name] == dataplane.ProbeFailed:
		case !p.vnet:
			reason = "no virtio_net_hdr to carry it; segmented in software instead"
		default:
			reason = "every GSO frame carries a partial checksum, which the kernel does not complete here (see tx-checksum); segmented in software instead"
		}
		st(g.name, hostWanted, g.on, reason)
	}
	swOn := opts.GSOMaxSize > 0 && (opts.GVisorGSOEnabled || !host4 || !host6)
	swReason := ""
	switch {
	case swOn && !opts.GVisorGSOEnabled && !host4 && !host6:
		swReason = "instead of host GSO"
	case swOn && !opts.GVisorGSOEnabled && !host4:
		swReason = "for IPv4, instead of host GSO"
	case swOn && !opts.GVisorGSOEnabled:
		swReason = "for IPv6, instead of host GSO"
	case swOn && p.vnet && p.csumPartial:
		swReason = "segments leave with partial checksums (NEEDS_CSUM)"
	case swOn:
		swReason = "segments leave fully checksummed"
	}
	st(dataplane.OffloadSoftwareGSO, opts.GSOMaxSize > 0 && opts.GVisorGSOEnabled, swOn, swReason)
	groReason := ""
	if opts.GRO {
		groReason = fmt.Sprintf("flush interval %v", opts.GROFlushTimeout)
	}
	st(dataplane.OffloadGRO, opts.GRO, opts.GRO, groReason)
	usoReason := "gVisor's stack produces no UDP GSO (stack.GSOType has TCPv4, TCPv6 and gVisor only)"
	if p.vnet {
		usoReason = "inbound UDP_L4 super-datagrams are split before the stack; " + usoReason + ", so none goes out"
	}
	st(dataplane.OffloadUSO, false, p.vnet, usoReason)

	for _, s := range p.report.Offloads {
		if s.Requested && !s.Effective {
			log.Warn("fdbased: offload off", "offload", s.Name, "reason", s.Reason)
		}
	}
	return p, nil
}

// setPacketVnet sets PACKET_VNET_HDR to on for every packet socket among
// fds whose setting (has, or unknown when has is nil) differs. The kernel
// accepts the change only before a ring is set up, which the dataplane does
// later.
func setPacketVnet(fds []int, kinds []descKind, has []bool, on bool, log *slog.Logger) error {
	v := 0
	if on {
		v = 1
	}
	for i, fd := range fds {
		if kinds[i] != descPacket || (has != nil && has[i] == on) {
			continue
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, v); err != nil {
			return fmt.Errorf("fdbased: Options.FDs[%d] = %d: set PACKET_VNET_HDR to %d: %w", i, fd, v, errors.Join(err, errors.New("open the socket with dataplane.SocketOptions.VnetHdr matching the endpoint's offloads")))
		}
		if has != nil {
			log.Info("fdbased: PACKET_VNET_HDR set to match the offloads", "fd", fd, "value", v)
		}
	}
	return nil
}
