"""The one home of the kernel ABI: every constant bpf/ uses (handed to the C program by the
loader as -D defines, see c_defines) and the ctypes mirror of its map keys, values and records.

A test compiles the C program and checks every size and offset here against it; the C side
refuses to compile without the defines (bpf/maps.h).
"""

from __future__ import annotations

import ctypes as ct
import enum

# A node's firewall is pinned here (the config's pinRoot default; the lab has its own).
DEFAULT_PIN_ROOT = "/sys/fs/bpf/infw"
# Map names: each is pinned as <pin root>/<name>.
PROG_PIN = "prog"
EGRESS_PIN = "egress"  # the tc egress program that records the node's own flows
MAP_SRC = "src_lpm"
MAP_SEG = "seg_lpm"
MAP_FAILSAFE = "failsafe"  # older builds: table_roots holds the fail-safe ports
MAP_RULE_STATS = "rule_stats"
MAP_NODE_STATS = "node_stats"
MAP_CONFIG = "config"
MAP_RATELIMIT = "ratelimit"
MAP_EVENTS = "events"
MAP_NODES = "trie_nodes"  # every node of both generations in one mmapable element
MAP_LEGACY_NODES = "nodes"  # older builds: one element per node (written by update_batch)
# every root of both generations (source roots, list root rows, host regions) in one
# mmapable element; older builds kept each in its own array map, one element per root
MAP_ROOTS = "table_roots"
MAP_SRC_ROOTS = "src_roots"  # older builds
MAP_LIST_ROOTS = "list_roots"  # older builds
MAP_FLOWS = "flows"
MAP_REPLIES = "replies"
MAP_REPLY_CONFIG = "reply_config"
MAP_HOSTS = "hosts"
MAP_HOST4 = "host4"  # older builds
MAP_HOST6 = "host6"  # older builds
MAP_HOST_REGIONS = "host_regions"  # older builds
# maps an older build has in place of this build's single-element images, and the image each
# is copied into at a reload
LEGACY_IMAGE_MAPS = {
    MAP_LEGACY_NODES: MAP_NODES,
    MAP_SRC_ROOTS: MAP_ROOTS,
    MAP_LIST_ROOTS: MAP_ROOTS,
    MAP_HOST_REGIONS: MAP_ROOTS,
    MAP_FAILSAFE: MAP_ROOTS,
    MAP_HOST4: MAP_ROOTS,
    MAP_HOST6: MAP_ROOTS,
}
ALL_MAPS = (
    MAP_SRC,
    MAP_SEG,
    MAP_FAILSAFE,
    MAP_RULE_STATS,
    MAP_NODE_STATS,
    MAP_CONFIG,
    MAP_RATELIMIT,
    MAP_EVENTS,
    MAP_NODES,
    MAP_LEGACY_NODES,
    MAP_ROOTS,
    MAP_SRC_ROOTS,
    MAP_LIST_ROOTS,
    MAP_FLOWS,
    MAP_REPLIES,
    MAP_REPLY_CONFIG,
    MAP_HOSTS,
    MAP_HOST4,
    MAP_HOST6,
    MAP_HOST_REGIONS,
)
# Maps a reload adds to pins of an older build (bcc creates a missing pinned map): their
# absence is no reason to refuse a reload, and an older build opened as it is lacks them.
OPTIONAL_MAPS = frozenset(
    {
        MAP_NODES,
        MAP_LEGACY_NODES,  # the other way round: only older builds have it
        MAP_ROOTS,
        MAP_SRC_ROOTS,  # so do these
        MAP_LIST_ROOTS,
        MAP_FAILSAFE,
        MAP_FLOWS,
        MAP_REPLIES,
        MAP_REPLY_CONFIG,
        MAP_HOSTS,
        MAP_HOST4,
        MAP_HOST6,
        MAP_HOST_REGIONS,
    }
)

# Sizes (kept in step with engine.core.compiler limits; both generations live at once).
SRC_MAX_ENTRIES = 2 * 131072 + 1024
SEG_MAX_ENTRIES = 2 * 1_000_000
RULE_STATS_ENTRIES = 65536
# fail-safe: an array indexed by destination port, because the verifier inlines array lookups
FAILSAFE_MAX_ENTRIES = 65536
EVENTS_RINGBUF_PAGES = 256  # 1 MiB

