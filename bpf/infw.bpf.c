/* infw: XDP ingress firewall, compiled by bcc at load time (engine/kernel/datapath.py).
 *
 * A packet costs a parse, one fail-safe array lookup and two lookups whatever the number of
 * rules: (generation, ifindex, source) -> merged rule list, then (list, protocol class,
 * fragment flag, port or ICMP type<<8|code) -> the first matching rule. Both are multibit
 * tries of 256-entry nodes in one array map (engine/core/compiler.py fast_images): a few inlined
 * array reads. What does not fit in the arrays is looked up in the LPM tries src_lpm and
 * seg_lpm instead, which a root entry of ROOT_TRIE points the program to.
 * engine/core/classify.py `lookup` is the reference for the decision and engine/core/frame.py
 * `parse_frame` for the parse; the kernel tests hold this file to both.
 *
 * The loader defines PIN_ROOT (a string) and the map sizes from engine/kernel/abi.py.
 * Every struct here is mirrored once in engine/kernel/abi.py; a test checks they agree.
 */
#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>

#ifndef PIN_ROOT
#error "PIN_ROOT must be defined by the loader (engine/kernel/datapath.py)"
#endif

#define ETH_P_8021AD_ 0x88A8
#define ETH_P_8021Q_ 0x8100
#define MAX_VLAN_TAGS 2
#define MAX_IPV6_EXT 8
#define IPV4_FRAG_OFFSET_MASK 0x1fff

#define NH_HOPOPTS 0
#define NH_ROUTING 43
#define NH_FRAGMENT 44
#define NH_DSTOPTS 60
#define PROTO_ICMP 1
#define PROTO_TCP 6
#define PROTO_UDP 17
#define PROTO_ICMPV6 58
#define PROTO_SCTP 132
#define PROTO_OTHER 255
#define FAILSAFE_TCP (1 << 0)
#define FAILSAFE_UDP (1 << 1)
#define FAILSAFE_SCTP (1 << 2)

#define NODE_ENTRIES 256
#define SEG_ROOTS 12
#define NODE_FLAG (1U << 30)
#define ROOT_TRIE (1U << 29)
#define NODE_INDEX_MASK (NODE_FLAG - 1)
#define V4_SPACE 0
#define V6_SPACE 1
#define GEN_BIT (1U << 31)

/* src_lpm key prefix bits before the address: gen(8) + pad(24) + ifindex(32) */
#define SRC_KEY_FIXED_BITS 64
/* seg_lpm key prefix bits before the value: list_id(32) + proto(8) + nonfirst(8) */
#define SEG_KEY_FIXED_BITS 48

enum action { ACTION_ALLOW = 1, ACTION_DENY = 2, ACTION_WOULD_DENY = 3 };
enum mode { MODE_ENFORCE = 0, MODE_AUDIT = 1 };
enum reason { REASON_NONE = 0, REASON_FAILSAFE = 1, REASON_RULE = 2, REASON_NO_MATCH = 3,
              REASON_UNPARSED = 4 };
enum node_counter { NC_ALLOW = 0, NC_DENY = 1, NC_WOULD_DENY = 2, NC_FAILSAFE = 3,
                    NC_NO_MATCH = 4, NC_UNPARSED = 5, NC_EVENTS_SENT = 6,
                    NC_EVENTS_SUPPRESSED = 7, NC_EVENTS_LOST = 8 };
#define EVENT_FLAG_NONFIRST_FRAGMENT 1
#define RATE_WINDOW_NS 1000000000ULL
#define TRACE_MAGIC 0x74776669U /* trace_meta.magic: "ifwt" */

struct src_key {
    u32 prefixlen;
    u8 gen;
    u8 pad[3];
    u32 ifindex;
    u8 addr[16]; /* IPv6, or IPv4-mapped IPv6 (::ffff:a.b.c.d) */
};

struct seg_key {
    u32 prefixlen;
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
    u32 reserved;       /* was the global trace flag; unused (traced packets carry metadata) */
    u64 generation;
};

struct ratelimit {
    u64 window_start_ns;
    u64 count;
    u64 last_jiffies; /* the coarse clock only moves with jiffies: read it once per tick */
};

struct last_verdict {
    u32 reason;
    u32 rule_id;
    u32 xdp_action;
    u32 pad;
};

