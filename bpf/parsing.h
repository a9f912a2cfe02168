/* Packet parsing for infw, in the style of xdp-tutorial's parsing_helpers.h: a cursor moves
 * through the headers, each helper checks the bounds of what it reads next to the read, and
 * the kernel's own struct and constant names are used (those outside the uapi headers are
 * defined here with their kernel names). engine/core/frame.py `parse_frame` is the reference;
 * the kernel tests hold this file to it.
 */
#ifndef INFW_PARSING_H
#define INFW_PARSING_H

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/icmp.h>
#include <linux/icmpv6.h>
#include <linux/tcp.h>

#define VLAN_MAX_DEPTH 2      /* outer and inner tag (802.1ad + 802.1Q); a third is unparsed */
#define IPV6_EXT_MAX_CHAIN 8  /* extension headers followed before giving up */
#define VLAN_VID_MASK 0x0fff  /* include/linux/if_vlan.h */
#define IP_OFFSET 0x1fff      /* include/net/ip.h: fragment offset bits of frag_off */

/* include/linux/if_vlan.h (not uapi) */
struct vlan_hdr {
    __be16 h_vlan_TCI;
    __be16 h_vlan_encapsulated_proto;
};

/* include/net/ipv6.h (not uapi) */
struct frag_hdr {
    __u8 nexthdr;
    __u8 reserved;
    __be16 frag_off; /* offset in 8-byte units << 3 | flags */
    __be32 identification;
};

/* The first four bytes of tcphdr, udphdr and sctphdr alike: all a rule needs. */
struct l4_ports {
    __be16 source;
    __be16 dest;
};

struct hdr_cursor {
    void *pos;
};

