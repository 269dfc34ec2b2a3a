/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Hook: TC egress (clsact) on the node side of every host's veth: packets the node sends to the
 * host.
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
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "l7proxy-maps.h"
#include "l7-steer.h"

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

	if (!cfg || cfg->mode != L7_MODE_DNAT)
		return TC_ACT_OK;
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->saddr != cfg->proxy_addr)
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
