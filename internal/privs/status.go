package privs

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Status is what /proc/PID/status (or /proc/PID/task/TID/status) says about
// a thread's privileges.
type Status struct {
	CapInh, CapPrm, CapEff, CapBnd, CapAmb Set
	NoNewPrivs                             bool
	// Seccomp is the seccomp mode: 0 none, 1 strict, 2 filter.
	Seccomp int
	// SeccompFilters counts the filters installed (kernel 5.9 and later).
	SeccompFilters int
}

// ParseStatus reads the privilege fields of a /proc status file.
func ParseStatus(r io.Reader) (Status, error) {
	var st Status
	seen := 0
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		var set *Set
		switch key {
		case "CapInh":
			set = &st.CapInh
		case "CapPrm":
			set = &st.CapPrm
		case "CapEff":
			set = &st.CapEff
		case "CapBnd":
			set = &st.CapBnd
		case "CapAmb":
			set = &st.CapAmb
		case "NoNewPrivs", "Seccomp", "Seccomp_filters":
			n, err := strconv.Atoi(val)
			if err != nil {
				return st, fmt.Errorf("privs: status field %s: %w", key, err)
			}
			switch key {
			case "NoNewPrivs":
				st.NoNewPrivs = n != 0
			case "Seccomp":
				st.Seccomp = n
			default:
				st.SeccompFilters = n
			}
			seen++
			continue
		default:
			continue
		}
		n, err := strconv.ParseUint(val, 16, 64)
		if err != nil {
			return st, fmt.Errorf("privs: status field %s: %w", key, err)
		}
		*set = Set(n)
		seen++
	}
	if err := sc.Err(); err != nil {
		return st, fmt.Errorf("privs: read status: %w", err)
	}
	if seen == 0 {
		return st, fmt.Errorf("privs: no capability fields in the status file")
	}
	return st, nil
}
