package netns

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// Thread is an OS thread that has joined a network namespace for good and
// runs functions there, one at a time: a socket one of them creates belongs
// to that namespace. Joining a namespace (setns) needs CAP_SYS_ADMIN each
// time; a Thread joins once, so a process that has given up its
// capabilities can still open sockets in the namespace through it.
//
// Functions run on it must not block for long (create a socket, bind or
// listen; not connect and wait): every caller waits its turn.
type Thread struct {
	reqs      chan func()
	quit      chan struct{}
	done      chan struct{} // closed when the thread has ended
	closeOnce sync.Once
}

// NewThread starts a thread in the network namespace nsfd. Close ends it.
func NewThread(nsfd int) (*Thread, error) {
	t := &Thread{reqs: make(chan func()), quit: make(chan struct{}), done: make(chan struct{})}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: when the goroutine returns, the runtime ends
		// the thread instead of reusing it in the wrong namespace.
		runtime.LockOSThread()
		defer close(t.done)
		if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("netns: setns: %w", os.NewSyscallError("setns", err))
			return
		}
		errc <- nil
		for {
			select {
			case fn := <-t.reqs:
				fn()
			case <-t.quit:
				return
			}
		}
	}()
	if err := <-errc; err != nil {
		return nil, err
	}
	return t, nil
}

// ErrThreadClosed is returned by Do after Close.
var ErrThreadClosed = errors.New("netns: thread closed")

// Do runs fn on the thread and returns its error.
func (t *Thread) Do(fn func() error) (err error) {
	ran := make(chan struct{})
	select {
	case t.reqs <- func() { defer close(ran); err = fn() }:
	case <-t.done:
		return ErrThreadClosed
	}
	<-ran
	return err
}

// Close ends the thread once the function it runs, if any, returns; Do
// fails with ErrThreadClosed afterwards. It is idempotent.
func (t *Thread) Close() {
	t.closeOnce.Do(func() { close(t.quit) })
	<-t.done
}
