package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicenet/sluice/capture"
	"github.com/sluicenet/sluice/dataplane"
)

// captureOptions are `sluice capture`'s flags, as typed.
type captureOptions struct {
	iface      string
	netns      string
	write      string
	count      uint64
	snaplen    int
	duration   time.Duration
	via        capture.Via
	channels   int
	format     capture.Format
	precision  capture.Precision
	fileSize   string // -C: millions of bytes, or with a k, m or g suffix
	rotateSecs int    // -G
	fileCount  int    // -W
	bufferKiB  int    // -B
	verbose    bool
	noGSOInfo  bool
	filter     []string
	// ready, for tests, is called once frames are being captured.
	ready func()
}

func newCaptureCmd(stdout, stderr io.Writer) *cobra.Command {
	var o captureOptions
	cmd := &cobra.Command{
		Use:   "capture -i IFACE -w FILE [flags] [FILTER...]",
		Short: "Capture an interface's frames into a pcap or pcapng file",
		Long: `capture writes the frames crossing an interface (both directions) into a
pcap or pcapng file that tcpdump, tshark and Wireshark read. Flags follow
tcpdump's letters where tcpdump has one.

Frames are read from a TPACKET_V3 ring shared with the kernel (--via mmap,
the default) and copied once, into the file's write buffer; --via recvmmsg
reads them with recvmmsg(2); --via xdp takes them from sluice's XDP capture
program (received frames only, at most 4096 bytes each, and the interface
must have no XDP program). --channels N > 1 reads N sockets in a
PACKET_FANOUT hash group: each flow stays on one socket, so in order.

FILTER is tcpdump's filter language (for example: tcp port 80 and host
192.0.2.1); it is compiled by running tcpdump -ddd, so tcpdump must be
installed to use one, and attached to the sockets so the kernel drops what
is not wanted. An invalid filter is an error before anything is captured.

VLAN tags the kernel strips from received frames are put back. pcapng files
carry the interface's name and description, kernel drop statistics, and per
frame the direction, channel or queue, the drops since the previous frame,
and a sluice option with the dispatch mode and the GSO segment count.

On a terminal a status line shows frames, bytes, rate and kernel drops; a
summary goes to stderr at the end. Ctrl-C (SIGINT) stops the capture and
leaves a complete file. A full disk or an interface that goes away ends the
capture with a message; the file stays readable up to the last whole frame.`,
		Example: `  sudo sluice capture -i eth0 -w eth0.pcap
  sudo sluice capture -i vb --netns demo -w - tcp port 5201 | tcpdump -r -
  sudo sluice capture -i vb --format pcapng --tstamp-precision nano -c 1000 -w x.pcapng
  sudo sluice capture -i vb -w ring.pcap -C 100 -W 5          # 5 files of 100 MB, reused
  sudo sluice capture -i vb -w 'cap-%H%M%S.pcap' -G 60 -W 10  # a file a minute, 10 of them`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.filter = args
			return runCapture(cmd.Context(), stdout, stderr, o)
		},
	}
	o.via, o.format, o.precision = capture.ViaMMap, capture.FormatPcap, capture.Micro
	f := cmd.Flags()
	f.StringVarP(&o.iface, "interface", "i", "", "interface to capture on (required)")
	f.StringVar(&o.netns, "netns", "", "network namespace of the interface, by name (ip netns) or path; default the current one")
	f.StringVarP(&o.write, "write", "w", "", "file to write, - for stdout (required)")
	f.Uint64VarP(&o.count, "count", "c", 0, "stop after this many frames (default: no limit)")
	f.IntVarP(&o.snaplen, "snaplen", "s", 0, fmt.Sprintf("bytes kept of each frame (default %d; at most and by default %d with --via xdp)", capture.DefaultSnaplen, capture.XDPSnaplen))
	f.DurationVar(&o.duration, "duration", 0, "stop after this long, for example 30s (default: no limit)")
	f.Var(&o.via, "via", "how frames are read: mmap, recvmmsg or xdp")
	f.IntVar(&o.channels, "channels", 1, fmt.Sprintf("sockets in a PACKET_FANOUT hash group, 1 to %d (mmap and recvmmsg)", capture.MaxChannels))
	f.Var(&o.format, "format", "file format: pcap or pcapng")
	f.Var(&o.precision, "tstamp-precision", "timestamp resolution in the file: micro or nano")
	f.StringVarP(&o.fileSize, "file-size", "C", "", "start a new file when the current one is larger than this many millions of bytes (suffix k, m or g for KiB, MiB, GiB), as tcpdump -C")
	f.IntVarP(&o.rotateSecs, "rotate-seconds", "G", 0, "start a new file every this many seconds, the -w name expanded with strftime, as tcpdump -G")
	f.IntVarP(&o.fileCount, "file-count", "W", 0, "with -C: reuse this many files in a ring; with -G alone: stop after this many files")
	f.IntVarP(&o.bufferKiB, "buffer-size", "B", capture.DefaultBufferBytes>>10, "ring (mmap) or socket buffer (recvmmsg) of each channel, in KiB")
	f.BoolVarP(&o.verbose, "verbose", "v", false, "print one decoded line per frame (to stdout; to stderr with -w -)")
	f.BoolVar(&o.noGSOInfo, "no-gso-info", false, "do not read frames with PACKET_VNET_HDR: no GSO segment counts, but no super-frame of a GSO type the header cannot express is dropped")
	_ = cmd.MarkFlagRequired("interface")
	_ = cmd.MarkFlagRequired("write")
	return cmd
}

