/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Hook: TC ingress (clsact) on the node side of every host's veth, so it sees every packet a
 * pod, server or outside host sends into the node.
 *
 * Decides each flow once, at its first packet: the sender's egress policy (if the sender is an
 * endpoint) and the receiver's ingress policy (if the receiver is a local endpoint), each from
 * the ipcache identity of the peer and the policy map. Deny wins; an enforcing endpoint with no
 * matching entry drops it (default deny). The verdict is kept in conntrack: replies and later
 * packets pass without a lookup (a SYN is always judged anew; a FIN or RST marks the connection
 * closing, so its entry soon lapses), and a flow that needs the proxy
 * (an allow naming a proxy port: L7 rules apply) is steered by the node's redirect mode on every
 * packet, or dropped when the proxy cannot be reached (fail closed). Every decision is counted
 * per endpoint.
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
#include "l7-ct.h"
#include "l7-policy.h"
#include "l7-steer.h"

SEC("tc")
int from_endpoint(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u32 ifindex = skb->ingress_ifindex;
	struct endpoint_value *src, *dst;
	struct bpf_sock_tuple tuple = {};
	__u16 sport = 0, dport = 0, egress_proxy = 0, ingress_proxy = 0, proxy_port;
	__u32 egress = L7_VERDICT_NOT_ENFORCED, ingress = L7_VERDICT_NOT_ENFORCED;
	struct ct_value *ct;
	__u8 closing = 0;

	src = bpf_map_lookup_elem(&l7_endpoints, &ifindex);
	if ((void *)(eth + 1) > data_end)
		return TC_ACT_SHOT;
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return TC_ACT_OK; /* neighbour resolution is not policy */
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return src && (src->flags & L7_EP_ENFORCE_EGRESS) ? TC_ACT_SHOT : TC_ACT_OK; /* IPv4 only */

	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->ihl < 5)
		return TC_ACT_SHOT;
	dst = bpf_map_lookup_elem(&l7_endpoint_ips, &ip->daddr);
	/* Neither side is an endpoint of this node. (Two tests, not `!src && !dst`: clang would OR
	 * the pointers, which the verifier refuses.) */
	if (!dst) {
		if (!src)
			return TC_ACT_OK;
		barrier_var(src);
	}

	if ((ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP) && !(ip->frag_off & bpf_htons(0x1fff))) {
		__u16 *ports = (void *)ip + ip->ihl * 4;

		if ((void *)(ports + 2) > data_end)
			return TC_ACT_SHOT;
		sport = ports[0];
		dport = ports[1];
		/* A SYN opens a new connection, even on a tuple conntrack still holds (a reused port):
		 * it is judged by the policy of now, not by its predecessor's verdict. */
		if (ip->protocol == IPPROTO_TCP) {
			struct tcphdr *tcp = (void *)ports;

			if ((void *)(tcp + 1) > data_end)
				return TC_ACT_SHOT;
			if (tcp->syn && !tcp->ack)
				goto judge;
			closing = tcp->fin || tcp->rst;
		}
		ct = ct_find(ip->daddr, ip->saddr, dport, sport, ip->protocol);
		if (ct) {
			if (closing)
				ct->flags |= L7_CT_CLOSING;
			return TC_ACT_OK; /* a reply */
		}
		ct = ct_find(ip->saddr, ip->daddr, sport, dport, ip->protocol);
		if (ct) {
			if (closing)
				ct->flags |= L7_CT_CLOSING;
			if (!ct->proxy_port)
				return TC_ACT_OK;
			proxy_port = ct->proxy_port;
			goto steer;
		}
	}

judge:
	if (src)
		egress = policy_verdict(src, L7_DIR_EGRESS, identity_of(ip->daddr), dport, ip->protocol, &egress_proxy);
	if (dst)
		ingress = policy_verdict(dst, L7_DIR_INGRESS, src ? src->identity : identity_of(ip->saddr), dport, ip->protocol,
					 &ingress_proxy);
	if (src)
		count(src->endpoint_id, egress, skb->len);
	if (dst)
		count(dst->endpoint_id, ingress, skb->len);
	if (is_denied(egress) || is_denied(ingress))
		return TC_ACT_SHOT;
	proxy_port = ingress_proxy ? ingress_proxy : egress_proxy;
	if (dport)
		ct_create(ip->saddr, ip->daddr, sport, dport, ip->protocol, proxy_port, 0);
	if (!proxy_port)
		return TC_ACT_OK;

steer:
	tuple.ipv4.saddr = ip->saddr;
	tuple.ipv4.daddr = ip->daddr;
	tuple.ipv4.sport = sport;
	tuple.ipv4.dport = dport;
	if (to_proxy(skb, ip->protocol, ETH_HLEN + ip->ihl * 4, &tuple, proxy_port) == TC_ACT_OK)
		return TC_ACT_OK;
	count(src ? src->endpoint_id : dst->endpoint_id, L7_VERDICT_NO_PROXY, skb->len);
	return TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
