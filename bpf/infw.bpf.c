/* infw: XDP ingress firewall, compiled by bcc at load time (engine/kernel/loader.py).
 *
 * A packet costs a parse (parsing.h), a fail-safe check and two lookups whatever the number
 * of rules: (generation, ifindex, source) -> merged rule list, then (list, protocol class,
 * fragment flag, port or ICMP type<<8|code) -> the first matching rule. Both are multibit
 * tries of 256-entry nodes (engine/core/compiler.py fast_images) whose roots, like the
 * fail-safe ports and the exact-prefix buckets, sit in one map element (table_roots) and whose
 * nodes in another (trie_nodes): one map lookup each per packet, then a few loads. What does not fit in the arrays is looked up in the LPM tries
 * src_lpm and seg_lpm instead, which a root entry of ROOT_TRIE points the program to.
 * engine/core/classify.py `lookup` is the reference for the decision and engine/core/frame.py
 * `parse_frame` for the parse; the kernel tests hold this file to both.
 *
 * The loader defines PIN_ROOT (a string) and every constant from engine/kernel/abi.py; the
 * maps and their structs are in maps.h.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>

#include "parsing.h"
#include "maps.h"

#define RATE_WINDOW_NS 1000000000ULL

/* Count a packet (len bytes, 0 for a count of events) on this CPU's node counter idx; returns
 * the counter's packets after it, 0 if there is none. */
static __always_inline u64 count(u32 idx, u64 len)
{
    struct counter *c = node_stats.lookup(&idx);

    if (!c)
        return 0;
    c->packets++;
    c->bytes += len;
    return c->packets;
}

/* Does this packet carry infw trace metadata? Real packets fail the first test. */
static __always_inline int is_traced(struct xdp_md *ctx)
{
    struct trace_meta *tm = (void *)(long)ctx->data_meta;

    if ((void *)(tm + 1) > (void *)(long)ctx->data)
        return 0;
    return tm->magic == TRACE_MAGIC;
}

