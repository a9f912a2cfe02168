"""The footer: the keys that apply now, as many as fit, the most useful first.

Textual's Footer shows every binding and lets the tail fall off the edge at 80 columns. This one
ranks the bindings (confirm/revert while a change is pending, then add/edit/delete, filter, help,
quit...) and keeps only those that fit, in compact style on narrow terminals; `?` lists them all.
"""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

from console.tui.keys import rank

COMPACT_BELOW = 120  # columns


class KeyFooter(Footer):
    """A Footer that drops the least important keys instead of overflowing."""

    def key_width(self, binding: Binding) -> int:
        """Cells one key takes: ' k Desc ' normally, 'k Desc ' compact (margin included)."""
        text = len(self.app.get_key_display(binding)) + len(binding.description)
        return text + (2 if self.compact else 3)

    def palette_width(self) -> int:
        if not (self.show_command_palette and self.app.ENABLE_COMMAND_PALETTE):
            return 0
        binding = Binding(self.app.COMMAND_PALETTE_BINDING, "", "palette")
        return self.key_width(binding) + 2  # its border and padding

    def on_resize(self, event: events.Resize) -> None:
        compact = event.size.width < COMPACT_BELOW
        if compact != self.compact:
            self.compact = compact
        if self.is_attached and self._bindings_ready:
            self.call_after_refresh(self.recompose)

    def compose(self) -> ComposeResult:
        if not self._bindings_ready:
            return
        width = self.size.width or self.app.size.width
        active = self.screen.active_bindings
        palette_key = self.app.COMMAND_PALETTE_BINDING
        seen: set[str] = set()
        candidates: list[tuple[int, Binding, bool, str]] = []
        for index, (_, binding, enabled, tooltip) in enumerate(active.values()):
            if not binding.show or binding.action in seen or binding.key == palette_key:
                continue
            seen.add(binding.action)
            candidates.append((index, binding, enabled, tooltip))
        budget = width - self.palette_width()
        chosen: list[tuple[int, Binding, bool, str]] = []
        for item in sorted(candidates, key=lambda c: (rank(c[1].action), c[0])):
            cost = self.key_width(item[1])
            if cost <= budget:
                chosen.append(item)
                budget -= cost
        for _, binding, enabled, tooltip in sorted(chosen, key=lambda c: c[0]):
            yield FooterKey(
                binding.key,
                self.app.get_key_display(binding),
                binding.description,
                binding.action,
                disabled=not enabled,
                tooltip=tooltip,
            ).data_bind(compact=Footer.compact)
        if self.show_command_palette and self.app.ENABLE_COMMAND_PALETTE:
            try:
                _node, binding, enabled, tooltip = active[palette_key]
            except KeyError:
                return
            yield FooterKey(
                binding.key,
                self.app.get_key_display(binding),
                binding.description,
                binding.action,
                classes="-command-palette",
                disabled=not enabled,
                tooltip=binding.tooltip or binding.description,
            )
