/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Policy lookups shared by the TC programs: identities from the ipcache, verdicts from the
 * policy map (deny wins; the most specific allow gives the proxy port), per-CPU counters. */
#ifndef L7_POLICY_H
#define L7_POLICY_H

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

static __always_inline __u32 identity_of(__u32 addr)
{
	struct ipcache_key key = { .prefixlen = 32, .addr = addr };
	struct ipcache_value *v = bpf_map_lookup_elem(&l7_ipcache, &key);

	return v ? v->identity : L7_IDENTITY_WORLD;
}

/* One endpoint's verdict for one direction; for an allow with L7 rules, the proxy port. Four LPM
 * lookups, most specific first: (identity, protocol), (identity, any), (any, protocol), (any,
 * any); each finds the longest port block. Any deny wins; else the first allow decides. */
static __always_inline __u32 policy_verdict(const struct endpoint_value *ep, __u8 direction, __u32 identity, __u16 dport,
					    __u8 proto, __u16 *proxy_port)
{
	__u32 enforce = direction == L7_DIR_INGRESS ? L7_EP_ENFORCE_INGRESS : L7_EP_ENFORCE_EGRESS;
	__u32 endpoint_id = ep->endpoint_id;
	int allowed = 0;

	*proxy_port = 0;
	if (!(ep->flags & enforce))
		return L7_VERDICT_NOT_ENFORCED;
	struct policy_key keys[4] = {
		{ L7_POLICY_PREFIX_FULL, endpoint_id, identity, direction, proto, dport },
		{ L7_POLICY_PREFIX_FULL, endpoint_id, identity, direction, 0, dport },
		{ L7_POLICY_PREFIX_FULL, endpoint_id, L7_IDENTITY_ANY, direction, proto, dport },
		{ L7_POLICY_PREFIX_FULL, endpoint_id, L7_IDENTITY_ANY, direction, 0, dport },
	};
#pragma unroll
	for (int i = 0; i < 4; i++) {
		struct policy_value *v = bpf_map_lookup_elem(&l7_policy, &keys[i]);

		if (!v)
			continue;
		if (v->flags & L7_POLICY_DENY)
			return L7_VERDICT_DENIED_BY_RULE;
		if (!allowed) {
			allowed = 1;
			*proxy_port = v->proxy_port;
		}
	}
	if (!allowed)
		return L7_VERDICT_DENIED_DEFAULT;
	return *proxy_port ? L7_VERDICT_TO_PROXY : L7_VERDICT_ALLOWED;
}

static __always_inline int is_denied(__u32 verdict)
{
	return verdict == L7_VERDICT_DENIED_BY_RULE || verdict == L7_VERDICT_DENIED_DEFAULT;
}

#endif /* L7_POLICY_H */