/* A traced packet's verdict: into its metadata, nowhere else. */
static __always_inline int traced(struct xdp_md *ctx, u32 reason, u32 rule_id, u32 xdp_action)
{
    struct trace_meta *tm = (void *)(long)ctx->data_meta;

    if ((void *)(tm + 1) <= (void *)(long)ctx->data) {
        tm->reason = reason;
        tm->rule_id = rule_id;
        tm->xdp_action = xdp_action;
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

static __always_inline void emit_drop(u32 ifindex, struct config *cfg,
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
    e->ifindex = ifindex;
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

/* Is the packet that took a counter to seq one of the 1 in n sampled? The counter is the one
 * its path just counted it on (per CPU, so seq runs 1, 2, 3, ... along that path), mixed by the
 * murmur3 finaliser: its output over consecutive values is spread evenly, so each packet is
 * sampled with probability 1/n as by a coin flip, independent of which flow sent it, and a
 * packet that is not sampled costs a few ALU instructions on a value already in a register
 * (no map read, no random number). A multiply scales to n, not a division. */
static __always_inline int sample_due(u64 seq, u32 n)
{
    u32 h = (u32)seq;

    h ^= h >> 16;
    h *= 0x85ebca6b;
    h ^= h >> 13;
    h *= 0xc2b2ae35;
    h ^= h >> 16;
    return seq && (((u64)h * n) >> 32) == 0;
}

/* Sample the packet into the flows map (config flow_sample: 1 in N, 0 off). A sample calls no
 * helper but the flows map's: a flow's times come from the coarse clock as read once per tick
 * (bpf_jiffies64 is an inlined load; a flow is shown by the second). The flows map is shared
 * across CPUs, so its counts add atomically. */
static __always_inline void sample_flow(u32 ifindex, struct config *cfg, struct packet *pkt,
                                        u64 len, u64 seq, u8 reason, u32 rule_id, u8 action)
{
    u32 n = cfg->flow_sample;
    if (!n || !sample_due(seq, n))
        return;
    u32 zero = 0;
    struct flow_clock *fc = flow_clock.lookup(&zero);
    if (!fc)
        return;
    u64 j = bpf_jiffies64();
    if (j != fc->jiffies) {
        fc->jiffies = j;
        fc->now_ns = bpf_ktime_get_coarse_ns();
    }
    u64 now = fc->now_ns;
    struct flow_key k = {.ifindex = ifindex, .l4proto = pkt->l4proto,
                         .flags = pkt->nonfirst ? FLOW_FLAG_NONFIRST : 0, .value = pkt->value};
    __builtin_memcpy(k.addr, pkt->src, 16);
    struct flow_val *v = flows.lookup(&k);
    if (v) {
        __sync_fetch_and_add(&v->packets, 1);
        __sync_fetch_and_add(&v->bytes, len);
        v->last_ns = now;
        v->rule_id = rule_id;
        v->reason = reason;
        v->action = action;
        return;
    }
    struct flow_val fresh = {.packets = 1, .bytes = len, .first_ns = now, .last_ns = now,
                             .rule_id = rule_id, .reason = reason, .action = action};
    flows.insert(&k, &fresh);
}

static __always_inline u32 failsafe_bit(u8 proto)
{
    return proto == IPPROTO_TCP   ? FAILSAFE_TCP
           : proto == IPPROTO_UDP ? FAILSAFE_UDP
                                  : FAILSAFE_SCTP;
}

static __always_inline u8 proto_class(u8 proto)
{
    switch (proto) {
    case IPPROTO_TCP:
    case IPPROTO_UDP:
    case IPPROTO_SCTP:
    case IPPROTO_ICMP:
    case IPPROTO_ICMPV6:
        return proto;
    default:
        return PROTO_OTHER;
    }
}

/* slot of a protocol class in a list_roots row (engine/kernel/abi.py SEG_CLASS_INDEX) */
static __always_inline u32 class_index(u8 proto)
{
    switch (proto) {
    case IPPROTO_TCP:
        return CLASS_TCP;
    case IPPROTO_UDP:
        return CLASS_UDP;
    case IPPROTO_SCTP:
        return CLASS_SCTP;
    case IPPROTO_ICMP:
        return CLASS_ICMP;
    case IPPROTO_ICMPV6:
        return CLASS_ICMPV6;
    default:
        return CLASS_OTHER;
    }
}

/* One step down a trie: the entry at byte b of the node an entry points to (within the
 * generation's half at base; the mask only keeps the verifier's bound, as indexes are). */
static __always_inline u32 node_step(u32 *nodes, u32 base, u32 entry, u8 b)
{
    u32 idx = (base + (entry & NODE_INDEX_MASK)) & (NODES_TOTAL - 1);
    return nodes[idx * NODE_ENTRIES + b];
}

/* A source root entry, and the host region beside it, at root index ri of table_roots (maps.h);
 * the masks only keep the verifier's bound, as indexes are in range. */
static __always_inline u32 src_root(u8 *roots, u32 ri)
{
    return *(u32 *)(roots + (u64)(ri & (SRC_ROOTS_ENTRIES - 1)) * 8);
}

static __always_inline struct host_region *host_region(u8 *roots, u32 ri)
{
    u64 at = (u64)(ri & (SRC_ROOTS_ENTRIES - 1)) * sizeof(struct host_region);
    return (struct host_region *)(roots + ROOTS_REGIONS_OFF + at);
}

static __always_inline struct list_roots *list_row(u8 *roots, u32 li)
{
    u64 at = (u64)(li & (LIST_ROOTS_ENTRIES - 1)) * sizeof(struct list_roots);
    return (struct list_roots *)(roots + ROOTS_LISTS_OFF + at);
}

/* The tables have nothing for this ifindex: not even a ROOT_EMPTY root. No list id is this. */
#define NO_TABLES 0xffffffff

/* Bucket index of the folded address f within a region of `buckets`: the top half of a
 * multiplicative hash, scaled to the region without a division (engine/kernel/cuckoo.py). */
static __always_inline u32 bucket_of(u64 f, u64 c, u32 buckets)
{
    return (u32)((((f * c) >> 32) * buckets) >> 32);
}

/* The list id of the IPv4 host in bucket idx, 0 if none there. At most one slot holds the
 * address, and a free slot's list id is 0, so OR-ing the matches needs no branch per slot. */
static __always_inline u32 probe4(u8 *roots, u32 idx, u32 addr)
{
    u32 hit = 0;

    if (idx >= 2 * HOST4_BUCKETS_PER_GEN)
        return 0;
    struct host4_bucket *b = (struct host4_bucket *)(roots + ROOTS_HOST4_OFF +
                                                      (u64)idx * sizeof(struct host4_bucket));
#pragma unroll
    for (int i = 0; i < HOST_SLOTS; i++)
        hit |= b->addr[i] == addr ? b->list_id[i] : 0;
    return hit;
}

static __always_inline u32 probe6(u8 *roots, u32 idx, u64 hi, u64 lo)
{
    u32 hit = 0;

    if (idx >= 2 * HOST6_BUCKETS_PER_GEN)
        return 0;
    struct host6_bucket *b = (struct host6_bucket *)(roots + ROOTS_HOST6_OFF +
                                                      (u64)idx * sizeof(struct host6_bucket));
#pragma unroll
    for (int i = 0; i < HOST_SLOTS; i++)
        hit |= (b->hi[i] == hi && b->lo[i] == lo) ? b->list_id[i] : 0;
    return hit;
}

/* The exact-prefix tables: the source masked to the length the root names (the region holds
 * the masks, so the program builds none), looked up in the root's cuckoo region (two buckets),
 * or in the hosts hash when the region has none. A hit is the longest match (the compiler
 * takes only prefixes that hold no longer one), so it decides alone; 0 is a miss. */
static __always_inline u32 host_list(u32 gen, u32 ifindex, u32 ri, u32 space, struct packet *pkt,
                                     u8 *roots)
{
    u64 hi, lo;
    __builtin_memcpy(&hi, pkt->src, 8);
    __builtin_memcpy(&lo, pkt->src + 8, 8);
    struct host_region *r = host_region(roots, ri);
    hi &= r->mask_hi;
    lo &= r->mask_lo;
    if (r->buckets) {
        u64 f = (hi * HOST_HASH_C1) ^ lo ^ r->seed;
        u32 b1 = r->base + bucket_of(f, HOST_HASH_C2, r->buckets);
        u32 b2 = r->base + bucket_of(f, HOST_HASH_C3, r->buckets);
        if (space == V4_SPACE) {
            u32 hit = probe4(roots, b1, (u32)(lo >> 32));
            return hit ? hit : probe4(roots, b2, (u32)(lo >> 32));
        }
        u32 hit = probe6(roots, b1, hi, lo);
        return hit ? hit : probe6(roots, b2, hi, lo);
    }
    struct host_key hk = {.tag = ifindex << 1 | gen};
    __builtin_memcpy(hk.addr, &hi, 8);
    __builtin_memcpy(hk.addr + 8, &lo, 8);
    u32 *list_id = hosts.lookup(&hk);
    return list_id ? *list_id : 0;
}

/* (generation, ifindex, source) -> rule-list id, 0 on a miss, NO_TABLES when the tables do not
 * cover the interface at all (ifindexes beyond the root array are never told apart). roots and
 * ni: table_roots' and trie_nodes' elements. */
static __always_inline u32 source_list(u32 gen, u32 ifindex, struct packet *pkt, u8 *roots,
                                       u32 *ni)
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
        entry = src_root(roots, ri);
        if (!entry)
            return NO_TABLES;
        if (entry & ROOT_HOSTS) {
            /* a hit is a leaf (a list id): the walk below stops at once and returns it; one
             * way out for both, so the verifier does not follow the rest twice */
            u32 hit = host_list(gen, ifindex, ri, space, pkt, roots);
            entry = hit ? hit : entry & ~(ROOT_HOSTS | HOST_LEN_MASK);
        }
        if (entry == ROOT_EMPTY)
            return 0;
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
            entry = node_step(ni, base, entry, pkt->src[i]);
        }
    } else {
        for (int i = 0; i < 16; i++) {
            if (!(entry & NODE_FLAG))
                break;
            entry = node_step(ni, base, entry, pkt->src[i & 15]);
        }
    }
    return entry & NODE_FLAG ? 0 : entry;
}