/* What the parse learns of a packet. */
struct packet {
    u8 src[16]; /* IPv6, or IPv4-mapped IPv6 (::ffff:a.b.c.d) */
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

static __always_inline int proto_is_vlan(__u16 h_proto)
{
    return h_proto == bpf_htons(ETH_P_8021Q) || h_proto == bpf_htons(ETH_P_8021AD);
}

/* Ethernet and up to VLAN_MAX_DEPTH tags: the ethertype behind them (network order), or -1 for
 * a truncated header or a deeper tag. *vlan_id is the outer tag's id, left 0 when untagged. */
static __always_inline int parse_ethhdr_vlan(struct hdr_cursor *nh, void *data_end,
                                             u16 *vlan_id)
{
    struct ethhdr *eth = nh->pos;

    if ((void *)(eth + 1) > data_end)
        return -1;
    nh->pos = eth + 1;
    u16 h_proto = eth->h_proto;

#pragma unroll
    for (int i = 0; i < VLAN_MAX_DEPTH; i++) {
        if (!proto_is_vlan(h_proto))
            break;
        struct vlan_hdr *vlh = nh->pos;
        if ((void *)(vlh + 1) > data_end)
            return -1;
        if (i == 0)
            *vlan_id = bpf_ntohs(vlh->h_vlan_TCI) & VLAN_VID_MASK;
        h_proto = vlh->h_vlan_encapsulated_proto;
        nh->pos = vlh + 1;
    }
    if (proto_is_vlan(h_proto))
        return -1;
    return h_proto;
}

static __always_inline void map_ipv4(u8 *out, __be32 addr)
{
    /* ::ffff:a.b.c.d, the address space the compiler keys IPv4 prefixes on */
    __builtin_memset(out, 0, 10);
    out[10] = 0xff;
    out[11] = 0xff;
    __builtin_memcpy(out + 12, &addr, 4);
}

/* IPv4: the protocol, or -1. Options are skipped, never interpreted. */
static __always_inline int parse_iphdr(struct hdr_cursor *nh, void *data_end, struct packet *pkt)
{
    struct iphdr *iph = nh->pos;

    if ((void *)(iph + 1) > data_end)
        return -1;
    if (iph->version != 4 || iph->ihl < 5)
        return -1;
    void *l4 = (void *)iph + iph->ihl * 4;
    if (l4 > data_end)
        return -1;
    pkt->family = 4;
    pkt->nonfirst = (bpf_ntohs(iph->frag_off) & IP_OFFSET) != 0;
    map_ipv4(pkt->src, iph->saddr);
    map_ipv4(pkt->dst, iph->daddr);
    nh->pos = l4;
    return iph->protocol;
}

/* IPv6 and its extension headers: the upper-layer protocol, or -1 for a truncated header or a
 * chain longer than IPV6_EXT_MAX_CHAIN. A non-first fragment stops at its fragment header (the
 * protocol is that header's next header; no L4 header follows). */
static __always_inline int parse_ip6hdr(struct hdr_cursor *nh, void *data_end, struct packet *pkt)
{
    struct ipv6hdr *ip6h = nh->pos;

    if ((void *)(ip6h + 1) > data_end)
        return -1;
    if (ip6h->version != 6)
        return -1;
    pkt->family = 6;
    __builtin_memcpy(pkt->src, &ip6h->saddr, 16);
    __builtin_memcpy(pkt->dst, &ip6h->daddr, 16);
    u8 nexthdr = ip6h->nexthdr;
    nh->pos = ip6h + 1;

#pragma unroll
    for (int i = 0; i < IPV6_EXT_MAX_CHAIN; i++) {
        if (nexthdr == IPPROTO_FRAGMENT) {
            struct frag_hdr *fh = nh->pos;
            if ((void *)(fh + 1) > data_end)
                return -1;
            nexthdr = fh->nexthdr;
            nh->pos = fh + 1;
            if (bpf_ntohs(fh->frag_off) >> 3) {
                pkt->nonfirst = 1;
                return nexthdr;
            }
            continue;
        }
        if (nexthdr != IPPROTO_HOPOPTS && nexthdr != IPPROTO_ROUTING &&
            nexthdr != IPPROTO_DSTOPTS)
            break;
        struct ipv6_opt_hdr *opt = nh->pos; /* hdrlen: 8-byte units beyond the first */
        if ((void *)(opt + 1) > data_end)
            return -1;
        void *next = (void *)opt + (opt->hdrlen + 1) * 8;
        if (next > data_end)
            return -1;
        nexthdr = opt->nexthdr;
        nh->pos = next;
    }
    if (nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
        nexthdr == IPPROTO_FRAGMENT || nexthdr == IPPROTO_DSTOPTS)
        return -1; /* beyond the bound */
    return nexthdr;
}

/* Ports of TCP, UDP and SCTP, type and code of ICMP and ICMPv6: PARSE_IP, or PARSE_UNPARSED
 * when the header is too short for them. Only the bytes read are checked (frame.py does the
 * same): a rule looks at nothing else. */
static __always_inline int parse_l4(struct hdr_cursor *nh, void *data_end, struct packet *pkt)
{
    if (pkt->nonfirst)
        return PARSE_IP;
    u8 proto = pkt->l4proto;
    if (proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP) {
        struct l4_ports *ports = nh->pos;
        if ((void *)(ports + 1) > data_end)
            return PARSE_UNPARSED;
        pkt->sport = bpf_ntohs(ports->source);
        pkt->dport = bpf_ntohs(ports->dest);
        pkt->value = pkt->dport;
        pkt->has_ports = 1;
    } else if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) {
        struct icmphdr *icmph = nh->pos; /* icmp6hdr starts the same: type, code */
        if ((void *)&icmph->checksum > data_end)
            return PARSE_UNPARSED;
        pkt->icmp_type = icmph->type;
        pkt->icmp_code = icmph->code;
        pkt->value = (u16)icmph->type << 8 | icmph->code;
    }
    return PARSE_IP;
}

/* The whole parse; nh is left at the L4 header (for the few that read more of it). */
static __always_inline int parse_packet(struct hdr_cursor *nh, void *data_end,
                                        struct packet *pkt)
{
    int proto;
    int h_proto = parse_ethhdr_vlan(nh, data_end, &pkt->vlan);

    if (h_proto < 0)
        return PARSE_UNPARSED;
    if (h_proto == bpf_htons(ETH_P_IP))
        proto = parse_iphdr(nh, data_end, pkt);
    else if (h_proto == bpf_htons(ETH_P_IPV6))
        proto = parse_ip6hdr(nh, data_end, pkt);
    else
        return PARSE_NON_IP;
    if (proto < 0)
        return PARSE_UNPARSED;
    pkt->l4proto = proto;
    return parse_l4(nh, data_end, pkt);
}

/* The id of an ICMP or ICMPv6 echo header at nh, or -1 if the header is shorter. */
static __always_inline int parse_echo_id(struct hdr_cursor *nh, void *data_end)
{
    struct icmphdr *icmph = nh->pos; /* icmp6hdr's echo id sits at the same offset */

    if ((void *)(icmph + 1) > data_end)
        return -1;
    return bpf_ntohs(icmph->un.echo.id);
}

/* Whether the TCP header at nh opens a connection (SYN without ACK); -1 if shorter. */
static __always_inline int parse_tcp_open(struct hdr_cursor *nh, void *data_end)
{
    struct tcphdr *th = nh->pos;

    if ((void *)(th + 1) > data_end)
        return -1;
    return th->syn && !th->ack;
}

#endif /* INFW_PARSING_H */
