"""Groups of seeds, from resolved configs.

A *group* is the jobs whose resolved configs are equal but for the seed, the run-time keys
(`cnnstudy.record.setup_identity`) and the folder they wrote checkpoints to. A seed counts once in a group
(the first job found with it). A job that recorded no config (a failed job may not) joins the group of the
configured jobs with its overrides, or makes its own.
A group is labelled by its overrides, less those every group shares (the style of the committed reports).
A group whose runs ran on different code or library versions, and groups of different precisions, are named
in a warning (`provenance_warnings`).
"""

import json
from collections import defaultdict
from dataclasses import dataclass, field

from cnnstudy.record import RUNTIME_KEYS, SEED_KEYS, setup_identity
from cnnstudy.report.jobs import Job
from cnnstudy.report.stats import Summary, summarise

# stats key -> (column header, is an accuracy: shown in percent)
COLUMNS = {
    "epoch1_train_loss": ("epoch-1 train loss", False),
    "epoch1_train_acc": ("epoch-1 train acc %", True),
    "last_train_loss": ("last-epoch train loss", False),
    "last_train_acc": ("last-epoch train acc %", True),
    "best_val_acc": ("best val acc %", True),
    "test_acc": ("test acc %", True),
}


def override_key(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


def group_overrides(overrides: list[str], drop: tuple[str, ...] = ("seed",)) -> tuple[str, ...]:
    """The overrides that name a group: none of hydra.* or of the run-time keys (threads, data.root, logger, ...),
    which do not change what a job computes, and none of `drop`."""
    runtime = tuple(f"{key}." for key in RUNTIME_KEYS)
    kept = [o for o in overrides if not override_key(o).startswith(("hydra.", *runtime))]
    return tuple(sorted(o for o in kept if override_key(o) not in (*drop, *RUNTIME_KEYS)))


def sort_key(overrides: tuple[str, ...]) -> list[tuple]:
    """Order groups by their overrides, numbers numerically (optim.lr=1e-3 before optim.lr=0.01)."""
    parts = []
    for override in overrides:
        key, _, value = override.partition("=")
        try:
            parts.append((key, 0, float(value), ""))
        except ValueError:
            parts.append((key, 1, 0.0, value))
    return parts


def flatten(config: dict, prefix: str = "") -> dict:
    """Dotted key -> value; an empty section (scheduler: {}) has no keys."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differing_keys(a: dict, b: dict) -> list[str]:
    """The dotted keys whose values differ between two flat setups (a key only one has counts)."""
    return sorted(k for k in a.keys() | b.keys() if a.get(k, KeyError) != b.get(k, KeyError))


def shown(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@dataclass
class Group:
    setup: dict | None  # the flat setup identity; None: no job of the group recorded a config
    overrides: tuple[str, ...]  # its first job's, less the seed
    jobs: list[Job]  # all of them, whatever their status
    label: str = ""
    stats: dict[str, Summary | None] = field(default_factory=dict)  # COLUMNS -> over the completed seeds

    @property
    def completed(self) -> list[Job]:
        return [j for j in self.jobs if j.completed]

    @property
    def n(self) -> int:
        return len(self.completed)

    @property
    def seeds(self) -> list:
        return [(j.config or {}).get("seed") for j in self.completed]

    @property
    def params(self) -> list[int]:
        return sorted({j.metrics.get("params") for j in self.completed} - {None})

    @property
    def choices(self) -> dict | None:
        """The config groups' options (Hydra's choices) its first job that recorded them was composed from."""
        return next((j.metrics["choices"] for j in self.jobs if j.metrics.get("choices")), None)

    @property
    def lr(self) -> float | None:
        lr = (self.setup or {}).get("optim.lr")
        if lr is None:  # no config: the override, if any
            lr = next((o.partition("=")[2] for o in self.overrides if override_key(o) == "optim.lr"), None)
        try:
            return float(lr)
        except (TypeError, ValueError):
            return None


def job_values(job: Job) -> dict:
    first, last = (job.epochs or [{}])[0], (job.epochs or [{}])[-1]
    return {
        "epoch1_train_loss": first.get("train_loss"),
        "epoch1_train_acc": first.get("train_acc"),
        "last_train_loss": last.get("train_loss"),
        "last_train_acc": last.get("train_acc"),
        "best_val_acc": job.metrics.get("best_val_acc"),
        "test_acc": job.metrics.get("test_acc"),
    }


def label(overrides: tuple[str, ...], common: set[str]) -> str:
    """What tells a group apart: its overrides less those every group shares."""
    return " ".join(o for o in overrides if o not in common) or " ".join(overrides) or "defaults"


def draw(job: Job) -> tuple:
    """Which draw of its setup a job is: its values of `SEED_KEYS` (None where it recorded none)."""
    flat = flatten(job.config or {})
    return tuple(flat.get(key) for key in SEED_KEYS)


def build_groups(jobs: list[Job]) -> tuple[list[Group], set[str]]:
    """The groups in override order, and the overrides every group shares. A seed counts once per group: a job
    whose setup and seed an earlier job already has (the same run archived in two studies' records) is left out."""
    groups: dict[str, Group] = {}
    identity_of = {}  # group overrides -> the identity of configured jobs with them, for jobs without a config
    for job in sorted(jobs, key=lambda j: j.config is None):  # configured jobs first
        overrides = group_overrides(job.overrides)
        if job.config is not None:
            setup = flatten(setup_identity(job.config))
            identity = json.dumps(setup, sort_keys=True)
            identity_of.setdefault(overrides, identity)
        else:
            setup, identity = None, identity_of.get(overrides) or json.dumps(overrides)
        group = groups.setdefault(identity, Group(setup, overrides, []))
        if job.config is None or draw(job) not in {draw(j) for j in group.jobs}:
            group.jobs.append(job)
    ordered = sorted(groups.values(), key=lambda g: sort_key(g.overrides))
    common = set.intersection(*(set(g.overrides) for g in ordered)) if len(ordered) > 1 else set()
    for g in ordered:
        g.label = label(g.overrides, common)
        values = [job_values(j) for j in g.completed]
        g.stats = {name: summarise([v[name] for v in values if v[name] is not None]) for name in COLUMNS}
    name_same_labels_apart(ordered)
    return ordered, common


def name_same_labels_apart(groups: list[Group]) -> None:
    """Groups with equal overrides but different configs (e.g. slices run before and after a default
    changed) get the config keys that tell them apart added to their labels."""
    by_label = defaultdict(list)
    for g in groups:
        by_label[g.label].append(g)
    for same in (s for s in by_label.values() if len(s) > 1):
        setups = [g.setup or {} for g in same]
        keys = sorted({k for s in setups[1:] for k in differing_keys(setups[0], s)})
        for g, setup in zip(same, setups, strict=True):
            g.label += " [" + " ".join(f"{k}={shown(setup.get(k, '–'))}" for k in keys) + "]"


NOT_RECORDED = "provenance not recorded"  # a record from before cnnstudy recorded what ran it
VERSION_KEYS = ("python", "torch", "lightning", "numpy")


def versions(job: Job) -> list[dict]:
    """The code and library versions of each session that trained `job` (a resumed run has several)."""
    sessions, provenance = [], job.metrics.get("provenance")
    while provenance:
        code = provenance.get("code") or {}
        commit = code.get("commit", "")[:7] + ("+dirty" if code.get("dirty") else "")
        sessions.append({"code": commit or code.get("version")} | {k: provenance.get(k) for k in VERSION_KEYS})
        provenance = provenance.get("resumed_from")
    return sessions


def mixed_versions(group: Group) -> str | None:
    """What differs between the versions its completed runs ran on, e.g. `torch 2.14.1 / 2.15.0`; None if nothing."""
    sessions = [versions(job) for job in group.completed]
    recorded = [session for job in sessions for session in job]
    if not recorded:  # nothing known to differ: an archive from before provenance was recorded
        return None
    differing = [
        f"{key} {' / '.join(sorted(values))}"
        for key in ("code", *VERSION_KEYS)
        if len(values := {str(session[key]) for session in recorded}) > 1
    ]
    if unknown := sum(not job for job in sessions):
        differing.append(f"{NOT_RECORDED} for {unknown} of {len(sessions)} runs")
    return "; ".join(differing) or None


def provenance_warnings(groups: list[Group]) -> list[str]:
    """One sentence per group whose runs ran on different code or library versions, and one if the groups
    train at different precisions (a missing precision is Lightning's default, 32-true)."""
    warnings = [f"group `{g.label}` ran on different versions: {mixed}" for g in groups if (mixed := mixed_versions(g))]
    by_precision = defaultdict(list)
    for g in (g for g in groups if g.setup):  # the identity's precision: 32-true for a record that names none
        by_precision[g.setup["trainer.precision"]].append(f"`{g.label}`")
    if len(by_precision) > 1:
        named = "; ".join(f"{precision}: {', '.join(labels)}" for precision, labels in sorted(by_precision.items()))
        warnings.append(f"the groups train at different precisions: {named}")
    return warnings
