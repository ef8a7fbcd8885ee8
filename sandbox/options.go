package sandbox

import (
	"errors"
	"io"
	"log/slog"
)

// InitCommand is the hidden subcommand of sluice that runs as the sandbox's
// init (RunInit).
const InitCommand = "__sandbox-init"

// GuardCommand is the hidden subcommand of sluice that runs as the sandbox's
// guard (RunGuard).
const GuardCommand = "__sandbox-guard"

// ErrSetupFailed is returned by RunInit when sluice closed the go-ahead pipe
// without a word: setting up the network failed (sluice reports why), so the
// command must not run.
var ErrSetupFailed = errors.New("sandbox: network setup failed; the command was not started")

// Options configure Start.
type Options struct {
	// Config is the network configuration; it must pass Validate.
	Config Config
	// Args is the command and its arguments. Args[0] is looked up in PATH
	// before anything is created.
	Args []string
	// Env is the command's environment; nil means sluice's.
	Env []string
	// Dir is the command's working directory; empty means sluice's.
	Dir string
	// Stdin, Stdout and Stderr are the command's; nil means /dev/null.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// NewProcessGroup puts the command in a process group of its own, so
	// that signals sent to sluice's group reach it once (through sluice)
	// rather than twice.
	NewProcessGroup bool
	// Foreground makes the command's process group the foreground group
	// of the terminal on its stdin (which must be one); it implies
	// NewProcessGroup.
	Foreground bool
	// InitPath is the sluice executable that the child re-executes as its
	// init (InitCommand) and the guard (GuardCommand); empty means
	// /proc/self/exe. A program that embeds the sandbox without being
	// sluice points it at a sluice binary.
	InitPath string
	// Facts reads the host facts; nil means HostFactSource.
	Facts FactSource
	// PacketLog receives the lines of --log-packets; nil means os.Stderr.
	PacketLog io.Writer
	// PolicyLog receives the decisions of --log-policy; nil means
	// os.Stderr.
	PolicyLog io.Writer
	// Logger receives warnings (dispatch fallbacks) and debug details of
	// refused flows; nil discards.
	Logger *slog.Logger
	// Ready, if not nil, is called once everything is set up (namespaces,
	// veth, sockets, listeners) and before the command is let go; with
	// --network host, which sets nothing up, just after the command
	// started. An error tears the sandbox down and Start returns it.
	// sluice run gives up its privileges here (see RunPrivileges).
	Ready func(*Sandbox) error
}
