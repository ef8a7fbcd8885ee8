package dataplane

import (
	"errors"
	"net"
)

var (
	// ErrClosed is returned by calls on a closed Link. It is net.ErrClosed
	// so that errors.Is(err, net.ErrClosed) works; do not retry.
	ErrClosed = net.ErrClosed
	// ErrNotSupported wraps errors for kernel features or descriptor kinds
	// that a mechanism needs and does not have; pick another mechanism.
	ErrNotSupported = errors.New("not supported")
	// ErrMalformed wraps errors for bytes that do not parse (a truncated or
	// inconsistent header); the frame is dropped and counted, keep reading.
	ErrMalformed = errors.New("malformed")
)
