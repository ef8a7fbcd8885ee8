#!/usr/bin/env bash
# The test suite, as a newcomer and CI run it: as root on Debian with Go.
# Installs what the tests need, then vets, tests (the kernel paths on
# namespaces and veth pairs the tests create) and runs each fuzz target
# briefly.
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" -ne 0 ]; then
	echo "test.sh: the tests create network namespaces and packet sockets: run as root" >&2
	exit 1
fi

# Debian packages the tests use: ip and nsenter to build test topologies,
# ping/iperf3/tcpdump/ethtool as real peers and inspectors.
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v nsenter >/dev/null || need+=(util-linux)
command -v ping >/dev/null || need+=(iputils-ping)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v tcpdump >/dev/null || need+=(tcpdump)
command -v ethtool >/dev/null || need+=(ethtool)
if [ ${#need[@]} -gt 0 ]; then
	echo "test.sh: installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq "${need[@]}" >/dev/null
fi

# bpffs, for the eBPF tests that pin objects.
if ! mount | grep -q ' /sys/fs/bpf type bpf'; then
	mount -t bpf bpf /sys/fs/bpf
fi

go vet ./...
go test -count=1 -timeout 30m ./...

# Each fuzz target for a short, bounded time (the seed corpora already ran
# above as ordinary tests).
fuzztime=${FUZZTIME:-10s}
for pkg in $(go list ./...); do
	for target in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
		echo "fuzz $pkg $target ($fuzztime)"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" >/dev/null
	done
done
echo "test.sh: all tests passed"
