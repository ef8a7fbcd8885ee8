//go:build !linux

package privs

import "errors"

// Options say what Drop keeps.
type Options struct {
	Keep        []Cap
	KeepAllCaps bool
	Seccomp     bool
}

// Result is what Drop left in force.
type Result struct {
	Kept       Set
	NoNewPrivs bool
	Seccomp    bool
}

// Drop is Linux-only.
func Drop(Options) (Result, error) {
	return Result{}, errors.New("privs: dropping privileges is Linux-only")
}
