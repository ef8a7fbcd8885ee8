package dataplane

import (
	"errors"
	"testing"
)

func TestVnetHdrRoundTrip(t *testing.T) {
	for _, h := range []VnetHdr{
		{},
		{Flags: VnetFlagNeedsCsum, GSOType: VnetGSOTCPv4, HdrLen: 66, GSOSize: 1448, CsumStart: 34, CsumOffset: 16},
		{Flags: VnetFlagDataValid, GSOType: VnetGSOTCPv6 | VnetGSOECN, HdrLen: 0xffff, GSOSize: 0x1234, CsumStart: 0xfedc, CsumOffset: 0xba98},
	} {
		var b [VnetHdrLen + 3]byte
		h.Encode(b[:])
		got, err := ParseVnetHdr(b[:])
		if err != nil || got != h {
			t.Errorf("ParseVnetHdr(Encode(%+v)) = %+v, %v", h, got, err)
		}
	}
	// The wire format is little-endian, as KERNEL-NOTES measured.
	var b [VnetHdrLen]byte
	VnetHdr{Flags: 1, GSOType: 1, HdrLen: 66, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}.Encode(b[:])
	if want := [VnetHdrLen]byte{1, 1, 66, 0, 0xa8, 0x05, 34, 0, 16, 0}; b != want {
		t.Errorf("Encode = % x, want % x", b, want)
	}
	if _, err := ParseVnetHdr(b[:9]); !errors.Is(err, ErrMalformed) {
		t.Errorf("ParseVnetHdr(9 bytes) = %v, want ErrMalformed", err)
	}
}

func TestVnetHdrValidate(t *testing.T) {
	cases := []struct {
		name  string
		h     VnetHdr
		frame int
		ok    bool
	}{
		{"plain", VnetHdr{}, 60, true},
		{"tcp gso", VnetHdr{Flags: VnetFlagNeedsCsum, GSOType: VnetGSOTCPv4, HdrLen: 66, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}, 65226, true},
		{"udp l4 ecn", VnetHdr{GSOType: VnetGSOUDPL4 | VnetGSOECN, GSOSize: 1000}, 10042, true},
		{"unknown gso", VnetHdr{GSOType: 2}, 60, false},
		{"gso size 0", VnetHdr{GSOType: VnetGSOTCPv6}, 60, false},
		{"hdr_len past frame", VnetHdr{GSOType: VnetGSOTCPv4, GSOSize: 1, HdrLen: 61}, 60, false},
		{"csum past frame", VnetHdr{Flags: VnetFlagNeedsCsum, CsumStart: 50, CsumOffset: 9}, 60, false},
		{"csum at end", VnetHdr{Flags: VnetFlagNeedsCsum, CsumStart: 50, CsumOffset: 8}, 60, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.h.Validate(tc.frame)
			if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrMalformed)) {
				t.Errorf("Validate(%d) = %v, want ok=%v", tc.frame, err, tc.ok)
			}
		})
	}
}

// FuzzVnetHdr: parsing never panics, Encode inverts Parse, and a header that
// Validate accepts keeps its checksum field and GSO header inside the frame.
func FuzzVnetHdr(f *testing.F) {
	seed := func(h VnetHdr, frameLen int) {
		var b [VnetHdrLen]byte
		h.Encode(b[:])
		f.Add(b[:], frameLen)
	}
	seed(VnetHdr{}, 60)
	seed(VnetHdr{Flags: VnetFlagNeedsCsum, GSOType: VnetGSOTCPv4, HdrLen: 66, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}, 65226)
	seed(VnetHdr{Flags: VnetFlagNeedsCsum, GSOType: VnetGSOUDPL4, HdrLen: 42, GSOSize: 1000, CsumStart: 34, CsumOffset: 6}, 10042)
	f.Add([]byte{1, 2, 3}, 10)
	f.Fuzz(func(t *testing.T, b []byte, frameLen int) {
		h, err := ParseVnetHdr(b)
		if err != nil {
			if len(b) >= VnetHdrLen {
				t.Fatalf("ParseVnetHdr(%d bytes): %v", len(b), err)
			}
			return
		}
		var out [VnetHdrLen]byte
		h.Encode(out[:])
		if string(out[:]) != string(b[:VnetHdrLen]) {
			t.Fatalf("Encode(Parse(% x)) = % x", b[:VnetHdrLen], out)
		}
		if err := h.Validate(frameLen); err == nil {
			if h.Flags&VnetFlagNeedsCsum != 0 && int(h.CsumStart)+int(h.CsumOffset)+2 > frameLen {
				t.Fatalf("accepted checksum at %d+%d in a %d-byte frame", h.CsumStart, h.CsumOffset, frameLen)
			}
			if h.IsGSO() && (h.GSOSize == 0 || int(h.HdrLen) > frameLen) {
				t.Fatalf("accepted GSO header %+v for a %d-byte frame", h, frameLen)
			}
		}
	})
}
