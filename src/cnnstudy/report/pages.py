"""Verdict blocks in hand-written pages, generated from archived records: `python -m cnnstudy.report.pages [--check]`.

A page (README.md, docs/results/<study>.md) marks where a study's verdicts go:

    <!-- verdicts: bn_lr_cifar -->            records folder, relative to the page
    <!-- verdicts: docs/results/lr_range claims=lr_range rows=larger_lr_adam,larger_lr_sgd -->
    ...generated...
    <!-- /verdicts -->

`claims=` names conf/claims/<name>.yaml (default: the folder's name), `rows=` keeps some of its claims (the
README's headline). Folders joined by commas (`init_sensitivity,bn_lr_cifar`) are read as one set of records,
for claims that draw on another study's runs of the same setup; a seed archived in both counts once.
`<!-- verdicts: docs/results tally -->` is a table with a row per results page in that folder: the study, its
question (the page's title) and how many of its verdicts, over all its blocks, say what.
Without --check the blocks are rewritten; with it, the command exits 1 naming every block
that differs from what the records give now. The prose around a block may interpret it; the verdicts
themselves (the words, the p-values) are only ever in a block (tests/test_claims.py checks both).
"""

import argparse
import functools
import glob
import re
import sys
from collections import Counter
from pathlib import Path

from cnnstudy.errors import UserError, fail
from cnnstudy.report.claims import CLAIMS_DIR, ClaimSet, Verdict, load_claims
from cnnstudy.report.groups import build_groups
from cnnstudy.report.jobs import find_jobs
from cnnstudy.report.verdicts import effect_text, evaluate, p_text, verdict_lines

BLOCK = re.compile(r"(<!-- verdicts: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- /verdicts -->)", re.S)
DEFAULT_PAGES = ("README.md", "docs/results/*.md")


def study_verdicts(records: list[Path], claims: Path) -> tuple[ClaimSet, list[Verdict], float]:
    """The claims of records folders and their verdicts, computed as the report computes them; once per folders and
    claims file in a process (a study's page and the README's tally read the same ones)."""
    return _study_verdicts(tuple(Path(r).resolve() for r in records), Path(claims).resolve())


@functools.cache
def _study_verdicts(records: tuple[Path, ...], claims: Path) -> tuple[ClaimSet, list[Verdict], float]:
    groups, common = build_groups([job for folder in records for job in find_jobs(folder)])
    claim_set = load_claims(claims)
    threshold = claim_set.trains_above or 0.9
    return claim_set, evaluate(claim_set, groups, common, threshold), threshold


def block_verdicts(page: Path, spec: str) -> tuple[ClaimSet, list[Verdict], float, dict]:
    """The claims a block names, their verdicts (only its `rows=` if it has them), the threshold, its options."""
    records, *options = spec.split()
    settings = dict(option.partition("=")[::2] for option in options)
    folders = [page.parent / name for name in records.split(",")]
    if missing := [str(f.relative_to(page.parent)) for f in folders if not f.is_dir()]:
        raise UserError(f"{page}: verdicts of {records}: no such folder {', '.join(missing)}")
    claims = CLAIMS_DIR / f"{settings.get('claims', folders[0].name)}.yaml"
    claim_set, verdicts, threshold = study_verdicts(folders, claims)
    if "rows" in settings:
        names = settings["rows"].split(",")
        unknown = set(names) - {v.claim.name for v in verdicts}
        if unknown:
            raise UserError(f"{page}: no claim {', '.join(sorted(unknown))} in {claim_set.path.name}")
        verdicts = [v for v in verdicts if v.claim.name in names]
    return claim_set, verdicts, threshold, settings


def block_body(page: Path, spec: str) -> str:
    records, *options = spec.split()
    if options == ["tally"]:
        return "\n".join(tally_lines(page.parent / records, records)) + "\n"
    claim_set, verdicts, threshold, settings = block_verdicts(page, spec)
    if "rows" in settings:
        return "\n".join(headline_lines(verdicts, records)) + "\n"
    return "\n".join(verdict_lines(claim_set, verdicts, threshold)) + "\n"


def tally_lines(folder: Path, link: str) -> list[str]:
    """A row per results page with verdict blocks: its study, its question (the title after ' — ') and the count
    of its verdicts by outcome: the sources' claims reproduced, contradicted, not resolved; the study's own
    questions (no side expected) resolved or not."""
    lines = [
        "| study | question | sources' claims: reproduced · contradicted · not resolved | own questions: "
        "resolved · not resolved |",
        "|---|---|---|---|",
    ]
    for page in sorted(folder.glob("*.md")):
        text = page.read_text()
        verdicts = [v for m in BLOCK.finditer(text) for v in block_verdicts(page, m["spec"])[1]]
        if not verdicts:
            continue
        study, _, question = text.splitlines()[0].removeprefix("# ").partition(" — ")
        claims = Counter(v.outcome for v in verdicts if v.claim.expect is not None)
        own = Counter(v.words.startswith("not resolved") for v in verdicts if v.claim.expect is None)
        sources = " · ".join(str(claims[k]) for k in ("reproduced", "contradicted", "not resolved"))
        lines.append(f"| [{study}]({link}/{page.name}) | {question} | {sources} | {own[False]} · {own[True]} |")
    return lines


def headline_lines(verdicts: list[Verdict], records: str) -> list[str]:
    """One line per claim, for a page that quotes a few studies' answers (the README)."""
    lines = []
    for v in verdicts:
        lines.append(
            f"- {v.claim.says} ([{Path(records).name}]({records}.md), `{v.claim.name}`): {effect_text(v)}, "
            f"n = {' vs '.join(str(k) for k in v.n)}, p {p_is(v)} (corrected {p_text(v.p_adjusted)}): "
            f"**{v.words}**" + (f" (the source's claim: {v.outcome})" if v.outcome != "–" else "")
        )
    return lines


def p_is(v: Verdict) -> str:
    text = p_text(v.p, v.p_floor)
    return text if text.startswith("≤") else f"= {text}"


def render(page: Path) -> str:
    """The page with every verdict block generated afresh."""
    text = page.read_text()
    return BLOCK.sub(lambda m: m[1] + block_body(page, m["spec"]) + m[4], text)


def pages(paths: list[str]) -> list[Path]:
    found = [Path(path) for pattern in paths for path in sorted(glob.glob(pattern))]
    return [p for p in found if p.is_file() and BLOCK.search(p.read_text())]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cnnstudy.report.pages", description=__doc__.split("\n")[0])
    parser.add_argument("pages", nargs="*", default=list(DEFAULT_PAGES), help="pages (globs) with verdict blocks")
    parser.add_argument("--check", action="store_true", help="exit 1 if a block differs from the records")
    parser.error = fail
    args = parser.parse_args(argv)
    stale = []
    try:
        for page in pages(args.pages):
            fresh = render(page)
            if fresh != page.read_text():
                stale.append(page)
                if not args.check:
                    page.write_text(fresh)
    except (OSError, UserError) as e:
        fail(str(e))
    for page in stale:
        print(f"{page}: verdicts {'differ from the records' if args.check else 'regenerated'}")
    if args.check and stale:
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
