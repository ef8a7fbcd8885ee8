package privs

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/internal/testenv"
)

// childEnv makes the test binary, re-executed, run dropChild instead of
// the tests: Drop is irreversible, so it runs in a process of its own.
const childEnv = "SLUICE_PRIVS_TEST_CHILD"

// childReport is what dropChild found after Drop, as JSON on stdout.
type childReport struct {
	DropErr     string
	Cgo         bool
	Kept        string
	Threads     int
	Statuses    []Status // one per thread, read from /proc/self/task
	ExecErr     string   // running /bin/true
	UnshareErr  string
	SetnsErr    string
	UDPErr      string // a UDP socket, as the uplink opens per flow
	RawErr      string // a raw ICMP socket (CAP_NET_RAW kept)
	PacketErr   string // an AF_PACKET socket (CAP_NET_RAW kept too)
	WriteTmpErr string // create and remove a file in a root-owned directory
}

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(dropChild())
	}
	if os.Getenv(benchChildEnv) != "" {
		os.Exit(benchChild())
	}
	os.Exit(m.Run())
}

func dropChild() int {
	var r childReport
	// Threads busy in other goroutines while Drop runs: every one of
	// them must end up with the same state.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	res, err := Drop(Options{Keep: []Cap{CapNetRaw}, Seccomp: true})
	close(stop)
	wg.Wait()
	if err != nil {
		r.DropErr = err.Error()
		r.Cgo = errors.Is(err, ErrCgo)
	}
	r.Kept = res.Kept.String()
	tasks, _ := filepath.Glob("/proc/self/task/*/status")
	r.Threads = len(tasks)
	for _, p := range tasks {
		f, err := os.Open(p)
		if err != nil {
			continue // the thread ended
		}
		st, err := ParseStatus(f)
		f.Close()
		if err == nil {
			r.Statuses = append(r.Statuses, st)
		}
	}
	errStr := func(err error) string {
		if err == nil {
			return ""
		}
		return err.Error()
	}
	r.ExecErr = errStr(exec.Command("/bin/true").Run())
	r.UnshareErr = errStr(unix.Unshare(unix.CLONE_NEWNET))
	r.SetnsErr = errStr(unix.Setns(0, unix.CLONE_NEWNET))
	sock := func(domain, typ, proto int) string {
		fd, err := unix.Socket(domain, typ|unix.SOCK_CLOEXEC, proto)
		if err == nil {
			unix.Close(fd)
		}
		return errStr(err)
	}
	r.UDPErr = sock(unix.AF_INET, unix.SOCK_DGRAM, 0)
	r.RawErr = sock(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP)
	r.PacketErr = sock(unix.AF_PACKET, unix.SOCK_RAW, 0)
	dir := os.Getenv(childEnv)
	p := filepath.Join(dir, "f")
	err = os.WriteFile(p, []byte("x"), 0o600)
	if err == nil {
		err = os.Remove(p)
	}
	r.WriteTmpErr = errStr(err)
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		return 1
	}
	return 0
}

// runChild runs bin as the dropping child and decodes its report.
func runChild(t *testing.T, bin string) childReport {
	t.Helper()
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+t.TempDir())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var r childReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("child report: %v\n%s", err, out)
	}
	return r
}

// TestDropAllThreads drops to CAP_NET_RAW with the filter in a child
// process and checks, on every thread, what remains and what is refused.
func TestDropAllThreads(t *testing.T) {
	testenv.RequireRoot(t)
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r := runChild(t, bin)
	if r.Cgo {
		// The test binary links cgo; build it again without.
		bin = filepath.Join(t.TempDir(), "privs.test")
		build := exec.Command("go", "test", "-c", "-o", bin, ".")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build the test without cgo: %v\n%s", err, out)
		}
		r = runChild(t, bin)
	}
	if r.DropErr != "" {
		t.Fatalf("Drop: %s", r.DropErr)
	}
	if r.Kept != "CAP_NET_RAW" {
		t.Errorf("kept %s, want CAP_NET_RAW", r.Kept)
	}
	if r.Threads < 2 || len(r.Statuses) == 0 {
		t.Fatalf("read %d thread statuses of %d threads", len(r.Statuses), r.Threads)
	}
	want := SetOf(CapNetRaw)
	for i, st := range r.Statuses {
		if st.CapEff != want || st.CapPrm != want || st.CapBnd != want || st.CapInh != 0 || st.CapAmb != 0 {
			t.Errorf("thread %d: eff %v, prm %v, bnd %v, inh %v, amb %v; want %v and no inheritable or ambient", i, st.CapEff, st.CapPrm, st.CapBnd, st.CapInh, st.CapAmb, want)
		}
		if !st.NoNewPrivs || st.Seccomp != 2 {
			t.Errorf("thread %d: NoNewPrivs %v, Seccomp mode %d; want true, 2 (filter)", i, st.NoNewPrivs, st.Seccomp)
		}
	}
	refused := map[string]string{"exec": r.ExecErr, "unshare": r.UnshareErr, "setns": r.SetnsErr}
	for what, e := range refused {
		if !strings.Contains(e, "operation not permitted") {
			t.Errorf("%s after Drop: %q, want EPERM", what, e)
		}
	}
	allowed := map[string]string{"UDP socket": r.UDPErr, "raw ICMP socket": r.RawErr, "AF_PACKET socket": r.PacketErr, "file in a root-owned directory": r.WriteTmpErr}
	for what, e := range allowed {
		if e != "" {
			t.Errorf("%s after Drop: %s", what, e)
		}
	}
}

// TestParseStatus reads the fields of a /proc status file.
func TestParseStatus(t *testing.T) {
	in := "Name:\tsluice\nCapInh:\t0000000000000000\nCapPrm:\t0000000000002000\nCapEff:\t0000000000002000\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n"
	st, err := ParseStatus(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if st.CapEff != SetOf(CapNetRaw) || st.CapPrm != SetOf(CapNetRaw) || !st.NoNewPrivs || st.Seccomp != 2 || st.SeccompFilters != 1 {
		t.Errorf("ParseStatus = %+v", st)
	}
	if st.CapBnd.String() == "" || !st.CapBnd.Has(CapBPF) {
		t.Errorf("bounding set %v lacks CAP_BPF", st.CapBnd)
	}
	if got := fmt.Sprint(SetOf(CapSysAdmin, CapNetAdmin)); got != "CAP_NET_ADMIN, CAP_SYS_ADMIN" {
		t.Errorf("Set.String = %q", got)
	}
	if _, err := ParseStatus(strings.NewReader("Name:\tx\n")); err == nil {
		t.Error("a status without capability fields parsed")
	}
	if _, err := ParseStatus(strings.NewReader("CapEff:\tzz\n")); err == nil {
		t.Error("a malformed CapEff parsed")
	}
}
