// Package privs gives up, once a sluice process is set up, what its packet
// path and services never use again: capabilities, the ability to gain
// privileges through exec (no_new_privs), and system calls (a seccomp
// filter that refuses, for example, execve, ptrace, mount, setns, module
// and kexec loading, and loading eBPF programs).
//
// Linux keeps capabilities, no_new_privs and the seccomp filter per thread,
// and a Go program has many threads that the runtime creates and retires at
// will. Drop therefore changes every thread of the process at once:
// capabilities and no_new_privs through syscall.AllThreadsSyscall, the
// filter with SECCOMP_FILTER_FLAG_TSYNC. Threads created afterwards inherit
// the state of the thread that creates them. AllThreadsSyscall is refused
// in a binary that links cgo (the Go runtime cannot reach threads that C
// code may have started), so the capability drop needs a binary built with
// CGO_ENABLED=0; Drop then says so (ErrCgo) rather than leaving some threads
// privileged. The seccomp filter and no_new_privs, which the kernel itself
// applies to every thread, do not depend on how the binary was built.
//
// What each sluice command needs, at set-up and while it runs (README,
// Privileges, has the same table):
//
//	command                           set-up                                   while it runs
//	run --network sandbox (--xdp ns)  CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_NET_RAW nothing; CAP_NET_RAW when the uplink
//	                                                                           namespace's ping_group_range excludes
//	                                                                           sluice's group (ICMP echo, raw sockets)
//	run --network none                CAP_SYS_ADMIN, CAP_NET_ADMIN             nothing
//	run --network host                nothing                                  nothing
//	run --network plugin              as the stack needs                       all it had, unless the stack says
//	                                                                           (sandbox.RunPrivileger)
//	demo                              root                                     as set-up (it removes its namespace)
//	capture (mmap, recvmmsg)          CAP_NET_RAW; CAP_SYS_ADMIN for --netns   as set-up
//	capture --via xdp, xdp attach,    CAP_SYS_ADMIN (CAP_BPF + CAP_NET_ADMIN   as set-up
//	  detach, dump                    without --netns)
//	xdp status                        CAP_SYS_ADMIN                            as set-up
//	bench                             root                                     as set-up
//
// Only `sluice run` drops: its set-up is finished before the command
// starts, and the command may run for a long time with untrusted traffic on
// sluice's packet path. The other commands run their privileged work from
// start to end.
package privs
