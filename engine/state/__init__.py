"""Desired state on disk: node config, store, history, the commit-confirmed watchdog."""
