package sandbox

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/sluicenet/sluice/dataplane"
	"github.com/sluicenet/sluice/xdp"
)

// LinkStats are one link's counters at the end of a run: the fields of the
// reference's per-interface network stats, from the stack side (rx is what
// the sandbox sent, tx what it received).
type LinkStats struct {
	Name string `json:"name"`
	dataplane.Stats
	// Modes are the dispatch modes the link's channels actually ran, after
	// any fallback.
	Modes []string `json:"modes,omitempty"`
	// Offloads says which offloads the link ran, and why any requested
	// one did not.
	Offloads *dataplane.OffloadReport `json:"offloads,omitempty"`
	// XDP are an AF_XDP link's own counters: bind mode (copy or
	// zerocopy), queues, kicks and the kernel's ring statistics.
	XDP *xdp.XDPStats `json:"xdp,omitempty"`
}

// Report is the JSON document of --stats-file.
type Report struct {
	Interfaces []LinkStats `json:"interfaces"`
	// Policy are the egress policy's counters: flows decided per rule.
	Policy []PolicyStats `json:"policy,omitempty"`
	// DNS are the DNS service's counters; absent without --dns.
	DNS *DNSStats `json:"dns,omitempty"`
	// Stack is the registered name of the stack behind eth0 (netstack
	// with --network sandbox); absent with --network host or none.
	Stack string `json:"stack,omitempty"`
	// StackServices are the stack's own service counters; absent when it
	// has none.
	StackServices map[string]uint64 `json:"stack_services,omitempty"`
	// ExitStatus is the command's exit status as sluice reports it.
	ExitStatus int `json:"exit_status"`
}

// WriteStatsText prints stats as a table.
func WriteStatsText(w io.Writer, stats []LinkStats) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "interface\trx packets\trx bytes\trx errors\trx dropped\ttx packets\ttx bytes\ttx errors\ttx dropped\tfaults\tdispatch\t")
	for _, s := range stats {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t\n", s.Name,
			s.RxPackets, s.RxBytes, s.RxErrors, s.RxDropped,
			s.TxPackets, s.TxBytes, s.TxErrors, s.TxDropped, s.Faults, strings.Join(s.Modes, ","))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range stats {
		if s.Offloads != nil {
			if _, err := fmt.Fprintf(w, "%s offloads: %s\n", s.Name, s.Offloads); err != nil {
				return err
			}
		}
		if x := s.XDP; x != nil {
			k := x.Kernel
			if _, err := fmt.Fprintf(w, "%s AF_XDP: %d queues in %s mode, %d kicks (%d failed); kernel: rx_dropped=%d rx_ring_full=%d rx_fill_ring_empty=%d rx_invalid=%d tx_invalid=%d\n",
				s.Name, x.Queues, x.Mode, x.Kicks, x.KickErrors, k.RxDropped, k.RxRingFull, k.RxFillRingEmpty, k.RxInvalidDescs, k.TxInvalidDescs); err != nil {
				return err
			}
		}
	}
	return nil
}

// WritePolicyStatsText prints the policy's counters, one rule a line.
func WritePolicyStatsText(w io.Writer, stats []PolicyStats) error {
	if len(stats) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "policy rule	verdict	flows	")
	for _, s := range stats {
		fmt.Fprintf(tw, "%s\t%s\t%d\t\n", s.Rule, s.Verdict, s.Flows)
	}
	return tw.Flush()
}

// WriteServiceStatsText prints a stack's service counters, one a line, in
// name order.
func WriteServiceStatsText(w io.Writer, stack string, stats map[string]uint64) error {
	names := make([]string, 0, len(stats))
	for n := range stats {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if _, err := fmt.Fprintf(w, "%s: %s %d\n", stack, n, stats[n]); err != nil {
			return err
		}
	}
	return nil
}

// WriteReportFile writes r as JSON to path, through a temporary file in the
// same directory so that a reader never sees half a document.
func WriteReportFile(path string, r Report) error {
	if r.Interfaces == nil {
		r.Interfaces = []LinkStats{}
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("sandbox: encode stats: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("sandbox: --stats-file %s: %w", path, err)
	}
	_, err = tmp.Write(append(b, '\n'))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("sandbox: --stats-file %s: %w", path, err)
	}
	return nil
}

// WriteDNSStatsText prints the DNS service's counters on one line; nothing
// when the service is off (d nil).
func WriteDNSStatsText(w io.Writer, d *DNSStats) error {
	if d == nil {
		return nil
	}
	_, err := fmt.Fprintf(w, "dns: %d UDP and %d TCP queries, %d answers (%d truncated, %d malformed), %d address bindings, %d answered SERVFAIL by sluice (%d for a failed upstream), %d bad queries\n",
		d.QueriesUDP, d.QueriesTCP, d.Answers, d.Truncated, d.Malformed, d.Addresses, d.ServFail, d.UpstreamFailed, d.BadQueries)
	return err
}
