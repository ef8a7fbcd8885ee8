//go:build linux

package bpf

// The C programs are compiled by bpf2go into objects embedded in the
// generated *_bpfel.go files, which are committed so that building sluice
// needs no clang. Regenerate with `go generate ./bpf/...`; test.sh checks
// that the committed files match. The multiarch include directory holds
// <asm/types.h> on Debian (linux/bpf.h needs it, see KERNEL-NOTES item 7).
//
//go:generate go tool bpf2go -tags linux -target bpfel -cflags "-O2 -g -Wall -Werror" pass pass.bpf.c -- -I/usr/include/x86_64-linux-gnu
//go:generate go tool bpf2go -tags linux -target bpfel -cflags "-O2 -g -Wall -Werror" drop drop.bpf.c -- -I/usr/include/x86_64-linux-gnu
//go:generate go tool bpf2go -tags linux -target bpfel -cflags "-O2 -g -Wall -Werror" redirect redirect.bpf.c -- -I/usr/include/x86_64-linux-gnu
//go:generate go tool bpf2go -tags linux -target bpfel -cflags "-O2 -g -Wall -Werror" -output-stem tunnel_host tunnelHost tunnel_host.bpf.c -- -I/usr/include/x86_64-linux-gnu
//go:generate go tool bpf2go -tags linux -target bpfel -cflags "-O2 -g -Wall -Werror" -output-stem tunnel_veth tunnelVeth tunnel_veth.bpf.c -- -I/usr/include/x86_64-linux-gnu
//go:generate go tool bpf2go -tags linux -target bpfel -cflags "-O2 -g -Wall -Werror" capture capture.bpf.c -- -I/usr/include/x86_64-linux-gnu