# Array tries (engine.compiler.fast_images): 256-entry nodes, NODES_PER_GEN per generation;
# a (generation, ifindex, space) root for ifindex < ROOT_IFINDEXES; a (generation, list id)
# root row for list id < LISTS_PER_GEN. Whatever does not fit goes to the LPM tries.
NODE_ENTRIES = 256
NODES_PER_GEN = 8192  # 8 MiB per generation
NODES_TOTAL = 2 * NODES_PER_GEN
ROOT_IFINDEXES = 65536
SRC_ROOTS_ENTRIES = 2 * 2 * ROOT_IFINDEXES  # [generation][space][ifindex]
LISTS_PER_GEN = 65536
SEG_ROOTS = 12  # 6 protocol classes x {first, non-first fragment}
LIST_ROOTS_ENTRIES = 2 * LISTS_PER_GEN  # [generation][list id]
NODE_FLAG = 1 << 30  # entry is a node index (relative to its generation's half)
ROOT_TRIE = 1 << 29  # root entry: look in the LPM trie instead
# root entry of a space the tables hold no prefix for, on an interface they do cover; a zero
# root means the tables have nothing for that interface at all (counted as unconfigured)
ROOT_EMPTY = 1 << 28
# root entry flag: look the source up in the exact-prefix hash first (HOST_LEN_* says at which
# prefix length; the rest of the entry is the trie root for what is not in the hash)
ROOT_HOSTS = 1 << 31
HOST_LEN_SHIFT = 21  # bits 21..27 hold the hashed prefix length - 1 (1..128, mapped space)
HOST_LEN_MASK = 0x7F << HOST_LEN_SHIFT
# exact-prefix hash: (ifindex, generation, address masked to the root's length) -> list id;
# both generations, no prealloc (memory per entry actually held)
HOSTS_MAX_ENTRIES = 2 * 1_048_576
# The same exact prefixes, in cuckoo tables of array buckets the program probes itself (two
# candidate buckets of HOST_SLOTS slots each, a few inlined array reads) where the kernel hash
# costs a jhash and a bucket walk (~30 ns more). host_regions[root index] names the buckets of
# one (generation, space, ifindex); an (ifindex, space) that does not fit, or whose placement
# fails, stays in the hash (its region has no buckets). IPv4 buckets hold the address's last
# four bytes, IPv6 buckets all sixteen. engine/kernel/cuckoo.py places them, with the hash below.
HOST_SLOTS = 4
HOST4_BUCKETS_PER_GEN = 327_680  # 1,310,720 slots: 1,000,000 hosts at 76% load; 10 MiB
HOST6_BUCKETS_PER_GEN = 65_536  # 262,144 slots; 5 MiB
HOST_HASH_C1 = 0x9E3779B97F4A7C15  # fold: f = (hi * C1) ^ lo ^ seed, over u64 words in memory order
HOST_HASH_C2 = 0xC2B2AE3D27D4EB4F  # bucket 1: ((f * C2) >> 32) * buckets >> 32
HOST_HASH_C3 = 0x165667B19E3779F9  # bucket 2: ((f * C3) >> 32) * buckets >> 32
NODE_INDEX_MASK = NODE_FLAG - 1
V4_SPACE, V6_SPACE = 0, 1  # the two source tries of an interface: IPv4 (mapped) and IPv6

# Protocol classes of the segment trie: the IP protocol number for the five the CRD names,
# OTHER_CLASS for everything else (only protocol-less rules match those). A class's index in
# ALL_CLASSES is its slot in a list_roots row (times two, plus one for non-first fragments).
PROTO_CLASSES: tuple[int, ...] = (6, 17, 132, 1, 58)  # TCP, UDP, SCTP, ICMP, ICMPv6
OTHER_CLASS = 255
ALL_CLASSES: tuple[int, ...] = (*PROTO_CLASSES, OTHER_CLASS)
SEG_CLASS_INDEX: dict[int, int] = {cls: i for i, cls in enumerate(ALL_CLASSES)}
_CLASS_NAMES = {6: "TCP", 17: "UDP", 132: "SCTP", 1: "ICMP", 58: "ICMPV6", OTHER_CLASS: "OTHER"}

