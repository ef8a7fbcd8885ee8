// Package rawfile is sluice's one doorway for raw system calls and unsafe
// pointer work on descriptors: recvmmsg, sendmmsg, readv, writev, poll with a
// stop eventfd, and the kernel ABI structs they take.
//
// x/sys/unix has no wrappers for recvmmsg and sendmmsg, and its Readv/Writev
// take [][]byte and build an iovec array on every call. The functions here
// take caller-owned, reused iovec and mmsghdr arrays instead, and return a
// bare unix.Errno (0 on success) so that hot loops do not allocate an error;
// callers turn errnos into errors at their own edge.
//
// Every function expects a non-blocking descriptor (or passes MSG_DONTWAIT):
// waiting is done by Wait, which also watches a stop eventfd so that a reader
// or writer can be told to give up.
package rawfile
