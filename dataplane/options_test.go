package dataplane

import (
	"strings"
	"testing"
)

func TestLinkOptionsDefaults(t *testing.T) {
	o := LinkOptions{FDs: []int{3}}.withDefaults()
	if err := o.validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if o.MaxFrameSize != 65664 || o.RecvBatchSize != DefaultRecvBatchSize || o.SendBatchSize != DefaultSendBatchSize ||
		o.ProcessorsPerChannel != 1 || o.Allocator == nil || o.Logger == nil || len(o.BufferShape) != len(DefaultBufferShape) {
		t.Errorf("defaults: %+v", o)
	}
	// A smaller shape gives a smaller default MaxFrameSize.
	if o := (LinkOptions{BufferShape: []int{100, 200}}).withDefaults(); o.MaxFrameSize != 300 {
		t.Errorf("MaxFrameSize for shape 100+200 = %d, want 300", o.MaxFrameSize)
	}
}

func TestLinkOptionsValidate(t *testing.T) {
	cases := []struct {
		name string
		o    LinkOptions
		want string // "" = valid
	}{
		{"ok", LinkOptions{FDs: []int{0}}, ""},
		{"no fds", LinkOptions{}, "FDs is empty"},
		{"negative fd", LinkOptions{FDs: []int{1, -2}}, "FDs[1] = -2"},
		{"mode", LinkOptions{FDs: []int{0}, Mode: 9}, "Mode"},
		{"shape", LinkOptions{FDs: []int{0}, BufferShape: []int{-1}}, "BufferShape[0] = -1"},
		{"max frame", LinkOptions{FDs: []int{0}, MaxFrameSize: 1 << 20}, "MaxFrameSize"},
		{"recv batch", LinkOptions{FDs: []int{0}, RecvBatchSize: 5000}, "RecvBatchSize 5000"},
		{"send batch", LinkOptions{FDs: []int{0}, SendBatchSize: -1}, "SendBatchSize -1"},
		{"ring block", LinkOptions{FDs: []int{0}, RingBlockSize: 5000}, "RingBlockSize 5000"},
		{"processors", LinkOptions{FDs: []int{0}, ProcessorsPerChannel: 300}, "ProcessorsPerChannel 300"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.o.withDefaults().validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("validate: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("validate: %v, want an error naming %q", err, tc.want)
			}
		})
	}
}

func TestSocketOptionsValidate(t *testing.T) {
	if err := (SocketOptions{}).withDefaults().validate(); err == nil || !strings.Contains(err.Error(), "Interface") {
		t.Errorf("empty Interface: %v", err)
	}
	if err := (SocketOptions{Interface: "x", RcvBufBytes: -1}).validate(); err == nil {
		t.Error("negative RcvBufBytes accepted")
	}
	if o := (SocketOptions{Interface: "x"}).withDefaults(); o.Protocol != EthPAll {
		t.Errorf("default Protocol %#x, want ETH_P_ALL", o.Protocol)
	}
}

func TestModeParse(t *testing.T) {
	for _, m := range Modes {
		got, err := ParseMode(m.String())
		if err != nil || got != m {
			t.Errorf("ParseMode(%q) = %v, %v", m.String(), got, err)
		}
	}
	if _, err := ParseMode("xdp-zc"); err == nil || !strings.Contains(err.Error(), `"xdp-zc"`) {
		t.Errorf("ParseMode(bad): %v", err)
	}
}
