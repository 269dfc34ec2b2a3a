/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Hook: sk_lookup on the node's network namespace (sk-lookup, sk-assign and sockmap modes): runs
 * whenever the kernel looks for a listening TCP socket or an unconnected UDP socket there, after
 * an established (or connected) socket of the exact tuple was not found.
 *
 * Decision: a lookup for a tuple conntrack steers to the proxy (l7_ct names a proxy port) selects
 * that proxy's socket for the protocol (l7_proxy_sockets); if it is not there the packet is
 * dropped (fail closed). Every other lookup passes untouched.
 *
 * sk-lookup mode: this is how steered flows reach the proxy. from-endpoint.bpf.c only marks their
 * packets for the local route; a SYN or a datagram to the original destination then meets this
 * program, and later packets of a connection find the proxy's accepted socket by its tuple.
 *
 * sk-assign and sockmap modes: TC hands packets to the proxy's socket itself, so this runs only
 * for a SYN that reuses a steered tuple whose proxy socket is in TIME_WAIT: the kernel ends the
 * TIME_WAIT and looks for a listener on the original destination, which only the proxy stands
 * in for (without this program none is found and the client retries after a second).
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "l7proxy-maps.h"

#define AF_INET 2

SEC("sk_lookup")
int steer_to_proxy(struct bpf_sk_lookup *ctx)
{
	struct proxy_socket_key socket_key = {};
	struct ct_key key = {};
	struct ct_value *ct;
	struct bpf_sock *sk;
	long err;

	if (ctx->family != AF_INET || (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP))
		return SK_PASS;
	/* The flow's first packet, as from-endpoint keyed it: the client is the remote end. */
	key.saddr = ctx->remote_ip4;
	key.daddr = ctx->local_ip4;
	key.sport = ctx->remote_port;
	key.dport = bpf_htons(ctx->local_port);
	key.protocol = ctx->protocol;
	ct = bpf_map_lookup_elem(&l7_ct, &key);
	if (!ct || !ct->proxy_port)
		return SK_PASS;
	socket_key.port = ct->proxy_port;
	socket_key.protocol = ctx->protocol;
	sk = bpf_map_lookup_elem(&l7_proxy_sockets, &socket_key);
	if (!sk)
		return SK_DROP;
	/* REPLACE: while one agent takes over from another, both attach this program (on one map). */
	err = bpf_sk_assign(ctx, sk, BPF_SK_LOOKUP_F_REPLACE);
	bpf_sk_release(sk);
	return err ? SK_DROP : SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
