/* infw's maps and the structs they hold. Every struct is mirrored once in
 * engine/kernel/abi.py (tests/kernel/test_layout.py checks sizes and offsets agree), and every
 * constant comes from there too: the loader (engine/kernel/loader.py) passes each as -D, and
 * this file refuses to compile without them, so C and Python cannot drift apart.
 */
#ifndef INFW_MAPS_H
#define INFW_MAPS_H

#if !defined(PIN_ROOT) || !defined(SRC_MAX_ENTRIES) || !defined(SEG_MAX_ENTRIES) || \
    !defined(FAILSAFE_MAX_ENTRIES) || !defined(RULE_STATS_ENTRIES) || \
    !defined(NODE_COUNTERS) || !defined(EVENTS_RINGBUF_PAGES) || !defined(NODE_ENTRIES) || \
    !defined(NODES_PER_GEN) || !defined(NODES_TOTAL) || !defined(ROOT_IFINDEXES) || \
    !defined(SRC_ROOTS_ENTRIES) || !defined(LISTS_PER_GEN) || !defined(SEG_ROOTS) || \
    !defined(LIST_ROOTS_ENTRIES) || !defined(NODE_FLAG) || !defined(ROOT_TRIE) || \
    !defined(NODE_INDEX_MASK) || !defined(GEN_BIT) || !defined(SRC_KEY_FIXED_BITS) || \
    !defined(SEG_KEY_FIXED_BITS) || !defined(V4_SPACE) || !defined(V6_SPACE) || \
    !defined(PROTO_OTHER) || !defined(TRACE_MAGIC) || !defined(EVENT_FLAG_NONFIRST_FRAGMENT) || \
    !defined(FLOWS_ENTRIES) || !defined(FLOW_FLAG_NONFIRST) || !defined(REPLIES_MAX_ENTRIES) || \
    !defined(CLASS_TCP) || !defined(CLASS_UDP) || !defined(CLASS_SCTP) || \
    !defined(CLASS_ICMP) || !defined(CLASS_ICMPV6) || !defined(CLASS_OTHER) || \
    !defined(FAILSAFE_TCP) || !defined(FAILSAFE_UDP) || !defined(FAILSAFE_SCTP) || \
    !defined(ACTION_ALLOW) || !defined(ACTION_DENY) || !defined(ACTION_WOULD_DENY) || \
    !defined(MODE_ENFORCE) || !defined(MODE_AUDIT) || !defined(REASON_NONE) || \
    !defined(REASON_FAILSAFE) || !defined(REASON_RULE) || !defined(REASON_NO_MATCH) || \
    !defined(REASON_UNPARSED) || !defined(REASON_REPLY) || !defined(NC_ALLOW) || \
    !defined(NC_DENY) || !defined(NC_WOULD_DENY) || !defined(NC_FAILSAFE) || \
    !defined(NC_NO_MATCH) || !defined(NC_UNPARSED) || !defined(NC_EVENTS_SENT) || \
    !defined(NC_EVENTS_SUPPRESSED) || !defined(NC_EVENTS_LOST) || !defined(NC_REPLY_ALLOWED) || \
    !defined(NC_REPLY_RECORDED) || !defined(NC_UNCONFIGURED) || !defined(ROOT_EMPTY) || \
    !defined(ROOT_HOSTS) || !defined(HOST_LEN_SHIFT) || !defined(HOST_LEN_MASK) || \
    !defined(HOSTS_MAX_ENTRIES) || !defined(HOST_SLOTS) || !defined(HOST4_BUCKETS_PER_GEN) || \
    !defined(HOST6_BUCKETS_PER_GEN) || !defined(HOST_HASH_C1) || !defined(HOST_HASH_C2) || \
    !defined(HOST_HASH_C3) || !defined(ROOTS_LISTS_OFF) || !defined(ROOTS_REGIONS_OFF) || \
    !defined(ROOTS_FAILSAFE_OFF) || !defined(ROOTS_HOST4_OFF) || !defined(ROOTS_HOST6_OFF)
