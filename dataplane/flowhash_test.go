package dataplane

import (
	"encoding/binary"
	"testing"
)

// ipv4Packet builds an IPv4 header plus 4 bytes of ports.
func ipv4Packet(src, dst [4]byte, proto byte, sport, dport uint16) []byte {
	b := make([]byte, 24)
	b[0] = 0x45
	b[9] = proto
	copy(b[12:], src[:])
	copy(b[16:], dst[:])
	binary.BigEndian.PutUint16(b[20:], sport)
	binary.BigEndian.PutUint16(b[22:], dport)
	return b
}

func ipv6Packet(src, dst [16]byte, proto byte, sport, dport uint16) []byte {
	b := make([]byte, 44)
	b[0] = 0x60
	b[6] = proto
	copy(b[8:], src[:])
	copy(b[24:], dst[:])
	binary.BigEndian.PutUint16(b[40:], sport)
	binary.BigEndian.PutUint16(b[42:], dport)
	return b
}

func withEth(ethertype uint16, vlan bool, p []byte) []byte {
	b := make([]byte, 12, 18+len(p))
	if vlan {
		b = binary.BigEndian.AppendUint16(b, etherTypeVLAN)
		b = binary.BigEndian.AppendUint16(b, 42) // VLAN id
	}
	b = binary.BigEndian.AppendUint16(b, ethertype)
	return append(b, p...)
}

func TestFlowHashSymmetric(t *testing.T) {
	a4, b4 := [4]byte{192, 0, 2, 1}, [4]byte{192, 0, 2, 200}
	a6, b6 := [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 1}, [16]byte{0x20, 0x01, 0x0d, 0xb8, 14: 7, 15: 9}
	cases := []struct {
		name     string
		fwd, rev []byte
		eth      bool
	}{
		{"ipv4 tcp", ipv4Packet(a4, b4, 6, 40000, 443), ipv4Packet(b4, a4, 6, 443, 40000), false},
		{"ipv4 udp eth", withEth(etherTypeIPv4, false, ipv4Packet(a4, b4, 17, 5353, 53)), withEth(etherTypeIPv4, false, ipv4Packet(b4, a4, 17, 53, 5353)), true},
		{"ipv4 udp vlan", withEth(etherTypeIPv4, true, ipv4Packet(a4, b4, 17, 1, 2)), withEth(etherTypeIPv4, true, ipv4Packet(b4, a4, 17, 2, 1)), true},
		{"ipv6 tcp", ipv6Packet(a6, b6, 6, 1234, 80), ipv6Packet(b6, a6, 6, 80, 1234), false},
		{"ipv6 udp eth", withEth(etherTypeIPv6, false, ipv6Packet(a6, b6, 17, 9, 10)), withEth(etherTypeIPv6, false, ipv6Packet(b6, a6, 17, 10, 9)), true},
		{"icmp", ipv4Packet(a4, b4, 1, 8, 0), ipv4Packet(b4, a4, 1, 8, 0), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, seed := range []uint32{0, 1, 0xdeadbeef} {
				if f, r := FlowHash(tc.fwd, tc.eth, seed), FlowHash(tc.rev, tc.eth, seed); f != r {
					t.Errorf("seed %#x: forward %#x, reverse %#x", seed, f, r)
				}
			}
		})
	}
}

// 1024 flows spread over 2, 4 and 8 buckets within ±30% of even (3.6
// standard deviations for 8 buckets), and the seed changes the assignment.
func TestFlowHashSpread(t *testing.T) {
	var flows [][]byte
	for i := range 1024 {
		flows = append(flows, withEth(etherTypeIPv4, false, ipv4Packet([4]byte{192, 0, 2, byte(i % 16)}, [4]byte{192, 0, 2, 100}, 17, uint16(10000+i), 53)))
	}
	for _, n := range []uint32{2, 4, 8} {
		counts := make([]int, n)
		for _, f := range flows {
			counts[FlowHash(f, true, 0)%n]++
		}
		even := len(flows) / int(n)
		for i, c := range counts {
			if c < even*7/10 || c > even*13/10 {
				t.Errorf("%d buckets: bucket %d has %d flows, want about %d (all: %v)", n, i, c, even, counts)
			}
		}
	}
	moved := 0
	for _, f := range flows {
		if FlowHash(f, true, 0)%4 != FlowHash(f, true, 12345)%4 {
			moved++
		}
	}
	if moved < len(flows)/2 {
		t.Errorf("a new seed moved only %d of %d flows", moved, len(flows))
	}
}

func TestFlowHashShortInput(t *testing.T) {
	full := withEth(etherTypeIPv6, true, ipv6Packet([16]byte{1}, [16]byte{2}, 6, 1, 2))
	for n := range len(full) {
		FlowHash(full[:n], true, 7) // must not panic
		FlowHash(full[:n], false, 7)
	}
}

func FuzzFlowHash(f *testing.F) {
	f.Add(withEth(etherTypeIPv4, false, ipv4Packet([4]byte{192, 0, 2, 1}, [4]byte{192, 0, 2, 2}, 6, 1, 2)), true)
	f.Add(ipv6Packet([16]byte{0x20, 0x01, 0x0d, 0xb8}, [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 2}, 17, 3, 4), false)
	f.Fuzz(func(t *testing.T, b []byte, eth bool) {
		h := FlowHash(b, eth, 1)
		if h != FlowHash(b, eth, 1) {
			t.Fatal("not deterministic")
		}
	})
}
