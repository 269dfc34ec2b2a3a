/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Steering a packet to the proxy by the node's redirect mode (l7_config): TPROXY marks it with
 * the proxy port for the netfilter rule; sk-assign hands it to the proxy's socket. The original
 * destination is recorded in the proxymap by client. Returns TC_ACT_SHOT when it cannot reach
 * the proxy: never around it (fail closed). */
#ifndef L7_STEER_H
#define L7_STEER_H

#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include "l7proxy-maps.h"

/* Its own connection's socket if there is one (established or request socket: every packet
 * after the SYN), else the proxy's listener, which must be listening. */
static __always_inline int assign_to_proxy(struct __sk_buff *skb, struct bpf_sock_tuple *tuple, __u32 proxy_addr,
					   __u16 proxy_port)
{
	struct bpf_sock *sk;
	long err;

	sk = bpf_skc_lookup_tcp(skb, tuple, sizeof(tuple->ipv4), BPF_F_CURRENT_NETNS, 0);
	if (sk && sk->state == BPF_TCP_LISTEN) {
		bpf_sk_release(sk); /* a listener on the original destination is not the proxy */
		sk = NULL;
	}
	if (!sk) {
		tuple->ipv4.daddr = proxy_addr;
		tuple->ipv4.dport = bpf_htons(proxy_port);
		sk = bpf_skc_lookup_tcp(skb, tuple, sizeof(tuple->ipv4), BPF_F_CURRENT_NETNS, 0);
		if (!sk)
			return -1;
		if (sk->state != BPF_TCP_LISTEN) {
			bpf_sk_release(sk);
			return -1;
		}
	}
	err = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	return err ? -1 : 0;
}

/* A datagram goes to the proxy's UDP socket. Its own tuple is never looked up: the proxy's reply
 * sockets, bound to the original destinations, would capture new queries. */
static __always_inline int assign_udp_to_proxy(struct __sk_buff *skb, struct bpf_sock_tuple *tuple, __u32 proxy_addr,
					       __u16 proxy_port)
{
	struct bpf_sock *sk;
	long err;

	tuple->ipv4.daddr = proxy_addr;
	tuple->ipv4.dport = bpf_htons(proxy_port);
	sk = bpf_sk_lookup_udp(skb, tuple, sizeof(tuple->ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return -1;
	err = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	return err ? -1 : 0;
}

static __always_inline void remember_destination(struct bpf_sock_tuple *tuple, __u8 proto)
{
	struct proxymap_key key = { .saddr = tuple->ipv4.saddr, .sport = tuple->ipv4.sport, .protocol = proto };
	struct proxymap_value value = { .daddr = tuple->ipv4.daddr, .dport = tuple->ipv4.dport };

	bpf_map_update_elem(&l7_proxymap, &key, &value, BPF_ANY);
}

static __always_inline int to_proxy(struct __sk_buff *skb, __u8 proto, struct bpf_sock_tuple *tuple, __u16 proxy_port)
{
	__u32 zero = 0;
	struct config_value *cfg = bpf_map_lookup_elem(&l7_config, &zero);
	int err;

	if (!cfg)
		return TC_ACT_SHOT;
	if (proto == IPPROTO_UDP) /* TCP proxies read it from getsockname() */
		remember_destination(tuple, proto);
	switch (cfg->mode) {
	case L7_MODE_TPROXY:
		skb->mark = ((__u32)proxy_port << 16) | L7_PROXY_MARK;
		return TC_ACT_OK;
	case L7_MODE_SK_ASSIGN:
		if (proto == IPPROTO_TCP)
			err = assign_to_proxy(skb, tuple, cfg->proxy_addr, proxy_port);
		else
			err = assign_udp_to_proxy(skb, tuple, cfg->proxy_addr, proxy_port);
		if (err < 0)
			return TC_ACT_SHOT;
		skb->mark = L7_PROXY_MARK;
		return TC_ACT_OK;
	default:
		return TC_ACT_SHOT;
	}
}

#endif /* L7_STEER_H */