#error "infw's kernel constants are missing: compile through engine/kernel/loader.py, which passes engine/kernel/abi.py c_defines() as -D"
#endif

struct src_key {
    u32 prefixlen; /* counts from gen: SRC_KEY_FIXED_BITS + address bits */
    u8 gen;
    u8 pad[3];
    u32 ifindex;
    u8 addr[16]; /* IPv6, or IPv4-mapped IPv6 (::ffff:a.b.c.d) */
};

struct host_key {
    u32 tag; /* ifindex << 1 | generation */
    u8 addr[16]; /* masked to the prefix length the (ifindex, space) root names */
};

/* the cuckoo buckets of one (generation, space, ifindex): base is an absolute bucket index
 * into host4 or host6, the masks keep the root's prefix length (so the program need not
 * build them; a load fills them in for tables an older build wrote); buckets == 0 sends the
 * lookup to the hosts hash instead */
struct host_region {
    u64 mask_hi; /* the root's prefix length as masks of the two address words */
    u64 mask_lo;
    u32 base;
    u32 buckets;
    u32 seed;
    u32 pad;
};

/* list_id 0: a free slot. addr: the masked address's last four bytes as a u32 in memory order */
struct host4_bucket {
    u32 addr[HOST_SLOTS];
    u32 list_id[HOST_SLOTS];
};

/* hi, lo: the masked address as two u64 words in memory order */
struct host6_bucket {
    u64 hi[HOST_SLOTS];
    u64 lo[HOST_SLOTS];
    u32 list_id[HOST_SLOTS];
};

struct seg_key {
    u32 prefixlen; /* SEG_KEY_FIXED_BITS + value bits */
    u32 list_id;
    u8 proto;     /* IP protocol for TCP/UDP/SCTP/ICMP/ICMPv6, PROTO_OTHER for the rest */
    u8 nonfirst;  /* non-first fragment: no L4 header */
    u16 value_be; /* port, or ICMP type<<8|code; big-endian so prefixes work */
};

struct node {
    u32 e[NODE_ENTRIES]; /* leaf, or NODE_FLAG | node index within the generation's half */
};

struct list_roots {
    u32 root[SEG_ROOTS]; /* [protocol class index * 2 + nonfirst] */
};

struct seg_val {
    u32 rule_id;
    u32 action;
};

struct counter {
    u64 packets;
    u64 bytes;
};

struct config {
    u32 active_gen;
    u32 mode;
    u32 events_per_sec; /* per CPU; 0 disables events */
    u32 flow_sample; /* flows: 1 in N packets sampled; 0 turns sampling off */
    u64 generation;
};

struct ratelimit {
    u64 window_start_ns;
    u64 count;
    u64 last_jiffies; /* the coarse clock only moves with jiffies: read it once per tick */
};

/* XDP metadata in front of a traced frame (BPF_PROG_TEST_RUN ctx_in data = its size): such a
 * packet counts nowhere and emits no event; the program writes its verdict back here (the
 * kernel copies the metadata out with the frame). The magic is left as it is, so every run of
 * a repeated test run is traced. Packets from a device carry no metadata: data_meta == data
 * (or past it where a driver has none). */
struct trace_meta {
    u32 magic; /* TRACE_MAGIC */
    u32 reason;
    u32 rule_id;
    u32 xdp_action;
};

struct drop_event {
    u64 ts_ns;
    u32 ifindex;
    u32 rule_id;
    u8 verdict;
    u8 family;
    u8 l4proto;
    u8 flags;
    u16 vlan;
    u16 sport;
    u16 dport;
    u8 icmp_type;
    u8 icmp_code;
    u32 pkt_len;
    u8 src[16];
    u8 dst[16];
};

/* flows: what the rules can tell apart about a packet -> sampled counts and its verdict */
struct flow_key {
    u32 ifindex;
    u8 l4proto;
    u8 flags;  /* FLOW_FLAG_NONFIRST */
    u16 value; /* host order: dport, or ICMP type<<8|code; 0 when absent */
    u8 addr[16];
};

