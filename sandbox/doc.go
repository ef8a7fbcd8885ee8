// Package sandbox runs a command in a network namespace of its own whose only
// way out is a user-space TCP/IP stack (gVisor's netstack) fed by sluice's
// dataplane: `sluice run`.
//
//	sandbox netns               stack side (private netns)        uplink netns
//	COMMAND -> eth0 ==veth==  sluice0 --fdbased--> netstack --> host sockets
//
// # Layers
//
// The package is thin and holds no packet I/O of its own; it asks fdbased
// (and later xdp) for link endpoints. It has three layers, in the manner of
// gVisor's runsc/config, runsc/sandbox and runsc/boot:
//
//   - Config: the network settings as typed fields named after the reference
//     flags (`--network`, `--gso`, `--qdisc`, ...), registered on a pflag
//     FlagSet, validated with messages that name the flag, and round-tripped
//     with ToFlags and ParseFlags. Profiles are named bundles of settings
//     that explicit flags override.
//   - The plan: Plan turns a Config and HostFacts (the uplink namespace's
//     routes, privileges, kernel abilities; gathered without side effects,
//     so tests use fakes) into Args, the CreateLinksAndRoutes arguments:
//     loopback, fd-based and XDP links with their addresses, routes and
//     neighbours, default gateways, the destination rewrites of the uplink
//     (NAT) and the pcap and packet-logging switches. Impossible settings
//     fail here, before anything is created, naming the flag to change.
//   - The wiring: Start creates the namespaces, the veth and the packet
//     sockets, and CreateLinksAndRoutes turns Args into NICs of a gVisor
//     stack over sluice's endpoints. Every step that takes a resource pushes
//     its undo on a list that Close (or a failed Start) runs in reverse.
//
// # Nothing outlives sluice
//
// No namespace of a sandbox is ever bind-mounted, so each one lives exactly
// as long as a process or descriptor holds it:
//
//   - The stack side is an anonymous namespace made by a goroutine that
//     locks its OS thread and unshares CLONE_NEWNET; the thread ends with the
//     goroutine and sluice keeps only a descriptor of the namespace. The
//     packet sockets are opened in it and keep it alive while they exist.
//   - The command runs in a child made with CLONE_NEWNET and
//     Pdeathsig=SIGKILL: sluice itself re-executed as a small init that
//     waits on a pipe until sluice has configured eth0 and then execs the
//     command, so the command's exit status is the child's.
//
// When sluice dies, even by SIGKILL, the kernel kills the child, the child's
// namespace goes with it, the stack-side namespace goes with sluice's
// descriptors, and the veth goes with whichever end's namespace dies first.
//
// # Uplink
//
// The netstack owns the gateway addresses, answers ARP and NDP, and
// terminates the command's TCP, UDP and ICMP echo, re-originating each flow
// from a host socket (like slirp4netns and pasta). The host sockets are
// opened in the namespace named by Config.UplinkNetNS (default: sluice's
// own), which is how tests, benchmarks and the demo keep every byte inside
// namespaces they create.
//
// # The bridge stack
//
// `--network plugin --plugin bridge` (stack_bridge_linux.go, package
// sandbox/bridge) terminates nothing: the stack namespace holds a second
// veth whose far end is in the uplink namespace, with the gateway
// addresses, and the sandbox's frames are forwarded between the two veths
// by sluice's dataplane, unchanged. The uplink namespace's kernel answers
// ARP and NDP for the gateway and routes, with forwarding on and an
// nftables table of the bridge's own masquerading the sandbox's subnets;
// TCP stays end to end and GSO super-frames cross whole. The egress policy
// decides each flow at its first frame (a denied TCP flow gets a RST, UDP
// an ICMP port unreachable), and --pcap-log and --log-packets record the
// frames. The table, owned by an `nft -i` that lives as long as sluice's
// pipe to it, and the veth, which dies with the stack namespace, go when
// sluice does, even when it is killed.
package sandbox
