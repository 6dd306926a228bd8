"""Result rows, the printed table and the JSON lines."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class Row:
    """One measured figure, with the raw ceiling (when there is one) and the issue's target."""

    workload: str
    variant: str
    value: float
    unit: str
    ceiling: float | None = None
    target: str = ""
    ok: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.ceiling is None or not self.ceiling:
            return None
        return self.value / self.ceiling


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def table(rows: list[Row]) -> str:
    header = ("workload", "variant", "result", "unit", "ceiling", "ours/ceil", "target", "ok")
    body = [
        (
            r.workload,
            r.variant,
            fmt(r.value),
            r.unit,
            fmt(r.ceiling),
            "-" if r.ratio is None else f"{r.ratio:.0%}",
            r.target or "-",
            {None: "", True: "yes", False: "NO"}[r.ok],
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for line in body:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)))
    return "\n".join(lines)


def markdown(rows: list[Row]) -> str:
    out = ["| workload | variant | result | unit | raw ceiling | ours/ceiling | target | ok |", "|" + "---|" * 8]
    for r in rows:
        ratio = "-" if r.ratio is None else f"{r.ratio:.0%}"
        ok = {None: "", True: "yes", False: "**no**"}[r.ok]
        out.append(
            f"| {r.workload} | {r.variant} | {fmt(r.value)} | {r.unit} | {fmt(r.ceiling)} | {ratio} | "
            f"{r.target or '-'} | {ok} |"
        )
    return "\n".join(out)


def json_lines(meta: dict[str, Any], rows: list[Row]) -> str:
    lines = [json.dumps({"kind": "meta", **meta}, sort_keys=True)]
    for r in rows:
        data = asdict(r)
        data["ratio"] = r.ratio
        lines.append(json.dumps({"kind": "result", **data}, sort_keys=True))
    return "\n".join(lines) + "\n"
