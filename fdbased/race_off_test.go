//go:build !race

package fdbased

const raceEnabled = false
