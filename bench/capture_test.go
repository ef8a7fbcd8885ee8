package bench

import (
	"strings"
	"testing"
	"time"
)

func TestCaptureOptionsValidate(t *testing.T) {
	for name, c := range map[string]struct {
		o    CaptureOptions
		want string
	}{
		"defaults":  {CaptureOptions{Sluice: "/bin/sluice"}, ""},
		"no binary": {CaptureOptions{}, "Sluice"},
		"no sluice": {CaptureOptions{Impls: []string{ImplTcpdump}}, ""},
		"short":     {CaptureOptions{Sluice: "x", Duration: time.Millisecond}, "Duration"},
		"bad via":   {CaptureOptions{Sluice: "x", Vias: []string{"readv"}}, "Vias"},
		"bad impl":  {CaptureOptions{Sluice: "x", Impls: []string{"wireshark"}}, "Impls"},
		"bad cpu":   {CaptureOptions{Sluice: "x", CPUs: []string{"both"}}, "CPUs"},
	} {
		err := c.o.Validate()
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: %v, want an error naming %q", name, err, c.want)
		}
	}
	if v, err := ParseCaptureVias([]string{"xdp,mmap", "mmap"}); err != nil || strings.Join(v, ",") != "mmap,xdp" {
		t.Errorf("ParseCaptureVias: %v %v", v, err)
	}
	if _, err := ParseCaptureImpls([]string{"tshark"}); err == nil {
		t.Error("ParseCaptureImpls accepted tshark")
	}
	if c, err := ParseCaptureCPUs([]string{"shared"}); err != nil || len(c) != 1 {
		t.Errorf("ParseCaptureCPUs: %v %v", c, err)
	}
	if got := captureConfig("mmap", CPUShared); got != "via=mmap,cpu=shared" {
		t.Errorf("captureConfig = %q", got)
	}
}
