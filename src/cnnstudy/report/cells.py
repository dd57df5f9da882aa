"""How a report writes its cells: a mean ± std, a markdown table, a BN pair, a Welch test with its verdict."""

from collections.abc import Iterable

from cnnstudy.report.compare import Comparison
from cnnstudy.report.groups import shown
from cnnstudy.report.stats import Summary, Welch


def fmt(stat: Summary | None, percent: bool) -> str:
    if stat is None:
        return "–"
    scale, digits = (100, 2) if percent else (1, 4)
    std = "–" if stat.std is None else f"{stat.std * scale:.{digits}f}"
    return f"{stat.mean * scale:.{digits}f} ± {std}"


def md_table(header: list[str], rows: Iterable[list]) -> list[str]:
    def cell(value) -> str:  # an error message must not break the table
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]


def pair(c: Comparison) -> str:
    return f"`{c.with_bn.label}` vs `{c.without_bn.label}`"


def differences(c: Comparison) -> str:
    """Every key that differs, with its value with BN and without."""
    a, b = c.with_bn.setup, c.without_bn.setup
    return "; ".join(f"{key}: {shown(a.get(key, '–'))} vs {shown(b.get(key, '–'))}" for key in c.keys)


def p_value(test: Welch) -> str:
    return "–" if test.p is None else f"{test.p:.2g}"


def test_text(test: Welch, words: tuple[str, str], scale: float = 1, unit: str = "") -> str:
    """A Welch test as 'difference, p: verdict', the verdict in `words` (first higher, first lower)."""
    verdict = dict(zip(("better", "worse"), words, strict=True)).get(test.verdict, test.verdict)
    return f"{scale * test.difference:+.3g}{unit}, p = {p_value(test)}: {verdict}"
