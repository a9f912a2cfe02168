"""The only code that touches bpf(), netlink and setns: ABI, loader, maps, attachments."""
