/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Hook: TC egress (clsact) on the node side of every host's veth: packets the node sends to the
 * host.
 *
 * A TCP connection the node itself opens to the host (the proxy's upstream connections, above
 * all) is recorded in conntrack at its SYN, so the host's replies pass from-endpoint as replies
 * even when the host's egress is enforced: as Cilium, the node may talk to its endpoints.
 *
 * In dnat mode, from-endpoint rewrote steered flows' destination to the proxy; this program
 * reverse-translates the proxy's replies: a packet from the proxy's address and port to a client
 * whose flow the proxymap holds gets the original destination back as its source, so the client
 * sees the server it talked to. Every other packet, and every packet in other modes, passes
 * untouched.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "l7proxy-maps.h"
#include "l7-ct.h"
#include "l7-steer.h"

/* A SYN that from-endpoint did not see (it has no conntrack entry): the node's own connection. */
static __always_inline void track_node_syn(struct iphdr *ip, void *data_end)
{
	struct tcphdr *tcp = (void *)ip + ip->ihl * 4;

	if (ip->protocol != IPPROTO_TCP || (void *)(tcp + 1) > data_end || !tcp->syn || tcp->ack)
		return;
	if (!ct_find(ip->saddr, ip->daddr, tcp->source, tcp->dest, IPPROTO_TCP))
		ct_create(ip->saddr, ip->daddr, tcp->source, tcp->dest, IPPROTO_TCP, 0, L7_CT_FROM_NODE);
}

SEC("tc")
int to_endpoint(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	__u32 zero = 0;
	struct config_value *cfg = bpf_map_lookup_elem(&l7_config, &zero);
	struct proxymap_key key = {};
	struct proxymap_value *orig;

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl < 5)
		return TC_ACT_OK;
	track_node_syn(ip, data_end);
	if (!cfg || cfg->mode != L7_MODE_DNAT || ip->saddr != cfg->proxy_addr)
		return TC_ACT_OK;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return TC_ACT_OK;
	__u16 *ports = (void *)ip + ip->ihl * 4;
	if ((void *)(ports + 2) > data_end)
		return TC_ACT_OK;
	key.saddr = ip->daddr; /* the client */
	key.sport = ports[1];
	key.protocol = ip->protocol;
	orig = bpf_map_lookup_elem(&l7_proxymap, &key);
	if (!orig || ports[0] != bpf_htons(orig->proxy_port))
		return TC_ACT_OK;
	__u32 l4_off = ETH_HLEN + ip->ihl * 4;
	if (rewrite(skb, ip->protocol, l4_off, ETH_HLEN + offsetof(struct iphdr, saddr), l4_off, ip->saddr, orig->daddr,
		    ports[0], orig->dport) < 0)
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
