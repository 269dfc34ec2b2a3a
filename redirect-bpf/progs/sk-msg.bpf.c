/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Hook: sk_msg verdict on the sockhash (sockmap mode): runs on sendmsg() of a socket sockops.bpf.c
 * put there.
 *
 * Moves the payload straight into the receive queue of the connection's other local end (the
 * peer socket, keyed by the mirror of this socket's tuple), skipping TCP and the veth. The proxy
 * still reads every byte the pod sends, and the pod every byte the proxy answers. Without a
 * peer in the sockhash the message takes the normal path.
 */
#include <linux/bpf.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "l7proxy-maps.h"

SEC("sk_msg")
int redirect_payload(struct sk_msg_md *msg)
{
	struct sock_key peer = {
		.local_ip4 = msg->remote_ip4,
		.remote_ip4 = msg->local_ip4,
		.local_port = bpf_ntohl(msg->remote_port),
		.remote_port = msg->local_port,
	};
	__u32 zero = 0;
	__u64 len = (__u64)((long)msg->data_end - (long)msg->data);
	struct counter_value *stats;

	/* SK_DROP here only means "no peer in the sockhash": then the normal path. */
	if (bpf_msg_redirect_hash(msg, &l7_sockhash, &peer, BPF_F_INGRESS) != SK_PASS)
		return SK_PASS;
	stats = bpf_map_lookup_elem(&l7_sockmap_stats, &zero);
	if (stats) {
		stats->packets++;
		stats->bytes += msg->size ? msg->size : len;
	}
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