struct flow_val {
    u64 packets; /* samples: the estimate is packets x N */
    u64 bytes;
    u64 first_ns;
    u64 last_ns;
    u32 rule_id;
    u8 reason;
    u8 action; /* the deciding rule's ACTION_*, 0 without a rule */
    u16 pad;
};

/* A reply as it will arrive (tc egress writes the reverse of an outbound packet): remote is
 * its source, local its destination; ports in host order; ICMP echo: remote_port is the id. */
struct reply_key {
    u32 ifindex;
    u8 family;
    u8 l4proto;
    u16 remote_port;
    u16 local_port;
    u16 pad;
    u8 remote[16];
    u8 local[16];
};

struct reply_val {
    u64 seen_ns; /* bpf_ktime_get_ns of the flow's last outbound packet */
};

struct reply_config {
    u32 enabled;
    u32 pad;
    u64 tcp_ns; /* a reply passes up to this long after the last outbound packet */
    u64 udp_ns;
    u64 icmp_ns;
};

/* bcc has no pinned ring buffer macro: this is BPF_RINGBUF_OUTPUT with a pin path. */
#define BPF_RINGBUF_PINNED(_name, _num_pages, _pinned)                                       \
    struct _name##_table_t {                                                                 \
        int key;                                                                             \
        u32 leaf;                                                                            \
        int (*ringbuf_output)(void *, u64, u64);                                             \
        void *(*ringbuf_reserve)(u64);                                                       \
        void (*ringbuf_discard)(void *, u64);                                                \
        void (*ringbuf_submit)(void *, u64);                                                 \
        u32 max_entries;                                                                     \
    };                                                                                       \
    __attribute__((section("maps/ringbuf:" _pinned)))                                        \
    struct _name##_table_t _name = {.max_entries = ((_num_pages) * PAGE_SIZE)}

