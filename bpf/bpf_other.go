//go:build !linux

package bpf

// The programs, loader and attach code are Linux-only (the generated
// objects carry a linux build tag); on other systems only the portable
// types (Program, Mode, Counters, errors) exist, so that code which names
// them still builds. cmd/sluice's xdp command reports ErrNotSupported.