SRC_KEY_FIXED_BITS = 64  # gen + pad + ifindex precede the address in the LPM key
SEG_KEY_FIXED_BITS = 48  # list id + proto class + nonfirst flag precede the value
GEN_BIT = 1 << 31  # list ids of generation 1 carry this bit


class SrcKey(ct.Structure):
    """LPM key: prefixlen counts from gen; the address is IPv6 or IPv4-mapped IPv6."""

    _fields_ = [
        ("prefixlen", ct.c_uint32),
        ("gen", ct.c_uint8),
        ("pad", ct.c_uint8 * 3),
        ("ifindex", ct.c_uint32),
        ("addr", ct.c_uint8 * 16),
    ]


class HostKey(ct.Structure):
    """hosts key: tag = ifindex << 1 | generation; the address (IPv6, or IPv4-mapped) masked
    to the length its (ifindex, space) root names."""

    _fields_ = [("tag", ct.c_uint32), ("addr", ct.c_uint8 * 16)]


class HostRegion(ct.Structure):
    """host_regions value: the buckets (absolute index into host4 or host6, by the root's
    space) of one (generation, space, ifindex); buckets == 0: its hosts are in the hash."""

    _fields_ = [
        ("mask_hi", ct.c_uint64),
        ("mask_lo", ct.c_uint64),
        ("base", ct.c_uint32),
        ("buckets", ct.c_uint32),
        ("seed", ct.c_uint32),
        ("pad", ct.c_uint32),
    ]


class Host4Bucket(ct.Structure):
    """host4 value: four IPv4 hosts (the masked address's last four bytes, as the program reads
    them) and their list ids; list id 0 marks a free slot."""

    _fields_ = [("addr", ct.c_uint32 * HOST_SLOTS), ("list_id", ct.c_uint32 * HOST_SLOTS)]


class Host6Bucket(ct.Structure):
    """host6 value: four IPv6 prefixes (the masked address as two u64 words in memory order)
    and their list ids; list id 0 marks a free slot."""

    _fields_ = [
        ("hi", ct.c_uint64 * HOST_SLOTS),
        ("lo", ct.c_uint64 * HOST_SLOTS),
        ("list_id", ct.c_uint32 * HOST_SLOTS),
    ]


class SegKey(ct.Structure):
    """LPM key: the 16-bit value (port, or ICMP type<<8|code) is big-endian so prefixes work."""

    _fields_ = [
        ("prefixlen", ct.c_uint32),
        ("list_id", ct.c_uint32),
        ("proto", ct.c_uint8),
        ("nonfirst", ct.c_uint8),
        ("value_be", ct.c_uint16),
    ]


class Node(ct.Structure):
    _fields_ = [("e", ct.c_uint32 * NODE_ENTRIES)]


class NodeImage(ct.Structure):
    """trie_nodes' one element: node i of the whole array at byte i * sizeof(Node)."""

    _fields_ = [("e", ct.c_uint32 * (NODE_ENTRIES * NODES_TOTAL))]


class ListRoots(ct.Structure):
    _fields_ = [("root", ct.c_uint32 * SEG_ROOTS)]


class RootImage(ct.Structure):
    """table_roots' one element: every root, what the program finds from a root without a trie
    (host regions and their cuckoo buckets), and the fail-safe ports. A source root and a
    port's protocol mask are each a u32 in the low half of a u64 word, as in the older
    per-entry arrays (whose elements are 8-byte aligned), so one mapped word view serves
    both; the buckets lie as they did in host4 and host6."""

    _fields_ = [
        ("src", ct.c_uint64 * SRC_ROOTS_ENTRIES),  # [generation][space][ifindex]
        ("lists", ListRoots * LIST_ROOTS_ENTRIES),  # [generation][list id]
        ("regions", HostRegion * SRC_ROOTS_ENTRIES),  # as src
        ("failsafe", ct.c_uint64 * FAILSAFE_MAX_ENTRIES),  # destination port -> protocol bits
        ("host4", Host4Bucket * (2 * HOST4_BUCKETS_PER_GEN)),  # absolute bucket index
        ("host6", Host6Bucket * (2 * HOST6_BUCKETS_PER_GEN)),
    ]


