"""The TUI's widgets: header and banners, rules table, drop-event pane, footer, busy line, cell formatting."""
