/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Connection tracking: a connection's first allowed packet records its tuple; replies (the
 * reversed tuple) and later packets find it. Entries expire (TCP 1 h, UDP 60 s of silence; a
 * TCP connection that sent a FIN or RST, 10 s), and the agent reads which are alive (an FQDN
 * address in use stays allowed). */
#ifndef L7_CT_H
#define L7_CT_H

#include "l7proxy-maps.h"

static __always_inline struct ct_value *ct_find(__u32 saddr, __u32 daddr, __u16 sport, __u16 dport, __u8 proto)
{
	struct ct_key key = { .saddr = saddr, .daddr = daddr, .sport = sport, .dport = dport, .protocol = proto };
	struct ct_value *v = bpf_map_lookup_elem(&l7_ct, &key);
	__u64 now, lifetime;

	if (!v)
		return NULL;
	now = bpf_ktime_get_ns();
	lifetime = proto != IPPROTO_TCP	       ? L7_CT_UDP_LIFETIME_NS :
		   v->flags & L7_CT_CLOSING ? L7_CT_CLOSING_LIFETIME_NS :
					      L7_CT_TCP_LIFETIME_NS;
	if (now - v->last_seen_ns > lifetime)
		return NULL; /* expired: judged anew, and overwritten */
	v->last_seen_ns = now;
	return v;
}

static __always_inline void ct_create(__u32 saddr, __u32 daddr, __u16 sport, __u16 dport, __u8 proto, __u16 proxy_port,
				      __u16 flags)
{
	struct ct_key key = { .saddr = saddr, .daddr = daddr, .sport = sport, .dport = dport, .protocol = proto };
	struct ct_value v = { .last_seen_ns = bpf_ktime_get_ns(), .proxy_port = proxy_port, .flags = flags };

	bpf_map_update_elem(&l7_ct, &key, &v, BPF_ANY);
}

#endif /* L7_CT_H */
