"""Reading the running firewall: drop events, counters and rates, Prometheus metrics."""