/* (list, class, fragment flag, value) -> action << 16 | rule id, 0 when no rule matches. */
static __always_inline u32 first_rule(u32 gen, u32 list_id, struct packet *pkt, u8 *roots,
                                      u32 *ni)
{
    u8 cls = proto_class(pkt->l4proto);
    u32 entry = ROOT_TRIE;
    if (list_id < LISTS_PER_GEN) {
        struct list_roots *lr = list_row(roots, gen * LISTS_PER_GEN + list_id);
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
        entry = node_step(ni, base, entry, pkt->value >> 8);
    if (entry & NODE_FLAG)
        entry = node_step(ni, base, entry, pkt->value & 0xff);
    return entry & NODE_FLAG ? 0 : entry;
}

/* The reply key of a packet, from the reply's side (inbound) or the flow's (outbound, then
 * remote and local swap). 0 when the packet cannot be part of a tracked flow; *opens says
 * whether an outbound packet may start one (a TCP SYN, any UDP, an echo request). */
static __always_inline int reply_key_of(struct hdr_cursor *nh, void *data_end, u32 ifindex,
                                        struct packet *pkt, int outbound,
                                        struct reply_key *key, int *opens)
{
    if (pkt->nonfirst)
        return 0;
    key->ifindex = ifindex;
    key->family = pkt->family;
    key->l4proto = pkt->l4proto;
    u8 proto = pkt->l4proto;
    if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
        key->remote_port = outbound ? pkt->dport : pkt->sport;
        key->local_port = outbound ? pkt->sport : pkt->dport;
        *opens = 1;
        if (proto == IPPROTO_TCP && outbound) {
            int syn = parse_tcp_open(nh, data_end);
            if (syn < 0)
                return 0;
            *opens = syn;
        }
    } else if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) {
        u8 want = proto == IPPROTO_ICMP ? (outbound ? ICMP_ECHO : ICMP_ECHOREPLY)
                                        : (outbound ? ICMPV6_ECHO_REQUEST : ICMPV6_ECHO_REPLY);
        if (pkt->icmp_type != want || pkt->icmp_code != 0)
            return 0;
        int id = parse_echo_id(nh, data_end);
        if (id < 0)
            return 0;
        key->remote_port = id;
        *opens = 1;
    } else {
        return 0;
    }
    if (outbound) {
        __builtin_memcpy(key->remote, pkt->dst, 16);
        __builtin_memcpy(key->local, pkt->src, 16);
    } else {
        __builtin_memcpy(key->remote, pkt->src, 16);
        __builtin_memcpy(key->local, pkt->dst, 16);
    }
    return 1;
}