// parseFileSize parses -C: millions of bytes, or KiB, MiB, GiB with a k, m
// or g suffix, as tcpdump 4.99 does.
func parseFileSize(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	mult := int64(1_000_000)
	switch strings.ToLower(s[len(s)-1:]) {
	case "k":
		mult, s = 1<<10, s[:len(s)-1]
	case "m":
		mult, s = 1<<20, s[:len(s)-1]
	case "g":
		mult, s = 1<<30, s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("-C %q: want a positive number of millions of bytes (or with a k, m or g suffix)", s)
	}
	return n * mult, nil
}

// toCapture turns the flags into capture.Options.
func (o captureOptions) toCapture(stdout, stderr io.Writer) (capture.Options, error) {
	size, err := parseFileSize(o.fileSize)
	if err != nil {
		return capture.Options{}, err
	}
	if o.rotateSecs < 0 {
		return capture.Options{}, fmt.Errorf("-G %d: must not be negative", o.rotateSecs)
	}
	if o.bufferKiB <= 0 {
		return capture.Options{}, fmt.Errorf("-B %d: want a positive number of KiB", o.bufferKiB)
	}
	return capture.Options{
		Interface:   o.iface,
		NetNS:       o.netns,
		Output:      o.write,
		Stdout:      stdout,
		Count:       o.count,
		Snaplen:     o.snaplen,
		Duration:    o.duration,
		Via:         o.via,
		Channels:    o.channels,
		Format:      o.format,
		Precision:   o.precision,
		Filter:      strings.Join(o.filter, " "),
		BufferBytes: o.bufferKiB << 10,
		FileSize:    size,
		RotateEvery: time.Duration(o.rotateSecs) * time.Second,
		FileCount:   o.fileCount,
		NoGSOInfo:   o.noGSOInfo,
		Logger:      slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}, nil
}

// runCapture is `sluice capture` without cobra.
func runCapture(ctx context.Context, stdout, stderr io.Writer, o captureOptions) error {
	opts, err := o.toCapture(stdout, stderr)
	if err != nil {
		return err
	}
	// -v lines go where the capture does not.
	var lines io.Writer = stdout
	if o.write == "-" {
		lines = stderr
	}
	// The status line needs a terminal of its own: not one that -v lines
	// scroll through.
	errTTY := false
	if f, ok := stderr.(*os.File); ok && isTerminal(f) {
		errTTY = true
		if o.verbose && lines != stderr {
			if lf, ok := lines.(*os.File); ok && isTerminal(lf) {
				errTTY = false
			}
		}
		if o.verbose && lines == stderr {
			errTTY = false
		}
	}
	var status statusLine
	status.w = stderr
	if o.verbose {
		nano := o.precision == capture.Nano
		opts.OnFrame = func(fi capture.FrameInfo) {
			fmt.Fprintln(lines, capture.Summary(fi, nano))
		}
	}
	started := make(chan struct{})
	opts.Ready = func() {
		close(started)
		if o.ready != nil {
			o.ready()
		}
	}
	c, err := capture.Open(ctx, opts)
	if err != nil {
		return hintCapture(err)
	}
	fmt.Fprintf(stderr, "sluice: capturing on %s via %s, writing %s%s\n", o.iface, c.Via(), o.write, filterNote(opts.Filter))
	done := make(chan struct{})
	var wg sync.WaitGroup
	if errTTY {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status.run(c, o.iface, started, done)
		}()
	}
	runErr := c.Run(ctx)
	close(done)
	wg.Wait()
	st := c.Stats()
	printSummary(stderr, st, c.Via(), o.write, why(ctx, runErr, o, st))
	if runErr != nil {
		return hintCapture(runErr)
	}
	return nil
}

