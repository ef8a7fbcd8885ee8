package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"
)

// RRClient measures TCP round trips to a ServeRR server at addr: one
// connection, RRMessageSize bytes each way per round trip, one in flight,
// for d after 200 warm-up round trips (connection set-up, slow paths and
// the first ARP/NDP exchanges stay out of the figure). It is what `sluice
// __rr-client` runs inside a sandbox. Errors are reported in the result.
func RRClient(ctx context.Context, addr string, d time.Duration) RRResult {
	var (
		c   net.Conn
		err error
	)
	// The sandbox's network may come up a moment after the command
	// starts (slirp4netns, pasta): retry the connection for a while.
	deadline := time.Now().Add(5 * time.Second)
	for {
		var dl net.Dialer
		c, err = dl.DialContext(ctx, "tcp", addr)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return RRResult{Error: fmt.Sprintf("connect to %s: %v", addr, err)}
	}
	defer c.Close()
	// Bound every exchange, so a stalled path ends the client.
	_ = c.SetDeadline(time.Now().Add(d + 30*time.Second))
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	req, resp := make([]byte, RRMessageSize), make([]byte, RRMessageSize)
	trip := func() error {
		if _, err := c.Write(req); err != nil {
			return err
		}
		_, err := io.ReadFull(c, resp)
		return err
	}
	for range 200 {
		if err := trip(); err != nil {
			return RRResult{Error: fmt.Sprintf("warm-up round trip: %v", err)}
		}
	}
	var rtts []float64
	end := time.Now().Add(d)
	for {
		start := time.Now()
		if !start.Before(end) {
			break
		}
		if err := trip(); err != nil {
			return RRResult{Error: fmt.Sprintf("round trip %d: %v", len(rtts)+1, err)}
		}
		rtts = append(rtts, float64(time.Since(start).Nanoseconds())/1e3)
	}
	return RRResult{RoundTrips: len(rtts), MedianUS: Median(rtts)}
}