/* Does this denied packet answer a flow the node opened on this interface, recently enough? */
static __always_inline int is_reply(struct hdr_cursor *nh, void *data_end, u32 ifindex,
                                    struct packet *pkt)
{
    u32 zero = 0;
    struct reply_config *rc = reply_config.lookup(&zero);
    if (!rc || !rc->enabled)
        return 0;
    struct reply_key key = {};
    int opens = 0;
    if (!reply_key_of(nh, data_end, ifindex, pkt, 0, &key, &opens))
        return 0;
    struct reply_val *v = replies.lookup(&key);
    if (!v)
        return 0;
    u64 timeout = key.l4proto == IPPROTO_TCP   ? rc->tcp_ns
                  : key.l4proto == IPPROTO_UDP ? rc->udp_ns
                                               : rc->icmp_ns;
    return bpf_ktime_get_ns() - v->seen_ns <= timeout;
}

int infw_xdp(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    u64 len = data_end - data;
    /* read once, here: clang may otherwise keep ctx + offset in a register for later, which
     * the verifier refuses (a modified ctx pointer) */
    u32 ifindex = ctx->ingress_ifindex;
    u32 zero = 0;
    struct config *cfg = config.lookup(&zero);

    if (!cfg)
        return XDP_PASS;

    /* `infw trace` on a live firewall (is_traced): decide, answer, count nothing */
    struct packet pkt; /* the parse writes both addresses of an IP packet; zero the rest */
    __builtin_memset(&pkt.vlan, 0, sizeof(pkt) - offsetof(struct packet, vlan));
    struct hdr_cursor nh = {.pos = data};
    int parsed = parse_packet(&nh, data_end, &pkt);
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

    /* the roots and the trie nodes, each one element whatever their size (maps.h); a
     * single-element array always has it */
    u8 *roots = table_roots.lookup(&zero);
    u32 *ni = (u32 *)trie_nodes.lookup(&zero);
    if (!roots || !ni)
        return XDP_PASS;

    /* 1. fail-safe: (protocol, destination port), any source, before any rule */
    if (pkt.has_ports) {
        u64 at = ROOTS_FAILSAFE_OFF + (u64)(pkt.dport & (FAILSAFE_MAX_ENTRIES - 1)) * 8;
        if (*(u32 *)(roots + at) & failsafe_bit(pkt.l4proto)) {
            if (is_traced(ctx))
                return traced(ctx, REASON_FAILSAFE, 0, XDP_PASS);
            u64 seq = count(NC_FAILSAFE, len);
            sample_flow(ifindex, cfg, &pkt, len, seq, REASON_FAILSAFE, 0, 0);
            return XDP_PASS;
        }
    }

    /* 2. source -> merged rule list of the active generation (read once: the switch point) */
    u32 gen = *(volatile u32 *)&cfg->active_gen & 1;
    u32 list_id = source_list(gen, ifindex, &pkt, roots, ni);
    /* 3. first matching rule of that list for this protocol class and value */
    u32 hit = list_id && list_id != NO_TABLES ? first_rule(gen, list_id, &pkt, roots, ni) : 0;
    if (!hit) {
        if (is_traced(ctx))
            return traced(ctx, REASON_NO_MATCH, 0, XDP_PASS);
        /* no tables for the interface: passed as no rule matches, but not counted as one */
        u64 seq = count(list_id == NO_TABLES ? NC_UNCONFIGURED : NC_NO_MATCH, len);
        sample_flow(ifindex, cfg, &pkt, len, seq, REASON_NO_MATCH, 0, 0);
        return XDP_PASS;
    }

    u32 rule_id = hit & 0xffff;
    /* only where a rule denies: the allow path never looks at the node's own flows */
    if ((hit >> 16) != ACTION_ALLOW && is_reply(&nh, data_end, ifindex, &pkt)) {
        if (is_traced(ctx))
            return traced(ctx, REASON_REPLY, rule_id, XDP_PASS);
        u64 seq = count(NC_REPLY_ALLOWED, len);
        /* the flow shows the Deny it got past (rule and action) with REASON_REPLY; the rule's
         * own counter stays for what the rule decided */
        sample_flow(ifindex, cfg, &pkt, len, seq, REASON_REPLY, rule_id, hit >> 16);
        return XDP_PASS;
    }
    if (is_traced(ctx)) {
        u32 pass = (hit >> 16) == ACTION_ALLOW || cfg->mode == MODE_AUDIT;
        return traced(ctx, REASON_RULE, rule_id, pass ? XDP_PASS : XDP_DROP);
    }
    struct counter *rc = rule_stats.lookup(&rule_id);
    u64 seq = 0;
    if (rc) {
        seq = ++rc->packets;
        rc->bytes += len;
    }
    sample_flow(ifindex, cfg, &pkt, len, seq, REASON_RULE, rule_id, hit >> 16);
    if ((hit >> 16) == ACTION_ALLOW) {
        count(NC_ALLOW, len);
        return XDP_PASS;
    }
    if (cfg->mode == MODE_AUDIT) {
        count(NC_WOULD_DENY, len);
        emit_drop(ifindex, cfg, &pkt, rule_id, ACTION_WOULD_DENY, len);
        return XDP_PASS;
    }
    count(NC_DENY, len);
    emit_drop(ifindex, cfg, &pkt, rule_id, ACTION_DENY, len);
    return XDP_DROP;
}

/* tc egress (clsact), attached while replies are on: record the reply each outbound flow
 * expects, refreshing it on every outbound packet of the flow. Never drops anything. */
int infw_egress(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    u32 ifindex = skb->ifindex;
    u32 zero = 0;
    struct reply_config *rc = reply_config.lookup(&zero);

    if (!rc || !rc->enabled)
        return TC_ACT_OK;
    struct packet pkt = {};
    struct hdr_cursor nh = {.pos = data};
    if (parse_packet(&nh, data_end, &pkt) != PARSE_IP)
        return TC_ACT_OK;
    struct reply_key key = {};
    int opens = 0;
    if (!reply_key_of(&nh, data_end, ifindex, &pkt, 1, &key, &opens))
        return TC_ACT_OK;
    u64 now = bpf_ktime_get_ns();
    struct reply_val *v = replies.lookup(&key);
    if (v) {
        v->seen_ns = now;
        return TC_ACT_OK;
    }
    if (!opens)
        return TC_ACT_OK;
    struct reply_val fresh = {.seen_ns = now};
    if (replies.insert(&key, &fresh) == 0) /* BPF_NOEXIST: one count per flow */
        count(NC_REPLY_RECORDED, 0);
    return TC_ACT_OK;
}
