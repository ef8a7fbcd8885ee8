package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"

	"github.com/sluicenet/sluice/bench"
	"github.com/sluicenet/sluice/dataplane"
)

func TestBenchTCPBadFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{name: "unknown gso", args: []string{"--gso", "tso"}, want: `--gso: unknown GSO kind "tso" (want some of none, host, software)`},
		{name: "bad gro", args: []string{"--gro", "yes"}, want: `--gro: "yes": want on or off`},
		{name: "unknown mode", args: []string{"--modes", "af_xdp"}, want: `--modes: unknown dispatch mode "af_xdp" (want readv, recvmmsg, mmap or xdp)`},
		{name: "zero flows", args: []string{"--flows", "1,0"}, want: `--flows: "0": want a whole number of connections from 1 to 64`},
		{name: "unknown direction", args: []string{"--directions", "left"}, want: `--directions: unknown direction "left" (want some of up, down)`},
		{name: "bad peer-tso", args: []string{"--peer-tso", "auto"}, want: `--peer-tso: "auto": want on or off`},
		{name: "bad ip", args: []string{"--ip", "5"}, want: `--ip: "5": want 4 or 6`},
		{name: "unknown impl", args: []string{"--impls", "dpdk"}, want: `--impls: unknown implementation "dpdk"`},
		{name: "peer tso off going down only", args: []string{"--directions", "down", "--peer-tso", "off"}, want: "--peer-tso off is measured in the up direction only"},
		{name: "duration too long", args: []string{"--duration", "1h"}, want: "--duration 1h0m0s: must be between 100ms and 10m0s"},
		{name: "stray argument", args: []string{"extra"}, want: `unknown command "extra"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"bench", "tcp"}, tc.args...)
			code := execute(context.Background(), args, &stdout, &stderr)
			if code == 0 {
				t.Fatalf("execute(%q) = 0, want a non-zero status", args)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tc.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q, want nothing", stdout.String())
			}
		})
	}
}

// TestBenchTCPDefaults checks that the flags' defaults are DefaultTCPOptions,
// which the help text describes.
func TestBenchTCPDefaults(t *testing.T) {
	cmd := newBenchTCPCmd(&bytes.Buffer{}, &bytes.Buffer{})
	if err := cmd.ParseFlags(nil); err != nil {
		t.Fatal(err)
	}
	o := benchTCPOptions{duration: mustDuration(t, cmd, "duration")}
	for name, dst := range map[string]*[]string{
		"gso": &o.gso, "gro": &o.gro, "modes": &o.modes, "flows": &o.flows, "directions": &o.directions,
		"peer-tso": &o.peerTSO, "ip": &o.ip, "impls": &o.impls,
	} {
		v, err := cmd.Flags().GetStringSlice(name)
		if err != nil {
			t.Fatal(err)
		}
		*dst = v
	}
	got, err := o.toBench(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := bench.DefaultTCPOptions()
	if diff := cmp.Diff(configNames(want.Configs()), configNames(got.Configs())); diff != "" {
		t.Errorf("default configurations (-want +got):\n%s", diff)
	}
	if got.Duration != want.Duration {
		t.Errorf("Duration = %v, want %v", got.Duration, want.Duration)
	}
	if diff := cmp.Diff(want.Impls, got.Impls); diff != "" {
		t.Errorf("Impls (-want +got):\n%s", diff)
	}
}

func TestBenchTCPOptionsToBench(t *testing.T) {
	o := benchTCPOptions{
		duration:   500 * time.Millisecond,
		gso:        []string{"host", "none"},
		gro:        []string{"off"},
		modes:      []string{"recvmmsg"},
		flows:      []string{"4"},
		directions: []string{"up"},
		peerTSO:    []string{"off", "on"},
		ip:         []string{"6"},
		impls:      []string{"gvisor", "sluice"},
	}
	got, err := o.toBench(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"gso=host,gro=off,mode=recvmmsg,flows=4,dir=up,peer_tso=off,ip=6",
		"gso=none,gro=off,mode=recvmmsg,flows=4,dir=up,peer_tso=off,ip=6",
		"gso=host,gro=off,mode=recvmmsg,flows=4,dir=up,peer_tso=on,ip=6",
		"gso=none,gro=off,mode=recvmmsg,flows=4,dir=up,peer_tso=on,ip=6",
	}
	if diff := cmp.Diff(want, configNames(got.Configs())); diff != "" {
		t.Errorf("configurations (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]dataplane.Mode{dataplane.RecvMMsg}, got.Modes); diff != "" {
		t.Errorf("Modes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"sluice", "gvisor"}, got.Impls); diff != "" {
		t.Errorf("Impls (-want +got): sluice first, ratios are sluice/gvisor\n%s", diff)
	}
}

func configNames(cs []bench.TCPConfig) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.String())
	}
	return out
}

func mustDuration(t *testing.T, cmd *cobra.Command, name string) time.Duration {
	t.Helper()
	d, err := cmd.Flags().GetDuration(name)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
