"""The TUI's screens: the modal dialogs over the main view (form, trace, history, interfaces, confirmations)."""
