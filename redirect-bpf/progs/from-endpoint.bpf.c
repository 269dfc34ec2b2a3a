/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Hook: TC ingress (clsact) on the node side of an endpoint's veth, so it sees every packet the
 * endpoint sends.
 *
 * Decides the endpoint's egress L3/L4 verdict: the destination's identity comes from the
 * ipcache, then the policy map is consulted from most to least specific key
 * (identity+port, identity, any+port, any). Deny wins over allow at any level; an endpoint
 * that enforces egress and matches no entry is dropped (default deny). Every verdict is
 * counted per endpoint.
 *
 * An allow whose entry names a proxy port means L7 rules apply, and the packet is steered to the
 * proxy by the node's redirect mode (l7_config): TPROXY marks it with the proxy port for the
 * netfilter TPROXY rule; sk-assign hands it to the proxy's socket with bpf_sk_assign. With no
 * mode, or no proxy socket, it is dropped: never passed around the proxy (fail closed).
 * No connection tracking yet: every packet is judged as a new flow.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "l7proxy-maps.h"

static __always_inline void count(__u32 endpoint_id, __u32 verdict, __u32 len)
{
	struct counter_key key = { .endpoint_id = endpoint_id, .verdict = verdict };
	struct counter_value *v = bpf_map_lookup_elem(&l7_counters, &key);

	if (v) {
		v->packets++;
		v->bytes += len;
		return;
	}
	struct counter_value init = { .packets = 1, .bytes = len };
	bpf_map_update_elem(&l7_counters, &key, &init, BPF_NOEXIST);
}

static __always_inline __u32 remote_identity(__u32 daddr)
{
	struct ipcache_key key = { .prefixlen = 32, .addr = daddr };
	struct ipcache_value *v = bpf_map_lookup_elem(&l7_ipcache, &key);

	return v ? v->identity : L7_IDENTITY_WORLD;
}

/* Returns the verdict and, for an allow with L7 rules, the proxy port. */
static __always_inline __u32 egress_verdict(__u32 endpoint_id, __u32 identity, __u16 dport, __u8 proto,
					    __u16 *proxy_port)
{
	struct policy_key keys[4] = {
		{ endpoint_id, identity, dport, proto, L7_DIR_EGRESS },
		{ endpoint_id, identity, 0, 0, L7_DIR_EGRESS },
		{ endpoint_id, L7_IDENTITY_ANY, dport, proto, L7_DIR_EGRESS },
		{ endpoint_id, L7_IDENTITY_ANY, 0, 0, L7_DIR_EGRESS },
	};
	int allowed = 0;

	*proxy_port = 0;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		struct policy_value *v = bpf_map_lookup_elem(&l7_policy, &keys[i]);

		if (!v)
			continue;
		if (v->flags & L7_POLICY_DENY)
			return L7_VERDICT_DENIED_BY_RULE;
		if (!allowed) {
			allowed = 1;
			*proxy_port = v->proxy_port; /* the most specific allow decides */
		}
	}
	if (!allowed)
		return L7_VERDICT_DENIED_DEFAULT;
	return *proxy_port ? L7_VERDICT_TO_PROXY : L7_VERDICT_ALLOWED;
}

/* Gives a TCP packet to the proxy's socket: its own connection's socket if there is one (an
 * established or request socket: every packet after the SYN), else the proxy's listener. */
static __always_inline int assign_to_proxy(struct __sk_buff *skb, struct iphdr *ip, __u32 proxy_addr, __u16 proxy_port)
{
	void *data_end = (void *)(long)skb->data_end;
	struct bpf_sock_tuple tuple = {};
	struct bpf_sock *sk;
	__u16 *ports = (void *)ip + ip->ihl * 4;
	long err;

	if (ip->protocol != IPPROTO_TCP || (void *)(ports + 2) > data_end)
		return -1; /* UDP steering comes with the DNS proxy */
	tuple.ipv4.saddr = ip->saddr;
	tuple.ipv4.daddr = ip->daddr;
	tuple.ipv4.sport = ports[0];
	tuple.ipv4.dport = ports[1];
	sk = bpf_skc_lookup_tcp(skb, &tuple, sizeof(tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (sk && sk->state == BPF_TCP_LISTEN) {
		/* Our tuple hit a listener on the original destination: not the proxy's. */
		bpf_sk_release(sk);
		sk = NULL;
	}
	if (!sk) {
		tuple.ipv4.daddr = proxy_addr;
		tuple.ipv4.dport = bpf_htons(proxy_port);
		sk = bpf_skc_lookup_tcp(skb, &tuple, sizeof(tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
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

/* Steers a packet that needs the proxy; TC_ACT_SHOT when it cannot reach it. */
static __always_inline int to_proxy(struct __sk_buff *skb, struct iphdr *ip, __u16 proxy_port)
{
	__u32 zero = 0;
	struct config_value *cfg = bpf_map_lookup_elem(&l7_config, &zero);

	if (!cfg)
		return TC_ACT_SHOT;
	switch (cfg->mode) {
	case L7_MODE_TPROXY:
		skb->mark = ((__u32)proxy_port << 16) | L7_PROXY_MARK;
		return TC_ACT_OK;
	case L7_MODE_SK_ASSIGN:
		if (assign_to_proxy(skb, ip, cfg->proxy_addr, proxy_port) < 0)
			return TC_ACT_SHOT;
		skb->mark = L7_PROXY_MARK;
		return TC_ACT_OK;
	default:
		return TC_ACT_SHOT;
	}
}

SEC("tc")
int from_endpoint(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u32 ifindex = skb->ingress_ifindex;
	struct endpoint_value *ep;
	__u16 dport = 0, proxy_port;
	__u32 verdict;

	ep = bpf_map_lookup_elem(&l7_endpoints, &ifindex);
	if (!ep)
		return TC_ACT_OK; /* not an endpoint we manage */
	if (!(ep->flags & L7_EP_ENFORCE_EGRESS)) {
		count(ep->endpoint_id, L7_VERDICT_NOT_ENFORCED, skb->len);
		return TC_ACT_OK;
	}
	if ((void *)(eth + 1) > data_end)
		goto drop;
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return TC_ACT_OK; /* neighbour resolution is not policy */
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		goto drop; /* IPv4 only: anything else fails closed */

	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->ihl < 5)
		goto drop;
	if (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP) {
		/* Non-first fragments carry no ports: they can only match port-less entries. */
		if (!(ip->frag_off & bpf_htons(0x1fff))) {
			__u16 *ports = (void *)ip + ip->ihl * 4;

			if ((void *)(ports + 2) > data_end)
				goto drop;
			dport = ports[1];
		}
	}

	verdict = egress_verdict(ep->endpoint_id, remote_identity(ip->daddr), dport, ip->protocol, &proxy_port);
	if (verdict == L7_VERDICT_TO_PROXY) {
		int act = to_proxy(skb, ip, proxy_port);

		count(ep->endpoint_id, act == TC_ACT_OK ? L7_VERDICT_TO_PROXY : L7_VERDICT_NO_PROXY, skb->len);
		return act;
	}
	count(ep->endpoint_id, verdict, skb->len);
	return verdict == L7_VERDICT_ALLOWED ? TC_ACT_OK : TC_ACT_SHOT;

drop:
	count(ep->endpoint_id, L7_VERDICT_DENIED_DEFAULT, skb->len);
	return TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
