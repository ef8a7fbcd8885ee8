//go:build linux

package bpf

import (
	"errors"
	"fmt"

	"github.com/sluicenet/sluice/internal/netns"
)

// The neighbour-aware redirect program (redirect_nd.bpf.c) is kept apart
// from the loader's Program list: it is the Redirect program for a NIC
// shared with the host, and lists as "redirect" (same function name, same
// maps, same counters).
//
//go:generate go tool bpf2go -tags linux -target bpfel -cflags "-O2 -g -Wall -Werror" -output-stem redirect_nd redirectND redirect_nd.bpf.c -- -I/usr/include/x86_64-linux-gnu

// AttachRedirectNeigh attaches the redirect program for a NIC that a
// user-space stack shares with the host: frames to opts.Load.RedirectAddrs
// go to the AF_XDP sockets put in the attachment's XSKs map, and so do the
// ARP and IPv6 neighbour discovery frames about those addresses, which the
// plain Redirect program with RedirectAddrs leaves to the host (which does
// not own the addresses, so nobody answers). Everything else goes to the
// host. opts.Program is ignored (it is Redirect); RedirectAddrs is required.
// On error nothing is left attached or pinned.
func AttachRedirectNeigh(opts AttachOptions) (_ *Attachment, err error) {
	opts.Program = Redirect
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if len(opts.Load.RedirectAddrs) == 0 {
		return nil, errors.New("bpf: AttachOptions.Load.RedirectAddrs: the neighbour-aware redirect program needs the stack's addresses")
	}
	if opts.Pin {
		if err := checkBPFFS(opts.PinRoot); err != nil {
			return nil, err
		}
	}
	nsID, err := NetnsID(opts.Netns)
	if err != nil {
		return nil, err
	}
	err = netns.Do(opts.Netns, func() error {
		l, err := lookupLink(opts.Iface, opts.Netns)
		if err != nil {
			return err
		}
		if err := checkFree(l, opts.PinRoot, nsID); err != nil {
			err.(*AlreadyAttachedError).Netns = opts.Netns
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	objs, err := loadRedirectNeigh(opts.Load)
	if err != nil {
		return nil, fmt.Errorf("bpf: load redirect (neighbour-aware): %w", classify(err))
	}
	main := &Attachment{Program: Redirect, Role: RoleMain, Objects: objs}
	defer func() {
		if err != nil {
			main.Detach()
		}
	}()
	if err := attachXDP(main, opts.Netns, nsID, opts.Iface, opts.Mode); err != nil {
		return nil, err
	}
	if opts.Pin {
		if err := pinAttachment(main, opts); err != nil {
			return nil, err
		}
	}
	return main, nil
}

func loadRedirectNeigh(opts LoadOptions) (*Objects, error) {
	var objs redirectNDObjects
	if err := loadRedirectNDObjects(&objs, nil); err != nil {
		return nil, err
	}
	o := &Objects{Kind: Redirect, Program: objs.XdpRedirect, Stats: objs.Stats, XSKs: objs.Xsks, DstAddrs: objs.DstAddrs, close: objs.Close}
	for _, a := range opts.RedirectAddrs {
		if err := objs.DstAddrs.Put(addrKey(a), uint8(1)); err != nil {
			o.Close()
			return nil, fmt.Errorf("add destination %s: %w", a, err)
		}
	}
	return o, nil
}
