//go:build linux

package dataplane

// The memory shared with the kernel by PACKET_RX_RING (and PACKET_TX_RING):
// the mapping itself and the status words through which ownership of a slot
// or block passes between the kernel and us. Everything else in the ring is
// read with ordinary loads through tpacket.go's checked parsers, and only
// after an atomic load of the status word has shown that we own it.

import (
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmapRing maps the ring of socket fd, size bytes (tp_block_size *
// tp_block_nr), shared and writable: we hand slots back by writing their
// status words.
func mmapRing(fd, size int) ([]byte, error) {
	b, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, os.NewSyscallError("mmap", err)
	}
	return b, nil
}

// munmapRing unmaps a ring returned by mmapRing.
func munmapRing(b []byte) error {
	if err := unix.Munmap(b); err != nil {
		return os.NewSyscallError("munmap", err)
	}
	return nil
}

// statusWord returns the 32-bit word at ring[off:off+4]. The slice
// expression bounds-checks off; the offsets we use are multiples of 16 from
// the page-aligned start of the mapping (slots, blocks and block_status at 8),
// so a misaligned one is a bug in the caller, not ring contents.
func statusWord(ring []byte, off int) *uint32 {
	w := ring[off : off+4 : off+4]
	p := (*uint32)(unsafe.Pointer(unsafe.SliceData(w)))
	if uintptr(unsafe.Pointer(p))%4 != 0 {
		panic(fmt.Sprintf("dataplane: ring status word at offset %d is not 4-byte aligned", off))
	}
	return p
}

// loadStatus reads the status word at off with acquire semantics: when it
// shows TP_STATUS_USER, the kernel's writes to the slot or block before it set
// the word (af_packet.c orders them with smp_wmb) are visible to the
// ordinary loads that follow.
func loadStatus(ring []byte, off int) uint32 {
	return atomic.LoadUint32(statusWord(ring, off))
}

// storeStatus writes the status word at off with release semantics, so that
// every read we made of the slot or block happens before the kernel can see
// it as free and overwrite it.
func storeStatus(ring []byte, off int, v uint32) {
	atomic.StoreUint32(statusWord(ring, off), v)
}
