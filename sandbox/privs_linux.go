package sandbox

// RunPrivileges is what a set-up sandbox still needs from sluice's own
// process while the command runs and at teardown. With the netstack,
// everything else sluice needed (creating namespaces and the veth, opening
// packet or AF_XDP sockets, attaching XDP, binding --publish listeners,
// joining --uplink-netns) is done before the command starts, and teardown
// only closes descriptors (which removes the namespaces and the veth with
// them), signals sluice's own children and removes files sluice created.
type RunPrivileges struct {
	// RawICMP: echo requests are forwarded through raw ICMP sockets,
	// which need CAP_NET_RAW, because the uplink namespace's
	// net.ipv4.ping_group_range does not hold sluice's group (the
	// kernel's default, "1 0", holds no group at all).
	RawICMP bool
	// All: the stack needs every privilege sluice has until it is
	// closed, and may run programs (a plugin stack that does not say
	// otherwise: see RunPrivileger).
	All bool
}

// RunPrivileger is implemented by a Stack that says what it needs from
// sluice's process once set up, while the command runs and in Close. For a
// stack that does not implement it, sluice keeps all its privileges.
type RunPrivileger interface {
	RunPrivileges() RunPrivileges
}

// RunPrivileges reports what the sandbox needs while it runs. Call it from
// Options.Ready or later.
func (sb *Sandbox) RunPrivileges() RunPrivileges {
	if sb.stack == nil {
		return RunPrivileges{} // --network host or none: nothing runs
	}
	if rp, ok := sb.stack.(RunPrivileger); ok {
		return rp.RunPrivileges()
	}
	return RunPrivileges{All: true}
}

// RunPrivileges implements RunPrivileger: only ICMP echo may need a
// privilege (CAP_NET_RAW) once the netstack is up.
func (n *netstack) RunPrivileges() RunPrivileges {
	if n.uplink == nil {
		return RunPrivileges{}
	}
	return RunPrivileges{RawICMP: !n.uplink.pingSocketsAllowed()}
}
