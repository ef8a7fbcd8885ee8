// Package fdbased is a gVisor stack.LinkEndpoint over sluice's dataplane.
package fdbased

import _ "gvisor.dev/gvisor/pkg/tcpip/stack"
