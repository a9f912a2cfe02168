"""infw-tui: the Textual console over engine.Engine (live rules, counters, drops and edits)."""
