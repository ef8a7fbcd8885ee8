package bench

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"
)

// sandboxScenario runs the sandbox scenario (RunSandbox) in the suite: one
// step per implementation (per dispatch mode for sluice), each building
// the server namespace and that implementation's sandbox and removing them
// before it returns. The binary running the suite is sluice itself (`sluice
// bench all`), which RunSandbox re-executes as `sluice run` and as the
// round-trip client.
type sandboxScenario struct{}

// sandboxStep is a sandbox Step's Arg; stack is sluice's stack, empty for
// the netstack.
type sandboxStep struct{ impl, mode, stack string }

// sandboxSetup is a measurement's cost beyond its window: a sandbox (or a
// pasta) started per client run, iperf3's handshake and the rr warm-up,
// about a second on a 2-vCPU VM.
const sandboxSetup = time.Second

func (sandboxScenario) Name() string { return ScenarioSandbox }

func (sandboxScenario) Description() string {
	return "a client in a sandbox namespace to a server in a test namespace, through sluice run (per dispatch mode, throughput profile; registered plugin stacks in recvmmsg mode), " +
		"pasta, slirp4netns and kernel routing over a veth (the limit): iperf3 TCP throughput (tcp_gbps) and 64-byte round trips (rr_us)"
}

// sandboxOptionsFor is the step's RunSandbox options under the suite's.
func sandboxOptionsFor(opts SuiteOptions, s sandboxStep) SandboxOptions {
	o := DefaultSandboxOptions()
	o.Duration = opts.Duration
	o.Impls = []string{s.impl}
	o.Modes = []string{s.mode}
	if s.stack != "" {
		o.Stacks = []string{s.stack}
	}
	if opts.Quick {
		o.Flows = []int{1}
	}
	return o
}

// sluiceExe returns the running binary, or why it cannot stand in for
// sluice: a Go test binary (a suite run in-process by a test) would take
// `run ...` and `bench sandbox __rr-client` for its own flags and run its
// tests again instead.
func sluiceExe() (string, string) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Sprintf("cannot find the running binary to re-execute as sluice run: %v", err)
	}
	if strings.HasSuffix(exe, ".test") {
		return "", "the running binary is a Go test binary, not sluice (it re-executes itself as sluice run): run it through the sluice binary"
	}
	return exe, ""
}

func (sandboxScenario) Plan(opts SuiteOptions) ([]Step, string) {
	if skip := needNamespaces(); skip != "" {
		return nil, skip
	}
	if _, skip := sluiceExe(); skip != "" {
		return nil, skip
	}
	var specs []sandboxStep
	modes := DefaultSandboxOptions().Modes
	if opts.Quick {
		// recvmmsg is runsc's mode; one mode against every peer.
		modes = []string{"recvmmsg"}
	}
	for _, m := range modes {
		specs = append(specs, sandboxStep{impl: ImplSluice, mode: m})
	}
	// Plugin stacks in runsc's mode, beside the netstack (not in a quick
	// run, whose plan stays the smallest).
	if !opts.Quick {
		for _, st := range opts.SandboxStacks {
			if st != StackNetstack {
				specs = append(specs, sandboxStep{impl: ImplSluice, mode: "recvmmsg", stack: st})
			}
		}
	}
	for _, impl := range SandboxImpls[1:] {
		specs = append(specs, sandboxStep{impl: impl})
	}
	var steps []Step
	for _, s := range specs {
		o := sandboxOptionsFor(opts, s)
		n := len(o.configs(s.impl, o.Stacks))
		// iperf3 windows are whole seconds.
		window := max(time.Second, opts.Duration.Round(time.Second))
		cfg := "impl=" + s.impl
		if s.stack != "" {
			cfg += ",stack=" + s.stack
		}
		if s.mode != "" {
			cfg += ",mode=" + s.mode
		}
		steps = append(steps, Step{Label: "sandbox " + cfg, Config: cfg, Estimate: time.Duration(n) * (window + sandboxSetup), Arg: s})
	}
	return steps, ""
}

func (sandboxScenario) Run(ctx context.Context, opts SuiteOptions, step Step, out *StepOutput) error {
	s, ok := step.Arg.(sandboxStep)
	if !ok {
		return fmt.Errorf("bench: sandbox: step %q has no sandbox configuration", step.Label)
	}
	exe, skip := sluiceExe()
	if skip != "" {
		return fmt.Errorf("bench: sandbox: %s", skip)
	}
	o := sandboxOptionsFor(opts, s)
	o.Exe = exe
	res, err := RunSandbox(ctx, o)
	if res != nil {
		for _, r := range res.Rows {
			out.Row(r)
		}
		for _, sk := range res.Skips {
			out.Skip(s.impl, "", strings.TrimPrefix(sk, s.impl+": "))
		}
	}
	return err
}