/* XDP metadata in front of a traced frame (BPF_PROG_TEST_RUN ctx_in data = its size): such a
 * packet counts nowhere and emits no event; the program writes its verdict back here (the
 * kernel copies the metadata out with the frame) and in this CPU's last_verdict. The magic is
 * left as it is, so every run of a repeated test run is traced. Packets from a device carry no
 * metadata: data_meta == data (or past it where a driver has none). */
struct trace_meta {
    u32 magic;
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
BPF_TABLE_PINNED("array", u32, struct node, nodes, NODES_TOTAL, PIN_ROOT "/nodes");
/* [generation][space][ifindex] -> root entry of that source trie; userspace reads and writes
 * it through mmap (a batch lookup of every entry would cost ~70 ms per edit) */
BPF_TABLE_PINNED("array", u32, u32, src_roots, SRC_ROOTS_ENTRIES, PIN_ROOT "/src_roots",
                 BPF_F_MMAPABLE);
/* [generation][list id] -> root entries of that list's rule tries */
BPF_TABLE_PINNED("array", u32, struct list_roots, list_roots, LIST_ROOTS_ENTRIES,
                 PIN_ROOT "/list_roots");
/* destination port -> bitmask of fail-safe protocols: an array, so the lookup is inlined;
 * mmapable, so userspace finds the few ports set without a syscall per entry (~19 ms) */
BPF_TABLE_PINNED("array", u32, u32, failsafe, FAILSAFE_MAX_ENTRIES, PIN_ROOT "/failsafe",
                 BPF_F_MMAPABLE);
BPF_TABLE_PINNED("percpu_array", u32, struct counter, rule_stats, RULE_STATS_ENTRIES,
                 PIN_ROOT "/rule_stats");
BPF_TABLE_PINNED("percpu_array", u32, struct counter, node_stats, NODE_COUNTERS,
                 PIN_ROOT "/node_stats");
BPF_TABLE_PINNED("array", u32, struct config, config, 1, PIN_ROOT "/config");
BPF_TABLE_PINNED("percpu_array", u32, struct ratelimit, ratelimit, 1, PIN_ROOT "/ratelimit");
/* per CPU: the verdict of the last traced packet run on that CPU */
BPF_TABLE_PINNED("percpu_array", u32, struct last_verdict, last_verdict, 1,
                 PIN_ROOT "/last_verdict");
BPF_RINGBUF_PINNED(events, EVENTS_RINGBUF_PAGES, PIN_ROOT "/events");

#ifdef INFW_LAYOUT_CHECK
/* Only for tests/kernel/test_layout.py: tables typed with the event record and the trace
 * metadata, so bcc generates ctypes structs to compare with engine/kernel/abi.py's. */
BPF_ARRAY(layout_drop_event, struct drop_event, 1);
BPF_ARRAY(layout_trace_meta, struct trace_meta, 1);
#endif

/* What the parse learns of a packet. */
struct packet {
    u8 src[16];
    u8 dst[16];
    u16 vlan;
    u16 sport;
    u16 dport;
    u16 value; /* the seg_lpm value: port or ICMP type<<8|code; 0 when absent */
    u8 family;
    u8 l4proto;
    u8 nonfirst;
    u8 has_ports; /* TCP/UDP/SCTP first fragment: dport is valid */
    u8 icmp_type;
    u8 icmp_code;
};

enum parse_result { PARSE_IP = 0, PARSE_NON_IP = 1, PARSE_UNPARSED = 2 };

struct hdr_cursor {
    void *pos;
};

/* the kernel's struct frag_hdr lives in a non-uapi header */
struct ipv6_frag {
    u8 nexthdr;
    u8 reserved;
    __be16 frag_off; /* offset in 8-byte units << 3 | flags */
    __be32 identification;
};

static __always_inline int parse_ethhdr(struct hdr_cursor *nh, void *data_end,
                                        struct packet *pkt, u16 *ethertype)
{
    struct ethhdr *eth = nh->pos;