class SegVal(ct.Structure):
    _fields_ = [("rule_id", ct.c_uint32), ("action", ct.c_uint32)]


# failsafe map: u32 destination port -> u32 bitmask of the protocols fail-safe on that port.
FAILSAFE_PROTO_BITS = {6: 1 << 0, 17: 1 << 1, 132: 1 << 2}  # TCP, UDP, SCTP


class Counter(ct.Structure):
    _fields_ = [("packets", ct.c_uint64), ("bytes", ct.c_uint64)]


class Config(ct.Structure):
    _fields_ = [
        ("active_gen", ct.c_uint32),
        ("mode", ct.c_uint32),  # Mode
        ("events_per_sec", ct.c_uint32),  # per CPU; 0 disables events
        # flows: 1 in N packets sampled, 0 off (this slot once held a global trace flag;
        # traced packets now carry TraceMeta)
        ("flow_sample", ct.c_uint32),
        ("generation", ct.c_uint64),  # rule-set generation number, for display
    ]


FLOWS_ENTRIES = 65536  # LRU: the least recently seen flow makes room
FLOW_FLAG_NONFIRST = 1
DEFAULT_FLOW_SAMPLE = 32  # 1 in 32 packets (bench datapath measures its cost); config flowSample
MAX_FLOW_SAMPLE = 65536  # beyond it a flow of a few packets a second would show no samples


class FlowRecKey(ct.Structure):
    """flows map key: what the rules can tell apart about a packet."""

    _fields_ = [
        ("ifindex", ct.c_uint32),
        ("l4proto", ct.c_uint8),
        ("flags", ct.c_uint8),  # FLOW_FLAG_*
        ("value", ct.c_uint16),  # host order: dport, or ICMP type<<8|code; 0 when absent
        ("addr", ct.c_uint8 * 16),  # IPv6, or IPv4-mapped IPv6
    ]


class FlowRecVal(ct.Structure):
    """flows map value: sampled counts (multiply by N) and the latest verdict."""

    _fields_ = [
        ("packets", ct.c_uint64),
        ("bytes", ct.c_uint64),
        ("first_ns", ct.c_uint64),  # bpf_ktime_get_ns (monotonic)
        ("last_ns", ct.c_uint64),
        ("rule_id", ct.c_uint32),
        ("reason", ct.c_uint8),  # Reason
        ("action", ct.c_uint8),  # Action of the deciding rule, 0 without one
        ("pad", ct.c_uint16),
    ]


class RateLimit(ct.Structure):
    _fields_ = [
        ("window_start_ns", ct.c_uint64),
        ("count", ct.c_uint64),
        ("last_jiffies", ct.c_uint64),
    ]


class LastVerdict(ct.Structure):
    """What a trace answers: the program's reason, deciding rule and XDP action (TraceMeta's
    answer without the magic)."""

    _fields_ = [
        ("reason", ct.c_uint32),
        ("rule_id", ct.c_uint32),
        ("xdp_action", ct.c_uint32),
        ("pad", ct.c_uint32),
    ]


class TraceMeta(ct.Structure):
    """XDP metadata in front of a traced frame (BPF_PROG_TEST_RUN): with magic TRACE_MAGIC the
    program counts nothing, emits no event, and writes its verdict back here (the kernel copies
    the metadata out with the frame)."""

    _fields_ = [
        ("magic", ct.c_uint32),
        ("reason", ct.c_uint32),  # Reason
        ("rule_id", ct.c_uint32),
        ("xdp_action", ct.c_uint32),
    ]


TRACE_MAGIC = 0x74776669  # "ifwt" in memory order
TRACE_UNANSWERED = 0xFFFFFFFF  # xdp_action sent in; a program that traces overwrites it