BPF_TABLE_PINNED("lpm_trie", struct src_key, u32, src_lpm, SRC_MAX_ENTRIES,
                 PIN_ROOT "/src_lpm", BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("lpm_trie", struct seg_key, struct seg_val, seg_lpm, SEG_MAX_ENTRIES,
                 PIN_ROOT "/seg_lpm", BPF_F_NO_PREALLOC);
/* Every trie node of both generations in one element (node i at e[i * NODE_ENTRIES]): the
 * program looks the element up once per walk and steps by pointer arithmetic, where a lookup
 * per node would store its index to the stack and load it back on every step of the walk.
 * Mapped into the writer's memory (BPF_F_MMAPABLE), which writes nodes where they go. The
 * loader creates the pin with the element's real size, NODES_TOTAL nodes (ensure_node_image:
 * a 16 MiB value type costs bcc minutes to compile); bcc reuses it, and the verifier bounds
 * every access by that size. So the value type here is a node, indexed beyond its end. */
struct node_image {
    u32 e[NODE_ENTRIES];
};
_Static_assert((NODES_TOTAL & (NODES_TOTAL - 1)) == 0, "a mask keeps node indexes in range");
BPF_TABLE_PINNED("array", u32, struct node_image, trie_nodes, 1, PIN_ROOT "/trie_nodes",
                 BPF_F_MMAPABLE);
/* exact prefixes of one length per (ifindex, space) that hold no longer prefix (hosts, most
 * often): a hit is the longest match, so it is looked up before the trie; sized for both
 * generations, allocated per entry */
BPF_TABLE_PINNED("hash", struct host_key, u32, hosts, HOSTS_MAX_ENTRIES, PIN_ROOT "/hosts",
                 BPF_F_NO_PREALLOC);
/* Every root of both generations in one element (engine/kernel/abi.py RootImage), for the
 * reason trie_nodes is one: found by pointer arithmetic from one lookup per packet, not by a
 * lookup whose key goes through the stack. From its start:
 *   [generation][space][ifindex] -> root entry of that source trie, a u32 per 8 bytes;
 *   at ROOTS_LISTS_OFF, [generation][list id] -> struct list_roots, that list's rule tries;
 *   at ROOTS_REGIONS_OFF, [generation][space][ifindex] -> struct host_region;
 *   at ROOTS_FAILSAFE_OFF, destination port -> bitmask of the fail-safe protocols on it
 *   (FAILSAFE_*), a u32 per 8 bytes; not per generation (engine/kernel/tables.py);
 *   at ROOTS_HOST4_OFF and ROOTS_HOST6_OFF, the cuckoo buckets of the exact prefixes (the
 *   same prefixes the hosts hash can hold, in tables the program probes itself: two buckets
 *   a lookup), struct host4_bucket and host6_bucket by the absolute index a region's base
 *   starts.
 * Written through mmap by the writer. The loader creates the pin with its real size (as it
 * does trie_nodes), so the value type here is a placeholder indexed beyond its end. */
struct root_image {
    u64 src[1];
};
_Static_assert((SRC_ROOTS_ENTRIES & (SRC_ROOTS_ENTRIES - 1)) == 0, "masks keep roots in range");
_Static_assert((LIST_ROOTS_ENTRIES & (LIST_ROOTS_ENTRIES - 1)) == 0, "masks keep rows in range");
_Static_assert((FAILSAFE_MAX_ENTRIES & (FAILSAFE_MAX_ENTRIES - 1)) == 0, "a mask keeps ports");
BPF_TABLE_PINNED("array", u32, struct root_image, table_roots, 1, PIN_ROOT "/table_roots",
                 BPF_F_MMAPABLE);
BPF_TABLE_PINNED("percpu_array", u32, struct counter, rule_stats, RULE_STATS_ENTRIES,
                 PIN_ROOT "/rule_stats");
BPF_TABLE_PINNED("percpu_array", u32, struct counter, node_stats, NODE_COUNTERS,
                 PIN_ROOT "/node_stats");
BPF_TABLE_PINNED("array", u32, struct config, config, 1, PIN_ROOT "/config");
BPF_TABLE_PINNED("percpu_array", u32, struct ratelimit, ratelimit, 1, PIN_ROOT "/ratelimit");
/* the node's own outbound flows, as their replies will look; LRU: bounded, oldest out first */
BPF_TABLE_PINNED("lru_hash", struct reply_key, struct reply_val, replies, REPLIES_MAX_ENTRIES,
                 PIN_ROOT "/replies");
BPF_TABLE_PINNED("array", u32, struct reply_config, reply_config, 1, PIN_ROOT "/reply_config");
BPF_RINGBUF_PINNED(events, EVENTS_RINGBUF_PAGES, PIN_ROOT "/events");
/* LRU: a flood of new sources evicts the least recently seen flows, never fails an insert */
BPF_TABLE_PINNED("lru_hash", struct flow_key, struct flow_val, flows, FLOWS_ENTRIES,
                 PIN_ROOT "/flows");
/* per CPU: the coarse clock as it read at the current tick, for the samples (bpf_jiffies64 is
 * an inlined load, the coarse clock a helper call). Scratch, so not pinned: a reload starts a
 * fresh one and loses nothing a reader sees. */
struct flow_clock {
    u64 jiffies; /* the tick now_ns was read at */
    u64 now_ns;  /* bpf_ktime_get_coarse_ns at that tick */
};
BPF_PERCPU_ARRAY(flow_clock, struct flow_clock, 1);

#ifdef INFW_LAYOUT_CHECK
/* Only for tests/kernel/test_layout.py: tables typed with the event record, the trace
 * metadata and table_roots' parts, so bcc generates ctypes structs to compare with
 * engine/kernel/abi.py's. */
BPF_ARRAY(layout_drop_event, struct drop_event, 1);
BPF_ARRAY(layout_trace_meta, struct trace_meta, 1);
/* the rows and regions of table_roots, which the program declares as a placeholder */
BPF_ARRAY(layout_list_roots, struct list_roots, 1);
BPF_ARRAY(layout_host_region, struct host_region, 1);
BPF_ARRAY(layout_host4_bucket, struct host4_bucket, 1);
BPF_ARRAY(layout_host6_bucket, struct host6_bucket, 1);
#endif

#endif /* INFW_MAPS_H */
