//go:build !linux

package bench

// probeOS knows nothing beyond what the Go runtime says on this system.
func probeOS(*Machine) {}