class DropEventRecord(ct.Structure):
    _fields_ = [
        ("ts_ns", ct.c_uint64),  # bpf_ktime_get_ns (monotonic)
        ("ifindex", ct.c_uint32),
        ("rule_id", ct.c_uint32),
        ("verdict", ct.c_uint8),  # Verdict
        ("family", ct.c_uint8),  # 4 or 6
        ("l4proto", ct.c_uint8),
        ("flags", ct.c_uint8),  # EVENT_FLAG_*
        ("vlan", ct.c_uint16),  # outer VLAN id, 0 when untagged
        ("sport", ct.c_uint16),  # host order
        ("dport", ct.c_uint16),  # host order
        ("icmp_type", ct.c_uint8),
        ("icmp_code", ct.c_uint8),
        ("pkt_len", ct.c_uint32),
        ("src", ct.c_uint8 * 16),
        ("dst", ct.c_uint8 * 16),
    ]


EVENT_FLAG_NONFIRST_FRAGMENT = 1

# Replies to the node's own connections (opt-in): tc egress records the reply each outbound
# flow expects, keyed as the reply will arrive; XDP looks it up only where a rule denies.
REPLIES_MAX_ENTRIES = 65536  # LRU: the least recently refreshed flow goes first
# IANA's values; the C side takes the kernel's own names (ICMP_ECHO, ICMPV6_ECHO_REPLY...)
ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY = 128, 129


class ReplyKey(ct.Structure):
    """A reply as it will arrive: remote is its source, local its destination (IPv6 or
    IPv4-mapped); TCP/UDP ports in host order; ICMP echo: remote_port is the echo id."""

    _fields_ = [
        ("ifindex", ct.c_uint32),
        ("family", ct.c_uint8),
        ("l4proto", ct.c_uint8),
        ("remote_port", ct.c_uint16),
        ("local_port", ct.c_uint16),
        ("pad", ct.c_uint16),
        ("remote", ct.c_uint8 * 16),
        ("local", ct.c_uint8 * 16),
    ]


class ReplyVal(ct.Structure):
    _fields_ = [("seen_ns", ct.c_uint64)]  # bpf_ktime_get_ns of the last outbound packet


class ReplyConfig(ct.Structure):
    _fields_ = [
        ("enabled", ct.c_uint32),
        ("pad", ct.c_uint32),
        ("tcp_ns", ct.c_uint64),  # how long after the last outbound packet a reply passes
        ("udp_ns", ct.c_uint64),
        ("icmp_ns", ct.c_uint64),
    ]


class Action(enum.IntEnum):
    """Segment value action; also the verdict byte of an event."""

    ALLOW = 1
    DENY = 2
    WOULD_DENY = 3  # audit mode


class Mode(enum.IntEnum):
    ENFORCE = 0
    AUDIT = 1


class Reason(enum.IntEnum):
    """LastVerdict.reason: why the program decided as it did."""

    NONE = 0
    FAILSAFE = 1
    RULE = 2
    NO_MATCH = 3
    UNPARSED = 4
    REPLY = 5  # a Deny matched, but the packet answers a flow the node opened


class NodeCounter(enum.IntEnum):
    """Index into node_stats (per-CPU {packets, bytes})."""

    ALLOW = 0  # allowed by a rule
    DENY = 1  # dropped by a rule
    WOULD_DENY = 2  # audit mode: a Deny matched, passed
    FAILSAFE = 3
    NO_MATCH = 4
    UNPARSED = 5
    EVENTS_SENT = 6
    EVENTS_SUPPRESSED = 7  # over the per-CPU rate limit
    EVENTS_LOST = 8  # ring buffer full
    REPLY_ALLOWED = 9  # a Deny matched a reply to the node's own flow: passed
    REPLY_RECORDED = 10  # outbound flows recorded (evicted = recorded - entries held)
    # the program is attached but the tables have nothing for this ifindex (it appeared, or
    # came back, after the last compile): passed like no match, and counted apart
    UNCONFIGURED = 11


NODE_COUNTERS = 16


