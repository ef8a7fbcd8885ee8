package bench

import "testing"

func TestParseVmHWM(t *testing.T) {
	for _, tc := range []struct {
		name    string
		status  string
		want    uint64
		wantErr string
	}{
		{name: "real layout", status: "Name:\tsluice\nVmPeak:\t  123456 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n", want: 20480},
		{name: "missing", status: "Name:\tsluice\nVmRSS:\t 10240 kB\n", wantErr: "no VmHWM line"},
		{name: "malformed", status: "VmHWM:\t20480\n", wantErr: "malformed VmHWM line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseVmHWM([]byte(tc.status))
			checkErr(t, err, tc.wantErr)
			if got != tc.want {
				t.Errorf("parseVmHWM = %d, want %d", got, tc.want)
			}
		})
	}
}

// TestPeakRSS checks the reset-then-read cycle on this process: after a
// reset the peak is at least what a fresh allocation touched.
func TestPeakRSS(t *testing.T) {
	if err := resetPeakRSS(); err != nil {
		t.Fatal(err)
	}
	before, err := peakRSSMiB()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 64<<20)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	after, err := peakRSSMiB()
	if err != nil {
		t.Fatal(err)
	}
	if after < before+60 {
		t.Errorf("peak RSS %0.1f MiB after touching 64 MiB, was %0.1f MiB", after, before)
	}
	b[0] = 2 // keep b alive until the second read
}
