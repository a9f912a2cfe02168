"""Consoles for infw: the Textual TUI (console.tui), the REPL and the CLI; all go through engine.Engine."""
