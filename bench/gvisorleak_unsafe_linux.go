package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// gVisor's fdbased endpoint (pkg/tcpip/link/fdbased at the version in
// go.mod) never releases what its dispatchers allocate: the stop eventfd
// of each dispatcher (pkg/tcpip/link/stopfd has no Close, and New makes a
// readv dispatcher per channel before replacing it with the mode asked
// for) and the 2 MiB PACKET_RX_RING mapping of the mmap mode. runsc keeps
// its endpoint for the sandbox's lifetime, so it never notices. Here a
// leaked mapping keeps its socket alive after close(2), still bound to va
// and copying every later frame into its ring, which would slow every
// later measurement and leave the namespace behind until exit. So once a
// gVisor endpoint has stopped, the benchmark releases both itself.
//
// The discarded readv dispatchers also leak their ProcessorsPerChannel
// processor goroutines, which wait for a close that never comes and keep
// the endpoint reachable, and with it the dispatchers actually used and
// their receive buffers: about 700 KiB per recvmmsg endpoint, 100 KiB per
// mmap one. Those goroutines cannot be reached from outside, but what they
// pin can be cut loose: dropDispatchers clears the stopped endpoint's
// dispatcher list, so the leak shrinks to the goroutines and the endpoint
// itself and later measurements' rss_mib does not carry earlier ones'.

// fdTable lists this process's descriptors and what they refer to.
func fdTable() (map[int]string, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	out := make(map[int]string, len(ents))
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil {
			out[fd] = l
		}
	}
	return out, nil
}

// newEventFDs returns the eventfds in after that were not in before.
func newEventFDs(before, after map[int]string) []int {
	var fds []int
	for fd, l := range after {
		if l == "anon_inode:[eventfd]" && before[fd] != l {
			fds = append(fds, fd)
		}
	}
	return fds
}

// unmapSocketMappings unmaps every mapping in this process of the sockets
// fds (their PACKET_RX_RINGs). Nothing may use those rings any more.
func unmapSocketMappings(fds []int) error {
	names := map[string]bool{}
	for _, fd := range fds {
		if l, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd)); err == nil && strings.HasPrefix(l, "socket:[") {
			names[l] = true
		}
	}
	if len(names) == 0 {
		return nil
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return fmt.Errorf("bench: release gvisor rings: %w", err)
	}
	var errs []error
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// start-end perms offset dev inode path
		if len(f) < 6 || !names[f[5]] {
			continue
		}
		start, end, ok := parseRange(f[0])
		if !ok {
			errs = append(errs, fmt.Errorf("bench: release gvisor rings: malformed maps line %q", sc.Text()))
			continue
		}
		if _, _, errno := unix.Syscall(unix.SYS_MUNMAP, start, end-start, 0); errno != 0 {
			errs = append(errs, fmt.Errorf("bench: release gvisor rings: %w", os.NewSyscallError("munmap", errno)))
		}
	}
	return errors.Join(errs...)
}

// parseRange parses the "start-end" hex address range of a maps line.
func parseRange(s string) (start, end uintptr, ok bool) {
	a, b, found := strings.Cut(s, "-")
	if !found {
		return 0, 0, false
	}
	x, err1 := strconv.ParseUint(a, 16, 64)
	y, err2 := strconv.ParseUint(b, 16, 64)
	if err1 != nil || err2 != nil || y <= x {
		return 0, 0, false
	}
	return uintptr(x), uintptr(y), true
}

// dropDispatchers clears the inboundDispatchers field of gVisor's fdbased
// endpoint ep, which must have stopped (Wait returned): nothing reads the
// field any more, and the goroutines gVisor leaks keep ep alive. An error
// means gVisor's endpoint no longer looks as expected; this file then
// needs updating for the new version.
func dropDispatchers(ep any) error {
	v := reflect.ValueOf(ep)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("bench: release gvisor dispatchers: %T is not a pointer to a struct", ep)
	}
	f := v.Elem().FieldByName("inboundDispatchers")
	if !f.IsValid() || f.Kind() != reflect.Slice {
		return fmt.Errorf("bench: release gvisor dispatchers: %T has no inboundDispatchers slice (gVisor changed: update %s)", ep, "bench/gvisorleak_unsafe_linux.go")
	}
	// The field is unexported: write it through its address.
	reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().SetZero()
	return nil
}
