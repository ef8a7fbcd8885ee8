package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/netns"
	"github.com/sluicenet/sluice/sandbox"
)

// The demo's server namespace addresses: TEST-NET-style private ranges that
// no sandbox default overlaps. They sit on the namespace's lo, so the demo
// needs no dummy interface module.
var (
	demoServer4 = netip.MustParseAddr("10.200.0.1")
	demoServer6 = netip.MustParseAddr("fd00:200::1")
)

const (
	demoHTTPPort = 80
	demoSinkPort = 9 // discard
	// demoSeed seeds the served data, so the checksum is the same on every
	// run and machine.
	demoSeed = "sluice demo data, deterministic"
)

const demoClientCommand = "__demo-client"

// demoTimeout bounds a demo run of size bytes each way: two minutes, plus
// the transfers at 10 MB/s, 50 times below the FIELD-NOTES' slowest sandbox
// (0.5 Gbit/s).
func demoTimeout(size int64) time.Duration {
	return 2*time.Minute + time.Duration(2*size/(10<<20))*time.Second
}

type demoOptions struct {
	cfg    sandbox.Config
	size   int64
	stdout io.Writer
	stderr io.Writer
}

func newDemoCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &demoOptions{cfg: sandbox.DefaultConfig(), stdout: stdout, stderr: stderr}
	o.cfg.Profile = sandbox.ProfileThroughput
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Show the sandbox at work: a download and an upload through sluice, checksummed, with interface stats",
		Long: `demo creates a server namespace of its own (sluice-demo-PID, with
10.200.0.1 and fd00:200::1 on its loopback; nothing outside it is touched),
serves deterministic data over HTTP and a TCP sink from sockets in it, and
runs a client (sluice itself) in a sandbox whose uplink dials into that
namespace (--uplink-netns). The client downloads the data and checks its
SHA-256, uploads as much to the sink, and fetches a little over IPv6. demo
prints bytes moved, throughput, the checksum verdict and the interface
stats, then removes the namespace (also on ^C).

The sandbox flags of 'sluice run' apply; the default profile here is
throughput. Needs root.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("uplink-netns") {
				return errors.New("--uplink-netns: the demo uses a namespace of its own; drop the flag")
			}
			if err := o.cfg.Finish(cmd.Flags()); err != nil {
				return err
			}
			return runDemo(cmd.Context(), o)
		},
	}
	cmd.Flags().Int64Var(&o.size, "size", 50<<20, "bytes to download and to upload")
	o.cfg.RegisterFlags(cmd.Flags())
	return cmd
}

// demoResult is what the client reports, as JSON on its stdout.
type demoResult struct {
	DownloadBytes   int64    `json:"download_bytes"`
	DownloadSeconds float64  `json:"download_seconds"`
	SHA256          string   `json:"sha256"`
	SHA256Served    string   `json:"sha256_served"`
	UploadBytes     int64    `json:"upload_bytes"`
	UploadSeconds   float64  `json:"upload_seconds"`
	UploadAcked     int64    `json:"upload_acked"`
	IPv6Bytes       int64    `json:"ipv6_bytes"`
	IPv6SHA256      string   `json:"ipv6_sha256"`
	IPv6Served      string   `json:"ipv6_sha256_served"`
	Errors          []string `json:"errors,omitempty"`
}

func runDemo(ctx context.Context, o *demoOptions) error {
	if os.Geteuid() != 0 {
		return errors.New("demo creates a network namespace and a sandbox: run it as root")
	}
	if o.size <= 0 {
		return fmt.Errorf("--size %d: must be positive", o.size)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("demo: find sluice's executable: %w", err)
	}
	ns := fmt.Sprintf("sluice-demo-%d", os.Getpid())
	if err := netns.Create(ns); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer func() {
		if err := netns.Delete(ns); err != nil {
			fmt.Fprintf(o.stderr, "sluice demo: remove namespace %s: %v\n", ns, err)
		} else {
			fmt.Fprintf(o.stdout, "cleaned up: namespace %s removed, sandbox gone\n", ns)
		}
	}()
	if err := addLoopbackAddrs(ns, demoServer4, demoServer6); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	srv, err := startDemoServers(ns)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer srv.close()

	cfg := o.cfg
	cfg.UplinkNetNS = netns.Path(ns)
	a4, a6 := sandbox.AddressingOf(cfg.Subnet), sandbox.AddressingOf(cfg.Subnet6)
	fmt.Fprintf(o.stdout, "server namespace %s: HTTP on %v:%d and [%v]:%d, TCP sink on %v:%d\n",
		ns, demoServer4, demoHTTPPort, demoServer6, demoHTTPPort, demoServer4, demoSinkPort)
	fmt.Fprintf(o.stdout, "sandbox: eth0 %v and %v behind the netstack gateway %v / %v, MTU %d\n",
		a4.Sandbox, a6.Sandbox, a4.Gateway, a6.Gateway, cfg.EffectiveMTU())
	fmt.Fprintf(o.stdout, "config: --profile=%v --dispatch=%v --num-network-channels=%d --gso=%v --software-gso=%v --qdisc=%v --tx-checksum-offload=%v --rx-checksum-offload=%v\n",
		cfg.Profile, cfg.Dispatch, cfg.NumNetworkChannels, cfg.GSO, cfg.SoftwareGSO, cfg.QDisc, cfg.TXChecksumOffload, cfg.RXChecksumOffload)

	var out bytes.Buffer
	size := strconv.FormatInt(o.size, 10)
	sb, err := sandbox.Start(ctx, sandbox.Options{
		Config: cfg,
		Args: []string{self, demoClientCommand,
			"--url", fmt.Sprintf("http://%v:%d/data?size=%s", demoServer4, demoHTTPPort, size),
			"--url6", fmt.Sprintf("http://[%v]:%d/data?size=%d", demoServer6, demoHTTPPort, 1<<20),
			"--sink", netip.AddrPortFrom(demoServer4, demoSinkPort).String(),
			"--upload", size},
		Stdout:          &out,
		Stderr:          o.stderr,
		NewProcessGroup: true,
	})
	if err != nil {
		return err
	}
	defer sb.Close()
	// The client bounds each transfer itself; this bounds the whole run.
	timeout := demoTimeout(o.size)
	limit := time.NewTimer(timeout)
	defer limit.Stop()
	select {
	case <-sb.Done():
	case <-ctx.Done():
		sb.Close()
		return fmt.Errorf("demo: interrupted: %w", ctx.Err())
	case <-limit.C:
		sb.Close()
		return fmt.Errorf("demo: the client did not finish within %v", timeout)
	}
	code, err := sb.Wait()
	stats := sb.Stats()
	sb.Close()
	if err != nil {
		return err
	}
	var r demoResult
	if jerr := json.Unmarshal(out.Bytes(), &r); jerr != nil {
		return fmt.Errorf("demo: the client (exit status %d) reported %q: %w", code, out.String(), jerr)
	}
	ok := code == 0 && len(r.Errors) == 0
	fmt.Fprintf(o.stdout, "download  %d bytes in %.3f s = %s  sha256 %s %s\n", r.DownloadBytes, r.DownloadSeconds,
		gbps(r.DownloadBytes, r.DownloadSeconds), short(r.SHA256), verdict(r.SHA256 != "" && r.SHA256 == r.SHA256Served))
	ok = ok && r.SHA256 == r.SHA256Served && r.DownloadBytes == o.size
	fmt.Fprintf(o.stdout, "upload    %d bytes in %.3f s = %s  sink received %d bytes %s\n", r.UploadBytes, r.UploadSeconds,
		gbps(r.UploadBytes, r.UploadSeconds), r.UploadAcked, verdict(r.UploadAcked == o.size))
	ok = ok && r.UploadAcked == o.size
	fmt.Fprintf(o.stdout, "ipv6      %d bytes from [%v] sha256 %s %s\n", r.IPv6Bytes, demoServer6, short(r.IPv6SHA256),
		verdict(r.IPv6SHA256 != "" && r.IPv6SHA256 == r.IPv6Served))
	ok = ok && r.IPv6SHA256 == r.IPv6Served
	for _, e := range r.Errors {
		fmt.Fprintf(o.stdout, "client error: %s\n", e)
	}
	fmt.Fprintln(o.stdout, "interface stats (stack side: rx = sent by the sandbox, tx = received by it):")
	if err := sandbox.WriteStatsText(o.stdout, stats); err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("demo: the transfer was not verified (client exit status %d)", code)
	}
	return nil
}

func verdict(ok bool) string {
	if ok {
		return "verified"
	}
	return "MISMATCH"
}

func short(h string) string {
	if len(h) > 16 {
		return h[:16] + "..."
	}
	return h
}

func gbps(n int64, secs float64) string {
	if secs <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f Gbit/s", float64(n)*8/secs/1e9)
}

// addLoopbackAddrs puts addrs on lo in namespace ns (host routes, so the
// namespace's main table stays empty and no sandbox subnet overlaps it).
func addLoopbackAddrs(ns string, addrs ...netip.Addr) error {
	nsh, err := vnetns.GetFromPath(netns.Path(ns))
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", ns, err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", ns, err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("lo in %s: %w", ns, err)
	}
	for _, a := range addrs {
		ipn := &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
		addr := &netlink.Addr{IPNet: ipn}
		if a.Is6() {
			// Usable at once: without NODAD the address stays
			// tentative (bind fails) until DAD's work has run.
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(lo, addr); err != nil {
			return fmt.Errorf("add %v to lo in %s: %w", a, ns, err)
		}
	}
	return nil
}

// demoServers are the HTTP server and the TCP sink, on sockets opened in
// the demo namespace but served by sluice's own goroutines.
type demoServers struct {
	http      *http.Server
	listeners []net.Listener
	wg        sync.WaitGroup
}

func startDemoServers(ns string) (*demoServers, error) {
	s := &demoServers{http: &http.Server{Handler: http.HandlerFunc(serveDemoData), ReadHeaderTimeout: 10 * time.Second}}
	var web []net.Listener
	var sink net.Listener
	err := netns.Do(ns, func() error {
		for _, a := range []netip.Addr{demoServer4, demoServer6} {
			l, err := net.Listen("tcp", netip.AddrPortFrom(a, demoHTTPPort).String())
			if err != nil {
				return err
			}
			web = append(web, l)
		}
		var err error
		sink, err = net.Listen("tcp", netip.AddrPortFrom(demoServer4, demoSinkPort).String())
		return err
	})
	s.listeners = append(append(s.listeners, web...), sink)
	if err != nil {
		s.close()
		return nil, fmt.Errorf("listen in %s: %w", ns, err)
	}
	for _, l := range web {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); _ = s.http.Serve(l) }()
	}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); serveSink(sink) }()
	return s, nil
}

func (s *demoServers) close() {
	_ = s.http.Close()
	for _, l := range s.listeners {
		if l != nil {
			l.Close()
		}
	}
	s.wg.Wait()
}

// serveDemoData serves /data?size=N (N deterministic bytes) and
// /data.sha256?size=N (their SHA-256 in hex).
func serveDemoData(w http.ResponseWriter, r *http.Request) {
	size, err := strconv.ParseInt(r.URL.Query().Get("size"), 10, 64)
	if err != nil || size < 0 || size > 1<<40 {
		http.Error(w, "size: want a byte count", http.StatusBadRequest)
		return
	}
	switch r.URL.Path {
	case "/data":
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = io.Copy(w, demoData(size))
	case "/data.sha256":
		h := sha256.New()
		_, _ = io.Copy(h, demoData(size))
		fmt.Fprintln(w, hex.EncodeToString(h.Sum(nil)))
	default:
		http.NotFound(w, r)
	}
}

// demoData returns size bytes of a ChaCha8 stream with a fixed seed:
// incompressible, the same everywhere, and produced at GB/s.
func demoData(size int64) io.Reader {
	var seed [32]byte
	copy(seed[:], demoSeed)
	return io.LimitReader(rand.NewChaCha8(seed), size)
}

// serveSink reads each connection to its end and answers with the byte
// count (8 bytes, big endian), so the client knows everything arrived.
func serveSink(l net.Listener) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Minute))
			n, _ := io.Copy(io.Discard, c)
			var b [8]byte
			binary.BigEndian.PutUint64(b[:], uint64(n))
			_, _ = c.Write(b[:])
		}()
	}
}

type demoClientOptions struct {
	url, url6, sink string
	upload          int64
}

// newDemoClientCmd is the demo's client, run inside the sandbox:
// `sluice __demo-client --url U --url6 U6 --sink ADDR --upload N`. It prints
// a demoResult as JSON.
func newDemoClientCmd(stdout io.Writer) *cobra.Command {
	o := &demoClientOptions{}
	cmd := &cobra.Command{
		Use:    demoClientCommand,
		Short:  "The demo's client (internal)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r := runDemoClient(cmd.Context(), o)
			b, err := json.Marshal(r)
			if err != nil {
				return err
			}
			fmt.Fprintln(stdout, string(b))
			if len(r.Errors) > 0 {
				return exitError{1}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&o.url, "url", "", "data URL to download and check against URL.sha256")
	cmd.Flags().StringVar(&o.url6, "url6", "", "a second data URL, over IPv6")
	cmd.Flags().StringVar(&o.sink, "sink", "", "TCP sink address to upload to")
	cmd.Flags().Int64Var(&o.upload, "upload", 0, "bytes to upload")
	return cmd
}

func runDemoClient(ctx context.Context, o *demoClientOptions) demoResult {
	var r demoResult
	fail := func(format string, args ...any) { r.Errors = append(r.Errors, fmt.Sprintf(format, args...)) }
	// No proxy from the environment: the demo talks to its own servers.
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableCompression: true}, Timeout: demoTimeout(o.upload)}

	start := time.Now()
	n, sum, err := fetchSHA(ctx, client, o.url)
	r.DownloadSeconds = time.Since(start).Seconds()
	r.DownloadBytes, r.SHA256 = n, sum
	if err != nil {
		fail("download %s: %v", o.url, err)
	}
	if r.SHA256Served, err = fetchText(ctx, client, strings.Replace(o.url, "/data?", "/data.sha256?", 1)); err != nil {
		fail("checksum of %s: %v", o.url, err)
	}

	if o.url6 != "" {
		r.IPv6Bytes, r.IPv6SHA256, err = fetchSHA(ctx, client, o.url6)
		if err != nil {
			fail("download %s: %v", o.url6, err)
		}
		if r.IPv6Served, err = fetchText(ctx, client, strings.Replace(o.url6, "/data?", "/data.sha256?", 1)); err != nil {
			fail("checksum of %s: %v", o.url6, err)
		}
	}

	if o.sink != "" && o.upload > 0 {
		start = time.Now()
		sent, acked, err := upload(ctx, o.sink, o.upload)
		r.UploadSeconds = time.Since(start).Seconds()
		r.UploadBytes, r.UploadAcked = sent, acked
		if err != nil {
			fail("upload to %s: %v", o.sink, err)
		}
	}
	return r
}

func fetchSHA(ctx context.Context, c *http.Client, url string) (int64, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, "", fmt.Errorf("HTTP %s", resp.Status)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	return n, hex.EncodeToString(h.Sum(nil)), err
}

func fetchText(ctx context.Context, c *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1024))
	return strings.TrimSpace(string(b)), err
}

// upload sends size bytes to the sink, half-closes, and reads the sink's
// count of what arrived.
func upload(ctx context.Context, addr string, size int64) (sent, acked int64, err error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(demoTimeout(size)))
	sent, err = io.Copy(c, demoData(size))
	if err != nil {
		return sent, 0, err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return sent, 0, err
	}
	var b [8]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return sent, 0, fmt.Errorf("read the sink's count: %w", err)
	}
	return sent, int64(binary.BigEndian.Uint64(b[:])), nil
}