    if ((void *)(eth + 1) > data_end)
        return PARSE_UNPARSED;
    nh->pos = eth + 1;
    *ethertype = eth->h_proto;

#pragma unroll
    for (int i = 0; i < MAX_VLAN_TAGS; i++) {
        if (*ethertype != bpf_htons(ETH_P_8021Q_) && *ethertype != bpf_htons(ETH_P_8021AD_))
            break;
        __be16 *tag = nh->pos; /* {TCI, next ethertype} */
        if ((void *)(tag + 2) > data_end)
            return PARSE_UNPARSED;
        if (i == 0)
            pkt->vlan = bpf_ntohs(tag[0]) & 0x0fff;
        *ethertype = tag[1];
        nh->pos = tag + 2;
    }
    if (*ethertype == bpf_htons(ETH_P_8021Q_) || *ethertype == bpf_htons(ETH_P_8021AD_))
        return PARSE_UNPARSED; /* a third tag */
    return PARSE_IP;
}

static __always_inline void map_ipv4(u8 *out, __be32 addr)
{
    /* ::ffff:a.b.c.d, the address space the compiler keys IPv4 prefixes on */
    __builtin_memset(out, 0, 10);
    out[10] = 0xff;
    out[11] = 0xff;
    __builtin_memcpy(out + 12, &addr, 4);
}

static __always_inline int parse_ipv4(struct hdr_cursor *nh, void *data_end, struct packet *pkt)
{
    struct iphdr *iph = nh->pos;

    if ((void *)(iph + 1) > data_end)
        return PARSE_UNPARSED;
    if (iph->version != 4 || iph->ihl < 5)
        return PARSE_UNPARSED;
    void *l4 = (void *)iph + iph->ihl * 4; /* options are skipped, never interpreted */
    if (l4 > data_end)
        return PARSE_UNPARSED;
    pkt->family = 4;
    pkt->l4proto = iph->protocol;
    pkt->nonfirst = (bpf_ntohs(iph->frag_off) & IPV4_FRAG_OFFSET_MASK) != 0;
    map_ipv4(pkt->src, iph->saddr);
    map_ipv4(pkt->dst, iph->daddr);
    nh->pos = l4;
    return PARSE_IP;
}

static __always_inline int parse_ipv6(struct hdr_cursor *nh, void *data_end, struct packet *pkt)
{
    struct ipv6hdr *ip6h = nh->pos;

    if ((void *)(ip6h + 1) > data_end)
        return PARSE_UNPARSED;
    if (ip6h->version != 6)
        return PARSE_UNPARSED;
    pkt->family = 6;
    __builtin_memcpy(pkt->src, &ip6h->saddr, 16);
    __builtin_memcpy(pkt->dst, &ip6h->daddr, 16);
    u8 nexthdr = ip6h->nexthdr;
    nh->pos = ip6h + 1;

#pragma unroll
    for (int i = 0; i < MAX_IPV6_EXT; i++) {
        if (nexthdr == NH_FRAGMENT) {
            struct ipv6_frag *fh = nh->pos;
            if ((void *)(fh + 1) > data_end)
                return PARSE_UNPARSED;
            nexthdr = fh->nexthdr;
            nh->pos = fh + 1;
            if (bpf_ntohs(fh->frag_off) >> 3) {
                /* non-first fragment: the protocol is the fragment header's next header */
                pkt->nonfirst = 1;
                pkt->l4proto = nexthdr;
                return PARSE_IP;
            }
            continue;
        }
        if (nexthdr != NH_HOPOPTS && nexthdr != NH_ROUTING && nexthdr != NH_DSTOPTS)
            break;
        u8 *opt = nh->pos; /* {next header, length in 8-byte units beyond the first} */
        if ((void *)(opt + 2) > data_end)
            return PARSE_UNPARSED;
        void *next = (void *)opt + (opt[1] + 1) * 8;
        if (next > data_end)
            return PARSE_UNPARSED;
        nexthdr = opt[0];
        nh->pos = next;
    }
    if (nexthdr == NH_HOPOPTS || nexthdr == NH_ROUTING || nexthdr == NH_FRAGMENT ||
        nexthdr == NH_DSTOPTS)
        return PARSE_UNPARSED; /* beyond the bound */
    pkt->l4proto = nexthdr;
    return PARSE_IP;
}

static __always_inline int parse_l4(struct hdr_cursor *nh, void *data_end, struct packet *pkt)
{
    if (pkt->nonfirst)
        return PARSE_IP;
    u8 proto = pkt->l4proto;
    if (proto == PROTO_TCP || proto == PROTO_UDP || proto == PROTO_SCTP) {
        __be16 *ports = nh->pos; /* TCP, UDP and SCTP all start {source, destination} */
        if ((void *)(ports + 2) > data_end)
            return PARSE_UNPARSED;
        pkt->sport = bpf_ntohs(ports[0]);
        pkt->dport = bpf_ntohs(ports[1]);
        pkt->value = pkt->dport;
        pkt->has_ports = 1;
    } else if (proto == PROTO_ICMP || proto == PROTO_ICMPV6) {
        u8 *icmp = nh->pos; /* {type, code} */
        if ((void *)(icmp + 2) > data_end)
            return PARSE_UNPARSED;
        pkt->icmp_type = icmp[0];
        pkt->icmp_code = icmp[1];
        pkt->value = (u16)icmp[0] << 8 | icmp[1];
    }
    return PARSE_IP;
}

static __always_inline int parse_packet(void *data, void *data_end, struct packet *pkt)
{
    struct hdr_cursor nh = {.pos = data};
    u16 ethertype = 0;
    int ret = parse_ethhdr(&nh, data_end, pkt, &ethertype);

    if (ret != PARSE_IP)
        return ret;
    if (ethertype == bpf_htons(ETH_P_IP))
        ret = parse_ipv4(&nh, data_end, pkt);
    else if (ethertype == bpf_htons(ETH_P_IPV6))
        ret = parse_ipv6(&nh, data_end, pkt);
    else
        return PARSE_NON_IP;
    if (ret != PARSE_IP)
        return ret;
    return parse_l4(&nh, data_end, pkt);
}

static __always_inline void count(u32 idx, u64 len)
{
    struct counter *c = node_stats.lookup(&idx);

    if (c) {
        c->packets++;
        c->bytes += len;
    }
}

/* Does this packet carry infw trace metadata? Real packets fail the first test. */
static __always_inline int is_traced(struct xdp_md *ctx)
{
    struct trace_meta *tm = (void *)(long)ctx->data_meta;

    if ((void *)(tm + 1) > (void *)(long)ctx->data)
        return 0;
    return tm->magic == TRACE_MAGIC;
}

/* A traced packet's verdict: into its metadata and last_verdict, nowhere else. */
static __always_inline int traced(struct xdp_md *ctx, u32 reason, u32 rule_id, u32 xdp_action)
{
    struct trace_meta *tm = (void *)(long)ctx->data_meta;

    if ((void *)(tm + 1) <= (void *)(long)ctx->data) {
        tm->reason = reason;
        tm->rule_id = rule_id;
        tm->xdp_action = xdp_action;
    }
    u32 zero = 0;
    struct last_verdict *lv = last_verdict.lookup(&zero);
    if (lv) {
        lv->reason = reason;
        lv->rule_id = rule_id;
        lv->xdp_action = xdp_action;
    }
    return xdp_action;
}

/* Per-CPU window of one second, so a flood cannot starve the node or the consumer. */
static __always_inline int event_allowed(struct config *cfg)
{
    u32 zero = 0;
    struct ratelimit *rl = ratelimit.lookup(&zero);

    if (!rl || !cfg->events_per_sec)
        return 0;
    /* The coarse clock (a tick's precision is plenty for a 1 s window) advances only with
     * jiffies, and reading it is a helper call (~15 ns) where jiffies is an inlined load: look
     * at it once per tick, so a flood of drops costs no clock reads. */
    u64 j = bpf_jiffies64();
    if (j != rl->last_jiffies) {
        rl->last_jiffies = j;
        u64 now = bpf_ktime_get_coarse_ns();
        if (now - rl->window_start_ns >= RATE_WINDOW_NS) {
            rl->window_start_ns = now;
            rl->count = 0;
        }
    }
    if (rl->count >= cfg->events_per_sec)
        return 0;
    rl->count++;
    return 1;
}

static __always_inline void emit_drop(struct xdp_md *ctx, struct config *cfg,
                                      struct packet *pkt, u32 rule_id, u8 verdict, u64 len)
{
    if (!event_allowed(cfg)) {
        count(NC_EVENTS_SUPPRESSED, 0);
        return;
    }
    struct drop_event *e = events.ringbuf_reserve(sizeof(struct drop_event));
    if (!e) {
        count(NC_EVENTS_LOST, 0);
        return;
    }
    e->ts_ns = bpf_ktime_get_ns();
    e->ifindex = ctx->ingress_ifindex;
    e->rule_id = rule_id;
    e->verdict = verdict;
    e->family = pkt->family;
    e->l4proto = pkt->l4proto;
    e->flags = pkt->nonfirst ? EVENT_FLAG_NONFIRST_FRAGMENT : 0;
    e->vlan = pkt->vlan;
    e->sport = pkt->sport;
    e->dport = pkt->dport;
    e->icmp_type = pkt->icmp_type;
    e->icmp_code = pkt->icmp_code;
    e->pkt_len = len;
    __builtin_memcpy(e->src, pkt->src, 16);
    __builtin_memcpy(e->dst, pkt->dst, 16);
    events.ringbuf_submit(e, 0);
    count(NC_EVENTS_SENT, 0);
}

static __always_inline u32 failsafe_bit(u8 proto)
{
    return proto == PROTO_TCP ? FAILSAFE_TCP : proto == PROTO_UDP ? FAILSAFE_UDP : FAILSAFE_SCTP;
}

static __always_inline u8 proto_class(u8 proto)
{
    switch (proto) {
    case PROTO_TCP:
    case PROTO_UDP:
    case PROTO_SCTP:
    case PROTO_ICMP:
    case PROTO_ICMPV6:
        return proto;
    default:
        return PROTO_OTHER;
    }
}

/* index of a protocol class in list_roots (engine/core/compiler.py ALL_CLASSES) */
static __always_inline u32 class_index(u8 proto)
{
    switch (proto) {
    case PROTO_TCP:
        return 0;
    case PROTO_UDP:
        return 1;
    case PROTO_SCTP:
        return 2;
    case PROTO_ICMP:
        return 3;
    case PROTO_ICMPV6:
        return 4;
    default:
        return 5;
    }
}

/* One step down a trie: the entry at byte b of the node an entry points to. */
static __always_inline u32 node_step(u32 base, u32 entry, u8 b)
{
    u32 idx = base + (entry & NODE_INDEX_MASK);
    struct node *n = nodes.lookup(&idx);
    return n ? n->e[b] : 0;
}

/* (generation, ifindex, source) -> rule-list id, 0 on a miss. */
static __always_inline u32 source_list(u32 gen, u32 ifindex, struct packet *pkt)
{
    u32 space = V6_SPACE;
    if (pkt->family == 4) {
        space = V4_SPACE;
    } else {
        u32 w0, w1, w2;
        __builtin_memcpy(&w0, pkt->src, 4);
        __builtin_memcpy(&w1, pkt->src + 4, 4);
        __builtin_memcpy(&w2, pkt->src + 8, 4);
        if (!w0 && !w1 && w2 == bpf_htonl(0x0000ffff))
            space = V4_SPACE; /* IPv4-mapped source: the IPv4 trie */
    }
    u32 entry = ROOT_TRIE;
    if (ifindex < ROOT_IFINDEXES) {
        u32 ri = (gen * 2 + space) * ROOT_IFINDEXES + ifindex;
        u32 *root = src_roots.lookup(&ri);
        entry = root ? *root : 0;
    }
    if (entry == ROOT_TRIE) {
        struct src_key sk = {.prefixlen = SRC_KEY_FIXED_BITS + 128, .gen = gen,
                             .ifindex = ifindex};
        __builtin_memcpy(sk.addr, pkt->src, 16);
        u32 *list_id = src_lpm.lookup(&sk);
        return list_id ? (*list_id & ~GEN_BIT) : 0;
    }
    u32 base = gen * NODES_PER_GEN;
    if (space == V4_SPACE) {
#pragma unroll
        for (int i = 12; i < 16; i++) {
            if (!(entry & NODE_FLAG))
                break;
            entry = node_step(base, entry, pkt->src[i]);
        }
    } else {
        for (int i = 0; i < 16; i++) {
            if (!(entry & NODE_FLAG))
                break;
            entry = node_step(base, entry, pkt->src[i & 15]);
        }
    }
    return entry & NODE_FLAG ? 0 : entry;
}

/* (list, class, fragment flag, value) -> action << 16 | rule id, 0 when no rule matches. */
static __always_inline u32 first_rule(u32 gen, u32 list_id, struct packet *pkt)
{
    u8 cls = proto_class(pkt->l4proto);
    u32 entry = ROOT_TRIE;
    if (list_id < LISTS_PER_GEN) {
        u32 li = gen * LISTS_PER_GEN + list_id;
        struct list_roots *lr = list_roots.lookup(&li);
        if (!lr)
            return 0;
        u32 slot = class_index(cls) * 2 + (pkt->nonfirst ? 1 : 0);
        asm volatile("" : "+r"(slot)); /* keep the bound check for the verifier */
        if (slot >= SEG_ROOTS)
            return 0;
        entry = lr->root[slot];
    }
    if (entry == ROOT_TRIE) {
        struct seg_key gk = {.prefixlen = SEG_KEY_FIXED_BITS + 16,
                             .list_id = gen ? (list_id | GEN_BIT) : list_id,
                             .proto = cls, .nonfirst = pkt->nonfirst,
                             .value_be = bpf_htons(pkt->value)};
        struct seg_val *seg = seg_lpm.lookup(&gk);
        return seg ? (seg->action << 16 | (seg->rule_id & 0xffff)) : 0;
    }
    u32 base = gen * NODES_PER_GEN;
    if (entry & NODE_FLAG)
        entry = node_step(base, entry, pkt->value >> 8);
    if (entry & NODE_FLAG)
        entry = node_step(base, entry, pkt->value & 0xff);
    return entry & NODE_FLAG ? 0 : entry;
}

int infw_xdp(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    u64 len = data_end - data;
    u32 zero = 0;
    struct config *cfg = config.lookup(&zero);

    if (!cfg)
        return XDP_PASS;

    /* `infw trace` on a live firewall (is_traced): decide, answer, count nothing */
    struct packet pkt = {};
    int parsed = parse_packet(data, data_end, &pkt);
    if (parsed == PARSE_NON_IP) {
        if (is_traced(ctx))
            return traced(ctx, REASON_NONE, 0, XDP_PASS);
        return XDP_PASS;
    }
    if (parsed == PARSE_UNPARSED) {
        if (is_traced(ctx))
            return traced(ctx, REASON_UNPARSED, 0, XDP_PASS);
        count(NC_UNPARSED, len);
        return XDP_PASS;
    }

    /* 1. fail-safe: (protocol, destination port), any source, before any rule */
    if (pkt.has_ports) {
        u32 port = pkt.dport;
        u32 *protos = failsafe.lookup(&port);
        if (protos && (*protos & failsafe_bit(pkt.l4proto))) {
            if (is_traced(ctx))
                return traced(ctx, REASON_FAILSAFE, 0, XDP_PASS);
            count(NC_FAILSAFE, len);
            return XDP_PASS;
        }
    }

    /* 2. source -> merged rule list of the active generation (read once: the switch point) */
    u32 gen = *(volatile u32 *)&cfg->active_gen & 1;
    u32 list_id = source_list(gen, ctx->ingress_ifindex, &pkt);
    /* 3. first matching rule of that list for this protocol class and value */
    u32 hit = list_id ? first_rule(gen, list_id, &pkt) : 0;
    if (!hit) {
        if (is_traced(ctx))
            return traced(ctx, REASON_NO_MATCH, 0, XDP_PASS);
        count(NC_NO_MATCH, len);
        return XDP_PASS;
    }

    u32 rule_id = hit & 0xffff;
    if (is_traced(ctx)) {
        u32 pass = (hit >> 16) == ACTION_ALLOW || cfg->mode == MODE_AUDIT;
        return traced(ctx, REASON_RULE, rule_id, pass ? XDP_PASS : XDP_DROP);
    }
    struct counter *rc = rule_stats.lookup(&rule_id);
    if (rc) {
        rc->packets++;
        rc->bytes += len;
    }
    if ((hit >> 16) == ACTION_ALLOW) {
        count(NC_ALLOW, len);
        return XDP_PASS;
    }
    if (cfg->mode == MODE_AUDIT) {
        count(NC_WOULD_DENY, len);
        emit_drop(ctx, cfg, &pkt, rule_id, ACTION_WOULD_DENY, len);
        return XDP_PASS;
    }
    count(NC_DENY, len);
    emit_drop(ctx, cfg, &pkt, rule_id, ACTION_DENY, len);
    return XDP_DROP;
}
