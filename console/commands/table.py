"""The one command table behind both the CLI (`infw COMMAND`) and the REPL (`infw> COMMAND`).

Each command is a name, its arguments (with what completes them in the REPL), examples for
`--help`, and a handler (in edit, datapath, observe, lab, help, shell) that calls the Engine
and prints through render. A new command is a handler in the module of its job and one entry
here, in the order `help` lists them.
"""

from __future__ import annotations

from console.commands import values
from console.commands.datapath import (
    cmd_agent,
    cmd_attach,
    cmd_detach,
    cmd_reload,
    cmd_replies,
    cmd_restore,
    cmd_status,
)
from console.commands.edit import (
    cmd_add,
    cmd_apply,
    cmd_confirm,
    cmd_delete,
    cmd_edit,
    cmd_export,
    cmd_history,
    cmd_mode,
    cmd_revert,
    cmd_validate,
)
from console.commands.filters import FILTER_EXAMPLE, FILTER_KEYS
from console.commands.flows import cmd_diff, cmd_flows
from console.commands.help import cmd_help
from console.commands.lab import cmd_lab
from console.commands.observe import cmd_events, cmd_metrics, cmd_rules, cmd_stats, cmd_trace
from console.commands.shell import cmd_repl
from console.commands.spec import Command, arg
from console.commands.values import ATTACH_MODES, LAB_ACTIONS, MODES, PROTOCOLS

_EDIT_ARGS = (
    arg(
        "--confirm-timeout",
        type=values.seconds,
        metavar="S",
        help="seconds until an unconfirmed change reverts (default: the config's, 60; 0: no confirm)",
    ),
    arg("--force", action="store_true", help="override a refusable guard check (never silently)"),
    arg(
        "--dry-run",
        action="store_true",
        help="apply nothing: show the rule diff and the seen flows whose verdict would change",
    ),
)
# What the impact preview looks at: diff, and every --dry-run.
_PREVIEW_ARGS = (
    arg(
        "--since",
        type=values.seconds,
        default=600.0,
        metavar="S",
        help="flows seen in the last S seconds (default 600)",
    ),
    arg(
        "--top",
        type=values.count,
        default=10,
        metavar="N",
        help="list the N busiest flows that change (default 10; totals count all)",
    ),
    arg(
        "--pcap",
        metavar="CAP",
        complete="files",
        help="use this capture (pcap/pcapng) as the traffic instead of the seen flows",
    ),
    # every dry run, not only diff: with --pcap on a node of two interfaces the preview asks
    # which one the capture came in on, and --dry-run had no way to answer
    arg(
        "--iface",
        metavar="IFACE",
        complete="interfaces",
        help="only flows arriving on IFACE (with --pcap: the interface the capture came in on)",
    ),
)
_FLOW_IFACE = arg(
    "--iface", metavar="IFACE", complete="interfaces", help="only flows arriving on IFACE"
)
_RULE_FILE = arg(
    "file", metavar="FILE", complete="yaml_files", help="IngressNodeFirewall YAML ('-': stdin)"
)
_NO_ATTACH = arg(
    "--no-attach",
    action="store_true",
    help="store only: don't attach to the interfaces the objects name (nothing new is enforced)",
)
_RULE_LINE = arg(
    "rule",
    nargs="+",
    metavar="RULE",
    complete="rule_line",
    help="ACTION [PROTO [PORTS | type T [code C]]] from CIDR[,CIDR] [on IFACE] order N [firewall NAME]",
)

COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command(
            "status",
            "node, firewall, mode, generation, interfaces, pending confirmation",
            cmd_status,
            examples=(("", "what runs here"), ("--json", "the same for scripts")),
        ),
        Command(
            "rules",
            "every rule with its id, counters, rate and last hit",
            cmd_rules,
            examples=(("", "the rule table"), ("--json", "rules as JSON (ids for edit/delete)")),
        ),
        Command(
            "add",
            "add one rule (same validation as YAML; commit-confirmed)",
            cmd_add,
            (_RULE_LINE, *_EDIT_ARGS, *_PREVIEW_ARGS),
            examples=(
                ("deny tcp 8000-8080 from 192.0.2.0/24 on eth0 order 10", "drop a port range"),
                (
                    "--dry-run deny tcp 443 from 192.0.2.0/24 on eth0 order 5",
                    "what would it drop of the traffic seen in the last 10 minutes?",
                ),
                (
                    "allow icmp type 8 from 198.51.100.0/24 on 'ens*' order 20 firewall ping",
                    "allow pings into object 'ping'",
                ),
                (
                    "--confirm-timeout 0 deny udp 53 from 203.0.113.0/24 on eth0 order 5",
                    "apply at once, no confirmation",
                ),
            ),
        ),
        Command(
            "edit",
            "replace rule ID with a new rule line",
            cmd_edit,
            (
                arg(
                    "id",
                    type=values.rule_id,
                    metavar="ID",
                    complete="rule_ids",
                    help="rule id (see 'rules')",
                ),
                _RULE_LINE,
                *_EDIT_ARGS,
                *_PREVIEW_ARGS,
            ),
            examples=(
                ("3 deny tcp 8000-9000 from 192.0.2.0/24 on eth0 order 10", "widen rule 3's ports"),
            ),
        ),
        Command(
            "delete",
            "remove rule ID",
            cmd_delete,
            (
                arg(
                    "id",
                    type=values.rule_id,
                    metavar="ID",
                    complete="rule_ids",
                    help="rule id (see 'rules')",
                ),
                *_EDIT_ARGS,
                *_PREVIEW_ARGS,
            ),
            examples=(("3", "remove rule 3"), ("--dry-run 3", "what would it let through?")),
        ),
        Command(
            "validate",
            "check a rule file against this node's interfaces and the guard; applies nothing",
            cmd_validate,
            (_RULE_FILE,),
            examples=(
                ("rules.yaml", "check before applying"),
                ("--json rules.yaml", "errors as JSON (exit 2 names each bad field)"),
            ),
        ),
        Command(
            "apply",
            "replace the rules with FILE (commit-confirmed: confirm or it reverts)",
            cmd_apply,
            (
                _RULE_FILE,
                *_EDIT_ARGS,
                *_PREVIEW_ARGS,
                _NO_ATTACH,
            ),
            examples=(
                ("rules.yaml", "apply and attach where the objects say; 'confirm' within 60 s"),
                ("rules.yaml --no-attach", "store only: nothing is enforced until attached"),
                ("--dry-run rules.yaml", "the diff and its traffic impact; applies nothing"),
                ("rules.yaml --confirm-timeout 0", "scripts: apply without a pending confirmation"),
                ("rules.yaml --confirm-timeout 300", "five minutes to check you can still log in"),
            ),
        ),
        Command(
            "diff",
            "what FILE would change: rules by id, and the seen flows whose verdict flips",
            cmd_diff,
            (
                _RULE_FILE,
                *_PREVIEW_ARGS,
            ),
            examples=(
                ("rules.yaml", "against the flows of the last 10 minutes"),
                ("rules.yaml --pcap incident.pcap --iface eth0", "against a capture"),
                ("--json rules.yaml | jq .traffic.denied_total", "for scripts"),
            ),
        ),
        Command(
            "export",
            "the rules as IngressNodeFirewall YAML (round-trips through apply)",
            cmd_export,
            (
                arg(
                    "-o",
                    "--output",
                    metavar="FILE",
                    complete="files",
                    help="write to FILE instead of stdout",
                ),
            ),
            examples=(
                ("", "print YAML"),
                ("-o backup.yaml", "save a copy"),
                ("--json -o backup.json", "a JSON v1 List (apply takes it back too)"),
            ),
        ),
        Command(
            "confirm",
            "keep the pending change (stops the revert countdown)",
            cmd_confirm,
            examples=(("", "keep what you just applied"),),
        ),
        Command(
            "revert",
            "drop the pending change, or go back one generation",
            cmd_revert,
            (arg("--force", action="store_true", help="override a refusable guard check"),),
            examples=(("", "undo the last change"),),
        ),
        Command(
            "history",
            "applied generations: when, who, what",
            cmd_history,
            (
                arg(
                    "--limit",
                    type=values.count,
                    default=20,
                    metavar="N",
                    help="show the last N (default 20)",
                ),
            ),
            examples=(("", "recent generations"), ("--limit 100 --json", "more, as JSON")),
        ),
        Command(
            "mode",
            "show or switch enforce/audit (audit drops nothing, counts WOULD DENY)",
            cmd_mode,
            (
                arg(
                    "mode",
                    nargs="?",
                    choices=MODES,
                    metavar="enforce|audit",
                    help="the mode to switch to",
                ),
            ),
            examples=(
                ("audit", "stop dropping, keep counting"),
                ("enforce", "drop again"),
                ("", "show it"),
            ),
        ),
        Command(
            "replies",
            "show or switch whether replies to the node's own connections pass a Deny",
            cmd_replies,
            (
                arg(
                    "state",
                    nargs="?",
                    choices=("on", "off"),
                    metavar="on|off",
                    help="on: the node's DNS answers, downloads... pass a catch-all Deny",
                ),
            ),
            examples=(
                ("on", "close the node with one Deny, keep what it starts itself working"),
                ("off", "replies are decided by the rules like any packet"),
                ("", "show it, the timeouts and the flow table"),
            ),
        ),
        Command(
            "attach",
            "load the firewall if needed (compiles once) and attach it to interfaces",
            cmd_attach,
            (
                arg(
                    "interfaces",
                    nargs="+",
                    metavar="IFACE",
                    complete="interfaces",
                    help="interface names or globs",
                ),
                arg(
                    "--mode",
                    choices=ATTACH_MODES,
                    default="auto",
                    help="XDP mode (default auto: native if possible)",
                ),
                arg(
                    "--force",
                    action="store_true",
                    help="replace a foreign XDP program (never silently)",
                ),
            ),
            examples=(
                ("eth0", "protect eth0"),
                ("'ens*' --mode generic", "every ens* interface, generic XDP"),
            ),
        ),
        Command(
            "detach",
            "detach from interfaces; with none named, unload the firewall",
            cmd_detach,
            (
                arg(
                    "interfaces",
                    nargs="*",
                    metavar="IFACE",
                    complete="interfaces",
                    help="names or globs",
                ),
            ),
            examples=(
                ("eth1", "stop filtering eth1"),
                ("", "detach everywhere and remove the pins"),
            ),
        ),
        Command(
            "stats",
            "node totals and per-rule counters",
            cmd_stats,
            (
                arg(
                    "--watch",
                    nargs="?",
                    const=1.0,
                    type=values.interval,
                    metavar="SECONDS",
                    help="refresh every SECONDS (default 1) until Ctrl-C",
                ),
                arg(
                    "--count",
                    type=values.count,
                    metavar="N",
                    help="with --watch: stop after N refreshes",
                ),
            ),
            examples=(
                ("", "one snapshot"),
                ("--watch", "live, every second"),
                ("--watch 5 --json", "a JSON line every 5 s"),
            ),
        ),
        Command(
            "events",
            "drop events (DENY / WOULD DENY) with rule, addresses, ports, VLAN",
            cmd_events,
            (
                arg("--follow", "-f", action="store_true", help="keep streaming until Ctrl-C"),
                arg(
                    "--filter",
                    action="append",
                    metavar="EXPR",
                    complete="filter",
                    help=f"show only matching events: {', '.join(FILTER_KEYS)} (e.g. '{FILTER_EXAMPLE}')",
                ),
                arg("--count", type=values.count, metavar="N", help="stop after N events"),
                arg(
                    "--rate",
                    type=values.count,
                    default=200,
                    metavar="N",
                    help="show at most N events per second, count the rest (default 200)",
                ),
            ),
            examples=(
                ("", "what the buffer holds now"),
                ("--follow", "stream until Ctrl-C"),
                (f"-f --filter '{FILTER_EXAMPLE}'", "only some"),
                ("-f --json | jq .src", "JSON lines for tools"),
            ),
        ),
        Command(
            "flows",
            "who is hitting the node: top flows by rate, with verdict and rule (sampled)",
            cmd_flows,
            (
                _FLOW_IFACE,
                arg(
                    "--verdict",
                    choices=("allow", "deny"),
                    metavar="allow|deny",
                    help="only flows the rules allow / deny",
                ),
                arg("--top", type=values.count, metavar="N", help="the N busiest"),
                arg(
                    "--since",
                    type=values.seconds,
                    metavar="S",
                    help="seen in the last S seconds (default 600)",
                ),
                arg(
                    "--sample",
                    type=values.sample_rate,
                    metavar="N",
                    help="from now on sample 1 in N packets (1: every packet, 0: off), until "
                    "the next load, which takes flowSample from the config",
                ),
            ),
            examples=(
                ("--top 10", "the ten busiest flows"),
                ("--sample 1", "count every packet for a while (exact counts, costs a few ns)"),
                ("--verdict deny --since 60", "what was dropped in the last minute"),
                ("--json --iface eth0", "for scripts"),
            ),
        ),
        Command(
            "trace",
            "what happens to a packet: the kernel program and the reference classifier",
            cmd_trace,
            (
                arg(
                    "--iface",
                    metavar="IFACE",
                    complete="interfaces",
                    help="arriving interface (with --pcap: default the one attached)",
                ),
                arg(
                    "--src",
                    type=values.address,
                    metavar="ADDR",
                    help="source address (needed without --pcap)",
                ),
                arg(
                    "--proto",
                    type=values.protocol,
                    metavar="PROTO",
                    complete="protocols",
                    help=f"one of {', '.join(PROTOCOLS)}",
                ),
                arg(
                    "--dport",
                    type=values.port,
                    metavar="N",
                    help="destination port (TCP, UDP, SCTP)",
                ),
                arg("--icmp-type", type=values.byte, metavar="T", help="ICMP/ICMPv6 type"),
                arg("--icmp-code", type=values.byte, metavar="C", help="ICMP/ICMPv6 code"),
                arg(
                    "--dst",
                    type=values.address,
                    metavar="ADDR",
                    help="destination address (default a documentation one)",
                ),
                arg(
                    "--vlan",
                    type=values.vlan,
                    action="append",
                    metavar="V",
                    help="802.1Q tag (twice for 802.1ad)",
                ),
                arg("--fragment", action="store_true", help="a non-first fragment (no L4 header)"),
                arg(
                    "--pcap",
                    metavar="CAP",
                    complete="files",
                    help="run every frame of a capture (pcap/pcapng) instead of one built packet",
                ),
                arg(
                    "--sport",
                    type=values.port,
                    default=40000,
                    metavar="N",
                    help="source port (default 40000; a reply is matched on it)",
                ),
                arg(
                    "--reply",
                    action="store_true",
                    help="explain it as a reply to a connection the node opened (replies on)",
                ),
            ),
            examples=(
                (
                    "--iface eth0 --src 192.0.2.7 --proto TCP --dport 8080",
                    "is 8080 open from there?",
                ),
                ("--iface eth0 --src 2001:db8::7 --proto ICMPv6 --icmp-type 128", "IPv6 ping"),
                (
                    "--iface eth0 --src 192.0.2.7 --proto UDP --dport 53 --vlan 100",
                    "a tagged frame",
                ),
                ("--pcap incident.pcap --iface eth0", "a capture: verdicts per rule, any mismatch"),
            ),
        ),
        Command(
            "metrics",
            "serve Prometheus metrics (operator names) until Ctrl-C",
            cmd_metrics,
            (
                arg(
                    "--listen",
                    type=values.listen,
                    metavar="HOST:PORT",
                    help="address to bind (default the config's, 127.0.0.1:39301)",
                ),
            ),
            examples=(
                ("", "http://127.0.0.1:39301/metrics"),
                ("--listen 0.0.0.0:39301", "reachable from the network (prints a warning)"),
            ),
        ),
        Command(
            "restore",
            "re-apply the stored rules and attachments (boot; the systemd unit runs it)",
            cmd_restore,
            (_NO_ATTACH,),
            examples=(
                ("", "bring the firewall back after a reboot, on the interfaces the objects name"),
                ("--no-attach", "only the interfaces attached before"),
            ),
        ),
        Command(
            "agent",
            "follow the interfaces: re-attach where they appear, return or are recreated "
            "(the infw-agent unit runs it)",
            cmd_agent,
            examples=(("", "keep the firewall on its interfaces with no console running"),),
        ),
        Command(
            "reload",
            "compile the current bpf/ program and swap it in atomically; rules and counters stay",
            cmd_reload,
            examples=(("", "after upgrading infw: the running firewall takes the new build"),),
        ),
        Command(
            "lab",
            "a throwaway node and clients in network namespaces, with traffic and the firewall",
            cmd_lab,
            (
                arg("action", choices=LAB_ACTIONS, metavar="up|down|status", help="what to do"),
                arg(
                    "--clients",
                    type=values.count,
                    default=2,
                    metavar="N",
                    help="client namespaces (1-3, default 2)",
                ),
                arg(
                    "--rate",
                    type=float,
                    default=20.0,
                    metavar="PPS",
                    help="traffic per client (default 20/s)",
                ),
                arg("--no-traffic", action="store_true", help="no steady traffic"),
                arg("--no-firewall", action="store_true", help="do not attach the firewall"),
            ),
            examples=(
                ("up", "build it, start traffic, attach the firewall with examples/lab.yaml"),
                ("status", "is it complete?"),
                ("down", "remove all of it"),
            ),
        ),
        Command(
            "help",
            "list the commands, or explain one",
            cmd_help,
            (
                arg(
                    "topic",
                    nargs="?",
                    metavar="COMMAND",
                    complete="commands",
                    help="a command name",
                ),
            ),
            examples=(("", "all commands"), ("trace", "one command, with examples")),
        ),
        Command(
            "repl",
            "the interactive console (also what plain 'infw' starts)",
            cmd_repl,
            examples=(("", "completion, history, live toolbar"),),
        ),
    )
}