func filterNote(f string) string {
	if f == "" {
		return ""
	}
	return fmt.Sprintf(" (filter %q)", f)
}

// why says why the capture ended.
func why(ctx context.Context, err error, o captureOptions, st capture.Stats) string {
	switch {
	case err != nil:
		return "error"
	case ctx.Err() != nil:
		return "interrupted"
	case o.count > 0 && st.Frames >= o.count:
		return "count reached"
	case o.duration > 0 && st.Elapsed >= o.duration:
		return "duration reached"
	case o.fileCount > 0:
		return "file count reached"
	}
	return "done"
}

// printSummary prints tcpdump's three lines, in frames, with more detail.
func printSummary(w io.Writer, st capture.Stats, via capture.Via, out, why string) {
	rate := 0.0
	if st.Elapsed > 0 {
		rate = float64(st.Frames) / st.Elapsed.Seconds()
	}
	files := ""
	if st.Files > 1 {
		files = fmt.Sprintf(" in %d files", st.Files)
	}
	fmt.Fprintf(w, "sluice: capture %s after %.2fs\n", why, st.Elapsed.Seconds())
	fmt.Fprintf(w, "%d frames captured (%s) to %s%s via %s, %.0f frames/s\n", st.Frames, humanBytes(st.Bytes), out, files, via, rate)
	fmt.Fprintf(w, "%d frames received by filter\n", st.Received)
	fmt.Fprintf(w, "%d frames dropped by kernel\n", st.KernelDrops)
	if st.Filtered > 0 {
		fmt.Fprintf(w, "%d frames rejected by the filter in user space\n", st.Filtered)
	}
}

func humanBytes(n uint64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.2f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}

// statusLine redraws one line on a terminal.
type statusLine struct {
	w io.Writer
}

func (s *statusLine) run(c *capture.Capture, iface string, started, done chan struct{}) {
	select {
	case <-started:
	case <-done:
		return
	}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	var last capture.Stats
	lastT := time.Now()
	for {
		select {
		case <-done:
			fmt.Fprint(s.w, "\r\x1b[K")
			return
		case now := <-tick.C:
			st := c.Stats()
			dt := now.Sub(lastT).Seconds()
			fps := float64(st.Frames-last.Frames) / dt
			bps := float64(st.Bytes-last.Bytes) * 8 / dt
			fmt.Fprintf(s.w, "\r\x1b[K%s: %d frames, %s, %.0f frames/s (%s), %d dropped by kernel",
				iface, st.Frames, humanBytes(st.Bytes), fps, humanBits(bps), st.KernelDrops)
			last, lastT = st, now
		}
	}
}

func humanBits(bps float64) string {
	switch {
	case bps >= 1e9:
		return fmt.Sprintf("%.2f Gbit/s", bps/1e9)
	case bps >= 1e6:
		return fmt.Sprintf("%.1f Mbit/s", bps/1e6)
	}
	return fmt.Sprintf("%.0f kbit/s", bps/1e3)
}

// hintCapture adds what to do next to errors that have an obvious fix.
func hintCapture(err error) error {
	var we *capture.WriteError
	switch {
	case errors.As(err, &we):
		return err
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%w: capturing needs root (CAP_NET_RAW, CAP_NET_ADMIN; CAP_BPF and CAP_SYS_ADMIN for --via xdp)", err)
	case errors.Is(err, dataplane.ErrDeviceGone):
		return err
	}
	return err
}
