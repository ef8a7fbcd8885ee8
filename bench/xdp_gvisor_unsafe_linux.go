package bench

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	gxdp "gvisor.dev/gvisor/pkg/xdp"

	"github.com/sluicenet/sluice/internal/rawfile"
)

// gVisor's AF_XDP endpoint (pkg/tcpip/link/xdp at the version in go.mod)
// cannot be stopped as a stack stops an endpoint:
//
//   - Attach(nil) takes the endpoint's lock and then calls IsAttached,
//     which takes the same lock for reading: it deadlocks, every time.
//   - Its reader returns (true, nil) from dispatch when its stop eventfd
//     fires, and the loop around dispatch continues on true: once stopped,
//     the reader spins on a readable eventfd for ever, burning a CPU.
//   - Close does nothing, and nothing ever unmaps its UMEM and rings or
//     closes its stop eventfd (runsc keeps it for the sandbox's lifetime).
//
// Its sending is measured as it is, in the benchmark's calls of 47 packets,
// which is also its qdisc's batch (fifo.BatchSize, runsc always puts the
// FIFO qdisc in front of it): it kicks the kernel once per call, only after
// reserving room for the whole call, and a copy-mode kick sends at most 32
// frames (TX_BATCH_SIZE, net/xdp/xsk.c). Frames pile up in the tx ring
// until a reservation fails, and from then on it refuses every write
// without kicking: after about 1,200 frames it sends nothing more until a
// received frame makes its reader poll (xsk_poll sends in copy mode), which
// tx_pps, with nothing coming in, never does. With calls of 32 it keeps
// sending (about 0.4 Mpps on this kind of machine); that is not how it is
// used.
//
// The reader does leave when the socket it polls reports POLLHUP or
// POLLERR (rawfile.BlockingPollUntilStopped turns that into ECONNRESET).
// So gvisorXDP stops it that way: it puts a pipe whose write end is closed
// (POLLHUP for ever) at the socket's descriptor number, and fires the stop
// eventfd to wake the poll in progress, which was still on the socket; the
// next poll sees the hang-up and the reader returns. Then, with no reader
// left, release unmaps the socket's rings and UMEM and closes what the
// endpoint left open, and the socket goes away, freeing the queue for the
// next measurement.

// gvisorXDP wraps gVisor's xdp endpoint with a working stop.
type gvisorXDP struct {
	stack.LinkEndpoint
	xsk    int // the socket's descriptor number: the pipe's after stop
	keep   int // a duplicate of the socket, to find its mappings by
	stopFD int // the endpoint's stop eventfd
	umem   []byte
	once   sync.Once
}

// Attach implements stack.LinkEndpoint: nil stops the reader (see above)
// instead of deadlocking.
func (g *gvisorXDP) Attach(d stack.NetworkDispatcher) {
	if d == nil {
		g.stop()
		return
	}
	g.LinkEndpoint.Attach(d)
}

// Close implements stack.LinkEndpoint.
func (g *gvisorXDP) Close() { g.stop() }

func (g *gvisorXDP) stop() {
	g.once.Do(func() {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			// Without the pipe the reader cannot be made to leave;
			// stopping it with the eventfd alone would make it spin.
			fmt.Fprintf(os.Stderr, "bench: stop gvisor xdp reader: %v\n", err)
			return
		}
		unix.Close(p[1])
		if err := unix.Dup3(p[0], g.xsk, unix.O_CLOEXEC); err != nil {
			fmt.Fprintf(os.Stderr, "bench: stop gvisor xdp reader: %v\n", err)
		}
		unix.Close(p[0])
		_ = rawfile.Stop(g.stopFD)
	})
}

// release frees what the stopped endpoint leaves: the mappings of its
// socket (rings), its UMEM, the socket and its stop eventfd.
func (g *gvisorXDP) release() error {
	errs := []error{unmapSocketMappings([]int{g.keep})}
	if g.umem != nil {
		// The raw call: unix.Munmap only unmaps what unix.Mmap mapped,
		// and gVisor mapped this with its own memutil.MapSlice.
		_, _, errno := unix.Syscall(unix.SYS_MUNMAP, uintptr(unsafe.Pointer(unsafe.SliceData(g.umem))), uintptr(len(g.umem)), 0)
		if errno != 0 {
			errs = append(errs, fmt.Errorf("bench: unmap gvisor xdp umem: %w", os.NewSyscallError("munmap", errno)))
		}
		g.umem = nil
	}
	errs = append(errs, closeFDs([]int{g.keep, g.xsk, g.stopFD}))
	return errors.Join(errs...)
}

// gvisorUMEM returns the UMEM of gVisor's xdp endpoint ep (the memory its
// control block mapped), found through its unexported fields.
func gvisorUMEM(ep stack.LinkEndpoint) ([]byte, error) {
	v := reflect.ValueOf(ep)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil, fmt.Errorf("bench: gvisor xdp endpoint is a %T", ep)
	}
	cf := v.Elem().FieldByName("control")
	if !cf.IsValid() || cf.Kind() != reflect.Pointer || cf.Type().Elem() != reflect.TypeOf(gxdp.ControlBlock{}) {
		return nil, fmt.Errorf("bench: gvisor xdp endpoint %T has no control block where expected", ep)
	}
	cb := (*gxdp.ControlBlock)(unsafe.Pointer(cf.Pointer()))
	mf := reflect.ValueOf(&cb.UMEM).Elem().FieldByName("mem")
	if !mf.IsValid() || mf.Type() != reflect.TypeOf([]byte(nil)) {
		return nil, fmt.Errorf("bench: gvisor xdp UMEM has no mem slice where expected")
	}
	return *(*[]byte)(unsafe.Pointer(mf.UnsafeAddr())), nil
}
