/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Map layouts shared by every l7proxy BPF program. The TypeScript loader mirrors these structs
 * in one module and checks their sizes at load time, so change both together.
 *
 * Byte order: addresses and ports are in network order, as they sit in the packet, so the
 * datapath never converts; identities, ids and counters are in host order.
 */
#ifndef L7PROXY_MAPS_H
#define L7PROXY_MAPS_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>

/* Reserved identities, as in Cilium. 0 in a policy key means "any identity". */
#define L7_IDENTITY_ANY 0
#define L7_IDENTITY_HOST 1
#define L7_IDENTITY_WORLD 2

/* ipcache: which identity an address belongs to (longest prefix wins). */
struct ipcache_key {
	__u32 prefixlen; /* LPM trie: bits of addr that count */
	__u32 addr;      /* IPv4, network order */
};

struct ipcache_value {
	__u32 identity;
};

/* endpoints: the node-side veth's ifindex -> the endpoint behind it. */
#define L7_EP_ENFORCE_INGRESS (1u << 0)
#define L7_EP_ENFORCE_EGRESS (1u << 1)

struct endpoint_value {
	__u32 endpoint_id;
	__u32 identity;
	__u32 flags; /* L7_EP_ENFORCE_*: default deny applies in that direction */
};

/* endpoint_ips: a local endpoint's address -> the endpoint (for its ingress policy). */

/* ct: connections this node allowed, keyed by their first packet's tuple. Replies (the reversed
 * tuple) pass without a policy lookup; later packets keep the first packet's verdict. */
struct ct_key {
	__u32 saddr; /* network order */
	__u32 daddr;
	__u16 sport; /* network order */
	__u16 dport;
	__u8 protocol;
	__u8 pad[3];
};

/* A TCP connection that sent a FIN or RST either way: kept only L7_CT_CLOSING_LIFETIME_NS more. */
#define L7_CT_CLOSING (1u << 0)
/* Opened by the node (to-endpoint saw its SYN first: the proxy's upstream connections, above all):
 * in sockmap mode its two local sockets are paired in the sockhash as a steered flow's are. */
#define L7_CT_FROM_NODE (1u << 1)

struct ct_value {
	__u64 last_seen_ns; /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
	__u16 proxy_port; /* host order; non-zero: the connection goes to the proxy */
	__u16 flags;      /* L7_CT_CLOSING, L7_CT_FROM_NODE */
	__u16 pad[2];
};

/* proxymap: where a steered flow was going, keyed by its client, so the proxy can forward it to
 * its original destination: datagrams in every mode, connections too in dnat mode (where
 * getsockname() only shows the proxy), whose replies it also reverse-translates. */
struct proxymap_key {
	__u32 saddr; /* the client, network order */
	__u16 sport;
	__u8 protocol;
	__u8 pad;
};

struct proxymap_value {
	__u32 daddr; /* the original destination, network order */
	__u16 dport;
	__u16 proxy_port; /* host order: the proxy it was steered to */
};

#define L7_CT_TCP_LIFETIME_NS (3600ULL * 1000000000ULL)
#define L7_CT_UDP_LIFETIME_NS (60ULL * 1000000000ULL)
#define L7_CT_CLOSING_LIFETIME_NS (10ULL * 1000000000ULL)

/* policy: an LPM trie of (endpoint, remote identity, direction, protocol, port prefix), so one
 * lookup finds the most specific port block (port ranges from endPort are prefix blocks). The
 * engine resolves deny precedence down the port hierarchy before writing. */
#define L7_DIR_INGRESS 0
#define L7_DIR_EGRESS 1

/* Bits of the key data before the port: endpoint_id, remote_identity, direction, protocol. */
#define L7_POLICY_PREFIX_FIXED 80
#define L7_POLICY_PREFIX_FULL 96

struct policy_key {
	__u32 prefixlen;       /* LPM: L7_POLICY_PREFIX_FIXED + port bits (0-16) */
	__u32 endpoint_id;
	__u32 remote_identity; /* L7_IDENTITY_ANY: every peer */
	__u8 direction;        /* L7_DIR_* */
	__u8 protocol;         /* IPPROTO_TCP, IPPROTO_UDP, or 0: every protocol (with port prefix 0) */
	__u16 dport;           /* network order, so its high bits come first */
};

#define L7_POLICY_DENY (1u << 0)

struct policy_value {
	__u16 proxy_port; /* host order; non-zero: steer to the proxy listening there */
	__u8 flags;       /* L7_POLICY_DENY */
	__u8 pad;
};

