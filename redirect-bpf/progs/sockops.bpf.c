/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Hook: sock_ops on the lab's (or node's) cgroup2, for every TCP socket its processes make.
 *
 * In sockmap mode, when a connection is established, decides whether both its ends are local
 * sockets worth pairing, seen from either end: a flow from-endpoint steered to the proxy (its
 * conntrack entry names a proxy port) has the pod's socket (its tuple is the flow's) and the
 * proxy's accepted one (sk_assign kept the original tuple: the mirror image); a connection the
 * node opened to a host (to-endpoint marked it: the proxy's upstream connections) has the
 * proxy's socket and the host's server's. Those sockets go into the sockhash, where sk-msg.bpf.c
 * moves their payload socket to socket; a socket whose other end never shows up here (a server
 * outside the cgroup) keeps the normal path. Every other socket is left alone.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "l7proxy-maps.h"

static __always_inline int paired(__u32 saddr, __u32 daddr, __u16 sport, __u16 dport)
{
	struct ct_key key = { .saddr = saddr, .daddr = daddr, .sport = sport, .dport = dport, .protocol = IPPROTO_TCP };
	struct ct_value *v = bpf_map_lookup_elem(&l7_ct, &key);

	return v && (v->proxy_port || (v->flags & L7_CT_FROM_NODE));
}

SEC("sockops")
int steer_sockets(struct bpf_sock_ops *skops)
{
	__u32 zero = 0;
	struct config_value *cfg = bpf_map_lookup_elem(&l7_config, &zero);
	struct sock_key key = {};
	__u16 lport, rport;

	if (!cfg || cfg->mode != L7_MODE_SOCKMAP || skops->family != 2 /* AF_INET */)
		return 1;
	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && skops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	key.local_ip4 = skops->local_ip4;
	key.remote_ip4 = skops->remote_ip4;
	key.local_port = skops->local_port;            /* host order */
	key.remote_port = bpf_ntohl(skops->remote_port); /* network order in the upper half */
	lport = bpf_htons(key.local_port);
	rport = bpf_htons(key.remote_port);
	/* The socket that connected: the flow as it left. The one that accepted: the same flow reversed. */
	if (paired(key.local_ip4, key.remote_ip4, lport, rport) || paired(key.remote_ip4, key.local_ip4, rport, lport))
		bpf_sock_hash_update(skops, &l7_sockhash, &key, BPF_NOEXIST);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
