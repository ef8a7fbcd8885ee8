package sandbox

import (
	"fmt"
	"log/slog"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/netns"
)

// watchLink reports, on log, the stack-side link name (in the namespace of
// descriptor ns) going down or being deleted while the sandbox runs. Nothing
// in sluice does either before teardown, so it is someone else's doing
// (`ip link del` through the namespace of a process holding it), and the
// command loses its network: its eth0 is the same veth pair. The dataplane
// alone cannot tell: a packet socket reports ENETDOWN once and then reads
// nothing (net/packet/af_packet.c packet_notifier), and writes fail with
// ENXIO, counted as TxErrors; so without this the sandbox would go quiet
// without a word. The command keeps running and sees the loss as a network
// does (unreachable, stalled flows); sluice still exits with its status.
//
// stop ends the watch and waits for its goroutines; call it before ns is
// closed.
func watchLink(ns int, name string, log *slog.Logger) (stop func(), err error) {
	updates := make(chan netlink.LinkUpdate, 16)
	done := make(chan struct{})
	// The subscription socket is opened on a thread in ns, so it hears
	// that namespace's links.
	err = netns.DoFD(ns, func() error {
		return netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
			ErrorCallback: func(err error) {
				select {
				case <-done: // the socket closed by stop
				default:
					log.Warn("sandbox: watching the stack-side link failed; its loss would go unreported", "link", name, "err", err)
				}
			},
		})
	})
	if err != nil {
		return nil, fmt.Errorf("sandbox: watch %s: %w", name, err)
	}
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		wasUp := true
		// updates is closed when the subscription's socket is.
		for u := range updates {
			if u.Attrs().Name != name {
				continue
			}
			switch {
			case u.Header.Type == unix.RTM_DELLINK:
				log.Error("sandbox: the stack-side link was deleted while the command runs: the sandbox has no network any more", "link", name)
				wasUp = false
			case u.Flags&unix.IFF_UP == 0 && wasUp:
				log.Error("sandbox: the stack-side link was set down while the command runs: the sandbox has no network until it is up again", "link", name)
				wasUp = false
			case u.Flags&unix.IFF_UP != 0 && !wasUp:
				log.Warn("sandbox: the stack-side link is up again", "link", name)
				wasUp = true
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}, nil
}
