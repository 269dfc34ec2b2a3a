/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Hook: sk_reuseport on the HTTP proxy's SO_REUSEPORT group: runs when the kernel picks which of
 * the group's listeners (one per proxy thread) gets a new connection, whichever way the
 * connection was steered (TPROXY's lookup, bpf_sk_assign, sk_lookup, dnat's local delivery).
 *
 * Without it the kernel picks by a hash of the addresses and ports, so a few long-lived
 * connections (gRPC, HTTP/2) land unevenly: with 4 over 2 threads, half the time 3 go to one.
 * Here the listeners take turns. A missing turn (a socket closing) falls back to the hash,
 * within the same group: the connection still reaches the proxy.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "l7proxy-maps.h"

SEC("sk_reuseport")
int spread_connections(struct sk_reuseport_md *md)
{
	struct spread_state *s;
	__u32 zero = 0, turn;

	s = bpf_map_lookup_elem(&l7_spread, &zero);
	if (!s || s->sockets == 0)
		return SK_PASS;
	/* Read, then add: two CPUs may take the same turn now and then; an exact count would
	 * need a fetching atomic, which this target's instruction set lacks. */
	turn = s->next % s->sockets;
	__sync_fetch_and_add(&s->next, 1);
	bpf_sk_select_reuseport(md, &l7_http_threads, &turn, 0);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
