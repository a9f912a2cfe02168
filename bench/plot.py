"""A small hand-made SVG line chart (no plotting library needed): ns over the floor against a count."""

from __future__ import annotations

import math
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 640, 400
LEFT, RIGHT, TOP, BOTTOM = 64, 44, 40, 64
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def cost_plot(
    path: str,
    series: dict[str, list[tuple[float, float]]],
    target: float,
    title: str = "infw: BPF_PROG_TEST_RUN cost over the XDP_PASS floor",
) -> None:
    points = [p for pts in series.values() for p in pts if p[0] > 0]
    if not points:
        return
    xmax_exp = max(1, math.ceil(math.log10(max(x for x, _ in points))))
    ymax = max(target * 1.25, max(y for _, y in points) * 1.1)
    ymin = min(0.0, min(y for _, y in points) * 1.1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + plot_w * math.log10(max(x, 1)) / xmax_exp

    def sy(y: float) -> float:
        return TOP + plot_h * (1 - (y - ymin) / (ymax - ymin))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="22" text-anchor="middle" font-size="14">{escape(title)}</text>',
    ]
    for e in range(xmax_exp + 1):  # x grid: decades
        x = sx(10**e)
        out.append(
            f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + plot_h}" stroke="#ddd"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">{10**e:,}</text>'
        )
    step = _nice_step((ymax - ymin) / 6)
    y = math.ceil(ymin / step) * step
    while y <= ymax:
        py = sy(y)
        out.append(
            f'<line x1="{LEFT}" y1="{py:.1f}" x2="{LEFT + plot_w}" y2="{py:.1f}" stroke="#ddd"/>'
        )
        out.append(f'<text x="{LEFT - 6}" y="{py + 4:.1f}" text-anchor="end">{y:g}</text>')
        y += step
    ty = sy(target)
    out.append(
        f'<line x1="{LEFT}" y1="{ty:.1f}" x2="{LEFT + plot_w}" y2="{ty:.1f}" stroke="#888" '
        f'stroke-dasharray="6,4"/>'
    )
    out.append(
        f'<text x="{LEFT + plot_w - 4}" y="{ty - 5:.1f}" text-anchor="end" fill="#555">'
        f"target +{target:g} ns</text>"
    )
    out.append(
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>'
    )
    out.append(
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 28}" text-anchor="middle">'
        "count (log scale)</text>"
    )
    out.append(
        f'<text x="16" y="{TOP + plot_h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {TOP + plot_h / 2})">ns over floor (median of 5)</text>'
    )
    for i, (name, pts) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        pts = sorted(p for p in pts if p[0] > 0)
        if not pts:
            continue
        poly = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{poly}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y in pts:
            out.append(
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="{colour}">'
                f"<title>{escape(name)}: {x:,.0f} -> {y:.1f} ns</title></circle>"
            )
        ly = HEIGHT - 10
        lx = LEFT + i * plot_w / 2
        out.append(
            f'<line x1="{lx:.1f}" y1="{ly - 4}" x2="{lx + 20:.1f}" y2="{ly - 4}" '
            f'stroke="{colour}" stroke-width="2"/>'
        )
        out.append(f'<text x="{lx + 26:.1f}" y="{ly}">{escape(name)}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def _nice_step(raw: float) -> float:
    if raw <= 0:
        return 1.0
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag
