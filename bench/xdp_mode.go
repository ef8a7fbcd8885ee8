package bench

import (
	"errors"

	"github.com/sluicenet/sluice/dataplane"
)

// ModeXDP is the dispatch scenario's AF_XDP mode, "xdp": the endpoint reads
// va through AF_XDP sockets (one per channel, each on an rx queue of its
// own) that sluice's redirect program feeds, in copy mode (veth has no
// zero-copy), instead of AF_PACKET sockets. sluice's xdp.Endpoint is
// measured against gVisor's pkg/tcpip/link/xdp endpoint, which reads a
// single queue, so it has no figures for more than one channel. The value
// lies outside dataplane's modes: only this package gives it a meaning.
const ModeXDP dataplane.Mode = 16

// modeName is a dispatch mode's flag spelling, xdp included.
func modeName(m dataplane.Mode) string {
	if m == ModeXDP {
		return "xdp"
	}
	return m.String()
}

// errNotMeasured wraps the reason a measurement was left out on purpose (an
// implementation that cannot run the configuration): RunDispatch reports it
// on Progress and carries on without an error.
var errNotMeasured = errors.New("not measured")
