/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Steering a packet to the proxy by the node's redirect mode (l7_config): TPROXY marks it with
 * the proxy port for the netfilter rule; sk-assign hands it to the proxy's socket; sk-lookup
 * marks it for the local route, where sk-lookup.bpf.c selects the proxy's socket. The original
 * destination is recorded in the proxymap by client. Returns TC_ACT_SHOT when it cannot reach
 * the proxy: never around it (fail closed). */
#ifndef L7_STEER_H
#define L7_STEER_H

#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <stddef.h>
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
	/* For a SYN the lookup runs the node's sk_lookup program, which answers with the proxy's
	 * registered listener: that one is kept (no second lookup). Any other listener on the
	 * original destination is not the proxy. */
	if (sk && sk->state == BPF_TCP_LISTEN && (sk->src_ip4 != proxy_addr || sk->src_port != proxy_port)) {
		bpf_sk_release(sk);
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

/* sk-lookup: whether the agent registered the proxy's socket, which sk-lookup.bpf.c will select.
 * Checked here too, so that a packet with no proxy is dropped and counted before it is delivered
 * locally (where, without the agent's sk_lookup program, a node socket on its port could take it). */
static __always_inline int proxy_socket_registered(__u16 proxy_port, __u8 proto)
{
	struct proxy_socket_key key = { .port = proxy_port, .protocol = proto };
	struct bpf_sock *sk = bpf_map_lookup_elem(&l7_proxy_sockets, &key);

	if (!sk)
		return 0;
	bpf_sk_release(sk);
	return 1;
}

static __always_inline void remember_destination(struct bpf_sock_tuple *tuple, __u8 proto, __u16 proxy_port)
{
	struct proxymap_key key = { .saddr = tuple->ipv4.saddr, .sport = tuple->ipv4.sport, .protocol = proto };
	struct proxymap_value value = { .daddr = tuple->ipv4.daddr, .dport = tuple->ipv4.dport, .proxy_port = proxy_port };

	bpf_map_update_elem(&l7_proxymap, &key, &value, BPF_ANY);
}

/* Rewrites one address (at addr_off) and one port (at port_off) of an IPv4 TCP/UDP packet, with
 * the IP and L4 checksums, as NAT does. Shared by dnat (destination) and its reverse (source). */
static __always_inline int rewrite(struct __sk_buff *skb, __u8 proto, __u32 l4_off, __u32 addr_off, __u32 port_off,
				   __u32 old_addr, __u32 new_addr, __u16 old_port, __u16 new_port)
{
	__u32 csum_off = l4_off + (proto == IPPROTO_TCP ? 16 : 6);
	__u64 flags = proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr, flags | BPF_F_PSEUDO_HDR | 4) ||
	    bpf_l4_csum_replace(skb, csum_off, old_port, new_port, flags | 2) ||
	    bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), old_addr, new_addr, 4) ||
	    bpf_skb_store_bytes(skb, addr_off, &new_addr, 4, 0) || bpf_skb_store_bytes(skb, port_off, &new_port, 2, 0))
		return -1;
	return 0;
}


/* l4_off: where the TCP/UDP header starts, for dnat's rewrite. */
static __always_inline int to_proxy(struct __sk_buff *skb, __u8 proto, __u32 l4_off, struct bpf_sock_tuple *tuple,
				    __u16 proxy_port)
{
	__u32 zero = 0;
	struct config_value *cfg = bpf_map_lookup_elem(&l7_config, &zero);
	int err;

	if (!cfg)
		return TC_ACT_SHOT;
	/* TCP proxies read the destination from getsockname(), except behind dnat. */
	if (proto == IPPROTO_UDP || cfg->mode == L7_MODE_DNAT)
		remember_destination(tuple, proto, proxy_port);
	switch (cfg->mode) {
	case L7_MODE_TPROXY:
		skb->mark = ((__u32)proxy_port << 16) | L7_PROXY_MARK;
		return TC_ACT_OK;
	case L7_MODE_SK_ASSIGN:
	case L7_MODE_SOCKMAP: /* connections reach the proxy as in sk-assign */
		if (proto == IPPROTO_TCP)
			err = assign_to_proxy(skb, tuple, cfg->proxy_addr, proxy_port);
		else
			err = assign_udp_to_proxy(skb, tuple, cfg->proxy_addr, proxy_port);
		if (err < 0)
			return TC_ACT_SHOT;
		skb->mark = L7_PROXY_MARK;
		return TC_ACT_OK;
	case L7_MODE_SK_LOOKUP:
		if (!proxy_socket_registered(proxy_port, proto))
			return TC_ACT_SHOT;
		skb->mark = L7_PROXY_MARK;
		return TC_ACT_OK;
	case L7_MODE_DNAT:
		if (rewrite(skb, proto, l4_off, ETH_HLEN + offsetof(struct iphdr, daddr), l4_off + 2, tuple->ipv4.daddr,
			    cfg->proxy_addr, tuple->ipv4.dport, bpf_htons(proxy_port)) < 0)
			return TC_ACT_SHOT;
		return TC_ACT_OK;
	default:
		return TC_ACT_SHOT;
	}
}

#endif /* L7_STEER_H */
