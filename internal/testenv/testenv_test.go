package testenv

import (
	"net"
	"strings"
	"testing"

	"github.com/sluicenet/sluice/internal/netns"
)

func TestVethPairIsPrivateAndRemoved(t *testing.T) {
	var v *Veth
	t.Run("create", func(t *testing.T) {
		v = NewVeth(t)
		if out := IP(t, v.NSA, "link", "show", v.A); !strings.Contains(out, "state UP") && !strings.Contains(out, "LOWERLAYERDOWN") && !strings.Contains(out, ",UP") {
			t.Errorf("%s not up: %s", v.A, out)
		}
		// The interface exists in NSA only, not in the host namespace.
		if _, err := net.InterfaceByName(v.A); err == nil {
			t.Errorf("%s is visible in the host namespace", v.A)
		}
		var found bool
		Do(t, v.NSB, func() error {
			_, err := net.InterfaceByName(v.B)
			found = err == nil
			return nil
		})
		if !found {
			t.Errorf("%s not found inside %s", v.B, v.NSB)
		}
	})
	if netns.Exists(v.NSA) || netns.Exists(v.NSB) {
		t.Errorf("namespaces %s, %s left behind after cleanup", v.NSA, v.NSB)
	}
}
