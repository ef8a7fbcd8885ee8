package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func TestBenchDispatchBadFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{name: "unknown mode", args: []string{"--modes", "bogus"}, want: `--modes: unknown dispatch mode "bogus" (want readv, recvmmsg, mmap or xdp)`},
		{name: "one bad mode among good", args: []string{"--modes", "readv,bogus"}, want: `unknown dispatch mode "bogus"`},
		{name: "zero channels", args: []string{"--channels", "0"}, want: `--channels: "0": want a whole number of channels from 1 to 64`},
		{name: "unknown metric", args: []string{"--metrics", "rx_pps,latency"}, want: `--metrics: unknown metric "latency"`},
		{name: "unknown impl", args: []string{"--impls", "dpdk"}, want: `--impls: unknown implementation "dpdk"`},
		{name: "duration too short", args: []string{"--duration", "1ms"}, want: "--duration 1ms: must be between 100ms and 10m0s"},
		{name: "duration not a duration", args: []string{"--duration", "3"}, want: `invalid argument "3" for "--duration"`},
		{name: "stray argument", args: []string{"extra"}, want: `unknown command "extra"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"bench", "dispatch"}, tc.args...)
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

func TestBenchDispatchOptionsToBench(t *testing.T) {
	o := benchDispatchOptions{
		duration: 2 * time.Second,
		modes:    []string{"mmap"},
		channels: []string{"2", "1"},
		metrics:  []string{"tx_pps"},
		impls:    []string{"gvisor", "sluice"},
	}
	d, err := o.toBench(nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Modes[0].String(); len(d.Modes) != 1 || got != "mmap" {
		t.Errorf("Modes = %v, want [mmap]", d.Modes)
	}
	if len(d.Channels) != 2 || d.Channels[0] != 2 || d.Channels[1] != 1 {
		t.Errorf("Channels = %v, want [2 1] (order as given)", d.Channels)
	}
	if len(d.Impls) != 2 || d.Impls[0] != "sluice" {
		t.Errorf("Impls = %v, want sluice first: ratios are sluice/gvisor", d.Impls)
	}
}