def c_defines() -> dict[str, int]:
    """Every constant the C program takes from here, by its C name (the loader passes each as
    -D NAME=value; the enums as ACTION_*, MODE_*, REASON_*, NC_*; the class slots as
    CLASS_*; the fail-safe protocol bits as FAILSAFE_*)."""
    defines = {
        "SRC_MAX_ENTRIES": SRC_MAX_ENTRIES,
        "SEG_MAX_ENTRIES": SEG_MAX_ENTRIES,
        "FAILSAFE_MAX_ENTRIES": FAILSAFE_MAX_ENTRIES,
        "RULE_STATS_ENTRIES": RULE_STATS_ENTRIES,
        "NODE_COUNTERS": NODE_COUNTERS,
        "EVENTS_RINGBUF_PAGES": EVENTS_RINGBUF_PAGES,
        "NODE_ENTRIES": NODE_ENTRIES,
        "NODES_PER_GEN": NODES_PER_GEN,
        "NODES_TOTAL": NODES_TOTAL,
        "ROOT_IFINDEXES": ROOT_IFINDEXES,
        "SRC_ROOTS_ENTRIES": SRC_ROOTS_ENTRIES,
        "LISTS_PER_GEN": LISTS_PER_GEN,
        "SEG_ROOTS": SEG_ROOTS,
        "LIST_ROOTS_ENTRIES": LIST_ROOTS_ENTRIES,
        "ROOTS_LISTS_OFF": RootImage.lists.offset,
        "ROOTS_REGIONS_OFF": RootImage.regions.offset,
        "ROOTS_FAILSAFE_OFF": RootImage.failsafe.offset,
        "ROOTS_HOST4_OFF": RootImage.host4.offset,
        "ROOTS_HOST6_OFF": RootImage.host6.offset,
        "NODE_FLAG": NODE_FLAG,
        "ROOT_TRIE": ROOT_TRIE,
        "ROOT_EMPTY": ROOT_EMPTY,
        "ROOT_HOSTS": ROOT_HOSTS,
        "HOST_LEN_SHIFT": HOST_LEN_SHIFT,
        "HOST_LEN_MASK": HOST_LEN_MASK,
        "HOSTS_MAX_ENTRIES": HOSTS_MAX_ENTRIES,
        "HOST_SLOTS": HOST_SLOTS,
        "HOST4_BUCKETS_PER_GEN": HOST4_BUCKETS_PER_GEN,
        "HOST6_BUCKETS_PER_GEN": HOST6_BUCKETS_PER_GEN,
        "HOST_HASH_C1": HOST_HASH_C1,
        "HOST_HASH_C2": HOST_HASH_C2,
        "HOST_HASH_C3": HOST_HASH_C3,
        "NODE_INDEX_MASK": NODE_INDEX_MASK,
        "GEN_BIT": GEN_BIT,
        "SRC_KEY_FIXED_BITS": SRC_KEY_FIXED_BITS,
        "SEG_KEY_FIXED_BITS": SEG_KEY_FIXED_BITS,
        "V4_SPACE": V4_SPACE,
        "V6_SPACE": V6_SPACE,
        "PROTO_OTHER": OTHER_CLASS,
        "TRACE_MAGIC": TRACE_MAGIC,
        "EVENT_FLAG_NONFIRST_FRAGMENT": EVENT_FLAG_NONFIRST_FRAGMENT,
        "FLOWS_ENTRIES": FLOWS_ENTRIES,
        "FLOW_FLAG_NONFIRST": FLOW_FLAG_NONFIRST,
        "REPLIES_MAX_ENTRIES": REPLIES_MAX_ENTRIES,
    }
    defines |= {f"CLASS_{_CLASS_NAMES[c]}": i for c, i in SEG_CLASS_INDEX.items()}
    defines |= {f"FAILSAFE_{_CLASS_NAMES[p]}": bit for p, bit in FAILSAFE_PROTO_BITS.items()}
    for prefix, values in (
        ("ACTION", Action),
        ("MODE", Mode),
        ("REASON", Reason),
        ("NC", NodeCounter),
    ):
        defines |= {f"{prefix}_{v.name}": int(v) for v in values}
    return defines