/* counters: per-CPU packets and bytes for each (endpoint, verdict). */
enum l7_verdict {
	L7_VERDICT_NOT_ENFORCED = 0, /* endpoint has no policy in this direction */
	L7_VERDICT_ALLOWED = 1,
	L7_VERDICT_DENIED_BY_RULE = 2, /* a deny entry matched (deny wins) */
	L7_VERDICT_DENIED_DEFAULT = 3, /* enforced and no entry allowed it */
	L7_VERDICT_TO_PROXY = 4,       /* allowed at L3/L4, L7 rules apply: steered to the proxy */
	L7_VERDICT_NO_PROXY = 5,       /* needed the proxy, which could not be reached: dropped */
	L7_VERDICT_MAX,
};

struct counter_key {
	__u32 endpoint_id;
	__u32 verdict;
};

struct counter_value {
	__u64 packets;
	__u64 bytes;
};

/* config: one entry, written by the loader at start: how flows reach the proxy. */
enum l7_redirect_mode {
	L7_MODE_NONE = 0,      /* nothing steers: flows that need the proxy are dropped */
	L7_MODE_TPROXY = 1,    /* skb->mark carries the proxy port; a TPROXY rule delivers it */
	L7_MODE_SK_ASSIGN = 2, /* bpf_sk_assign to the proxy's socket, mark for the local route */
	L7_MODE_DNAT = 3,      /* destination rewritten to the proxy, replies reverse-translated */
	L7_MODE_SOCKMAP = 4,   /* steered as sk-assign, then payload moved socket to socket */
	L7_MODE_SK_LOOKUP = 5, /* mark for the local route; sk-lookup.bpf.c selects the proxy's socket */
};

/* The mark l7proxy's local route and TPROXY rules match (0xf00 bits), with the proxy port in the
 * upper 16 bits for TPROXY. */
#define L7_PROXY_MARK 0x200
#define L7_PROXY_MARK_MASK 0xf00

struct config_value {
	__u32 mode; /* l7_redirect_mode */
	__u32 proxy_addr; /* network order: where the proxy listens (127.0.0.1) */
};

/* sockhash: both local ends of a steered TCP connection (the pod's socket and the proxy's
 * accepted one), keyed by each socket's own view of the tuple; ports in host order. */
struct sock_key {
	__u32 local_ip4; /* network order */
	__u32 remote_ip4;
	__u32 local_port;
	__u32 remote_port;
};

/* spread: how reuseport.bpf.c takes turns over the HTTP proxy's threads. */
struct spread_state {
	__u32 sockets; /* entries 0..sockets-1 of l7_http_threads (the agent writes it) */
	__u32 next;    /* the next turn (the program counts it) */
};

#define L7_MAX_ENDPOINTS 1024
#define L7_MAX_PROXY_THREADS 64
#define L7_MAX_IPCACHE 65536
#define L7_MAX_POLICY 65536

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_value);
	__uint(max_entries, L7_MAX_IPCACHE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} l7_ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct endpoint_value);
	__uint(max_entries, L7_MAX_ENDPOINTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} l7_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct endpoint_value);
	__uint(max_entries, L7_MAX_ENDPOINTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} l7_endpoint_ips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_value);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} l7_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct proxymap_key);
	__type(value, struct proxymap_value);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} l7_proxymap SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
	__uint(max_entries, L7_MAX_POLICY);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} l7_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, struct counter_key);
	__type(value, struct counter_value);
	__uint(max_entries, L7_MAX_ENDPOINTS * L7_VERDICT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} l7_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct config_value);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} l7_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__type(key, struct sock_key);
	__type(value, __u64);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} l7_sockhash SEC(".maps");

/* proxy_sockets: the proxy's sockets by port and protocol, for sk-lookup.bpf.c: TCP listeners,
 * and in sk-lookup mode the DNS proxy's UDP socket. Any socket of a SO_REUSEPORT group stands for
 * the group. The agent inserts them (the value is the socket's fd on update); a socket leaves
 * when it closes. */
struct proxy_socket_key {
	__u16 port; /* host order */
	__u8 protocol; /* IPPROTO_TCP, IPPROTO_UDP */
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__type(key, struct proxy_socket_key);
	__type(value, __u64);
	__uint(max_entries, 16);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} l7_proxy_sockets SEC(".maps");

/* http_threads: the HTTP proxy's listening sockets, one per proxy thread, all of one SO_REUSEPORT
 * group (the agent inserts them by fd; a socket leaves when it closes). A SOCKMAP, not a
 * REUSEPORT_SOCKARRAY: that one refuses a socket already in a sockhash (l7_proxy_sockets). */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, L7_MAX_PROXY_THREADS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} l7_http_threads SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct spread_state);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} l7_spread SEC(".maps");

/* sockmap_stats: messages and bytes sk_msg moved socket to socket (index 0). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct counter_value);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} l7_sockmap_stats SEC(".maps");

#endif /* L7PROXY_MAPS_H */
