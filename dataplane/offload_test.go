package dataplane

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestOffloadReport(t *testing.T) {
	r := &OffloadReport{Device: "va", Driver: "veth", Probed: true, Offloads: []OffloadState{
		{Name: OffloadHostGSOTCPv4, Requested: true, Effective: true, Probe: ProbeOK},
		{Name: OffloadTxChecksum, Requested: true, Effective: false, Reason: "no virtio_net_hdr"},
		{Name: OffloadGRO},
	}}
	if !r.Effective(OffloadHostGSOTCPv4) || r.Effective(OffloadTxChecksum) || r.Effective("nonesuch") {
		t.Errorf("Effective disagrees with the states: %v", r)
	}
	want := "host-gso-tcpv4=on, tx-checksum=off (requested: no virtio_net_hdr), gro=off"
	if got := r.String(); got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
	c := r.Clone()
	c.Offloads[0].Effective = false
	if !r.Effective(OffloadHostGSOTCPv4) {
		t.Error("Clone shares the states")
	}
	var nilReport *OffloadReport
	if nilReport.String() != "<none>" || nilReport.Clone() != nil || nilReport.Effective(OffloadGRO) {
		t.Error("a nil report is not empty")
	}
	s := Stats{RxPackets: 1}.Add(Stats{RxPackets: 2, Offloads: r})
	if s.RxPackets != 3 || s.Offloads != r {
		t.Errorf("Add = %+v, want the counters summed and the report kept", s)
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"offloads":{"device":"va"`) || !strings.Contains(string(b), `"name":"tx-checksum","requested":true,"effective":false,"reason":"no virtio_net_hdr"`) {
		t.Errorf("JSON lacks the report: %s", b)
	}
	if b, _ := json.Marshal(Stats{}); strings.Contains(string(b), "offloads") {
		t.Errorf("a Stats without offloads mentions them: %s", b)
	}
}
