package netns_test

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/netns"
	"github.com/sluicenet/sluice/internal/testenv"
)

func TestThreadSocketsBelongToItsNamespace(t *testing.T) {
	testenv.RequireRoot(t)
	name := testenv.NewNS(t)
	nsfd, err := unix.Open(netns.Path(name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(nsfd)
	var want unix.Stat_t
	if err := unix.Fstat(nsfd, &want); err != nil {
		t.Fatal(err)
	}
	th, err := netns.NewThread(nsfd)
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	if err := th.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	// SIOCGSKNS names the namespace a socket belongs to.
	nsOfSock, err := unix.IoctlRetInt(fd, unix.SIOCGSKNS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(nsOfSock)
	var got unix.Stat_t
	if err := unix.Fstat(nsOfSock, &got); err != nil {
		t.Fatal(err)
	}
	if got.Ino != want.Ino {
		t.Errorf("the socket is in namespace %d, want %d (%s)", got.Ino, want.Ino, name)
	}
	// The caller's own thread stayed where it was.
	self, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(self, "["+strconv.FormatUint(want.Ino, 10)+"]") {
		t.Errorf("the calling thread moved into %s", name)
	}
	th.Close()
	if err := th.Do(func() error { return nil }); err != netns.ErrThreadClosed {
		t.Errorf("Do after Close = %v, want ErrThreadClosed", err)
	}
}
