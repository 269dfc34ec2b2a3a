/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Hook: sk_lookup on the node's network namespace (sk-assign and sockmap modes): runs whenever
 * the kernel looks for a listening socket there.
 *
 * from-endpoint.bpf.c hands a steered connection's packets to its own socket when there is one.
 * When that socket is the proxy's side of an earlier connection on the same tuple, now in
 * TIME_WAIT, and a new SYN arrives, the kernel ends the TIME_WAIT and looks for a listener on
 * the original destination, which only the proxy stands in for: without this program none is
 * found and the client retries after a second. Here a lookup for a tuple conntrack steers to the
 * proxy (l7_ct names a proxy port) selects that proxy's listener; if it is not there the SYN is
 * dropped (fail closed). Every other lookup passes untouched.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "l7proxy-maps.h"

#define AF_INET 2

SEC("sk_lookup")
int steer_time_wait_syn(struct bpf_sk_lookup *ctx)
{
	struct ct_key key = {};
	struct ct_value *ct;
	struct bpf_sock *sk;
	__u32 port;
	long err;

	if (ctx->family != AF_INET || ctx->protocol != IPPROTO_TCP)
		return SK_PASS;
	/* The connection's first packet, as from-endpoint keyed it: the client is the remote end. */
	key.saddr = ctx->remote_ip4;
	key.daddr = ctx->local_ip4;
	key.sport = ctx->remote_port;
	key.dport = bpf_htons(ctx->local_port);
	key.protocol = IPPROTO_TCP;
	ct = bpf_map_lookup_elem(&l7_ct, &key);
	if (!ct || !ct->proxy_port)
		return SK_PASS;
	port = ct->proxy_port;
	sk = bpf_map_lookup_elem(&l7_proxy_listeners, &port);
	if (!sk)
		return SK_DROP;
	err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	return err ? SK_DROP : SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
