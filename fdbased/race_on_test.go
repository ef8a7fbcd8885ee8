//go:build race

package fdbased

// raceEnabled: the race detector makes sync.Pool drop items at random and
// instruments allocations, so allocation counts mean nothing under it.
const raceEnabled = true
