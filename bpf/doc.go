// Package bpf holds sluice's eBPF programs and everything needed to run them:
// the C sources (*.bpf.c, compiled by bpf2go into the committed *_bpfel.go
// and *_bpfel.o files), loading with constants and maps set, XDP attachment
// through bpf links (auto, generic or driver mode), TC (TCX, or a clsact
// qdisc on kernels without it) and socket-filter attachment, pinning, listing
// what is attached to an interface by anyone, and per-CPU counters.
//
// # Namespaces
//
// The kernel resolves interface indexes in the network namespace of the
// calling thread: XDP and TCX attach, DEVMAP updates, netlink queries. Every
// function here that takes a Netns runs that work through internal/netns.Do
// on a thread inside the namespace. bpffs is not per network namespace, so
// pins made there are visible from the host's /sys/fs/bpf (but not under `ip
// netns exec`, which remounts /sys).
//
// # Lifecycle
//
// An attachment is a bpf link: it lives while a descriptor or a pin refers to
// it, so an unpinned attachment goes away with the process that made it, even
// one killed by SIGKILL. What sluice pins lives under one directory per
// interface, built by PinDir: <root>/<netns inode>/<ifname>/. The directory
// holds the link, the program's maps and sluice.json, which names the owner:
// either "persistent" (made by `sluice xdp attach`, removed only by Detach)
// or a process (pid and start time), whose pins Clean removes once that
// process is gone. sluice.json is written before anything is pinned, naming
// the attaching process, and rewritten with the final owner last, so a crash
// half-way leaves a directory that Clean recognises as a dead owner's.
//
// A program that redirects into a veth in native (driver) mode needs an XDP
// program on that veth's peer: veth_xdp_xmit drops frames silently when the
// peer has no XDP rx queue (KERNEL-NOTES item 6). Attach puts the pass
// program there when the peer has none and records it with the attachment,
// so Detach removes it too.
package bpf
