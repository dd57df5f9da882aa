"""What the report compares, from the groups' setups.

An *lr series* is two or more groups whose setups differ only in the keys that set the lr (`LR_KEYS`). A
*comparison* pairs a group, or an lr series, with BatchNorm (`model.norm` bn or bn_scratch) and one without
(`model.norm=none`) of the same model family (`model._target_`) when each is the other's nearest: no other
candidate differs from it in fewer config keys. It is a *BN comparison* when only normalisation keys
(NORM_KEYS) differ; otherwise the report names every key that differs and does not call it one. A *one-factor
comparison* is any two groups whose setups differ in exactly one key other than those that set the lr
(learning rates are the lr series'), or only in the keys one study arm sets (`arm/<study>=b2` vs `=b128`,
overrides otherwise equal).
"""

import json
import zlib
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from cnnstudy.record import RUNTIME_KEYS
from cnnstudy.report.edge import RNG_SEED, Edge, estimate_edge
from cnnstudy.report.groups import Group, differing_keys, label, override_key
from cnnstudy.report.jobs import Job
from cnnstudy.report.stats import Summary, Welch, summarise, welch

# The keys that only configure normalisation: which kind, where it sits, whether the FC head has it too, and
# the settings of the other kinds (gn's groups, noisy_bn's noise), which do nothing under bn or none.
NORM_KEYS = ("model.norm", "model.head_norm", "model.norm_placement", "model.norm_groups")
NORM_KEYS += ("model.noise_mean_std", "model.noise_scale_std")
# The keys that set the lr: an lr series varies them and nothing else (norm_batch_size's lr follows the batch
# size from lr_at_batch_128, so tuning it moves both)
LR_KEYS = ("optim.lr", "lr_at_batch_128")
# BatchNorm: torch's and the from-scratch one. GroupNorm, LayerNorm and noisy BN are other questions.
BN_NORMS = ("bn", "bn_scratch")


def trains(job: Job, threshold: float) -> bool:
    """Completed with a last-epoch val acc >= threshold (a diverged job does not train)."""
    return job.completed and ((job.epochs or [{}])[-1].get("val_acc") or 0.0) >= threshold


@dataclass
class LrPoint:
    lr: float
    group: Group
    test_acc: Summary | None  # over the completed seeds
    diverged: int
    decided: int  # completed or diverged: failed and running jobs say nothing about the lr yet
    trained: int  # of the decided, those that still train


@dataclass
class LrSeries:
    label: str
    setup: dict | None  # the groups' setup less LR_KEYS; None without a config
    points: list[LrPoint]  # in lr order
    edge: Edge | None = None  # where the fraction of seeds that train crosses 50 %

    @property
    def largest_lr(self) -> float | None:
        """The largest lr at which every decided seed still trains."""
        return max((p.lr for p in self.points if p.decided and p.trained == p.decided), default=None)

    @property
    def best(self) -> LrPoint | None:
        """The point with the highest mean best val acc among those where every job completed: chosen on
        validation, so that the test accuracy compared at it was not used to choose it."""
        complete = [p for p in self.points if p.group.n == len(p.group.jobs) and p.group.stats.get("best_val_acc")]
        return max(complete, key=lambda p: p.group.stats["best_val_acc"].mean, default=None)


def lr_point(group: Group, threshold: float) -> LrPoint:
    decided = [j for j in group.jobs if j.status in ("completed", "diverged")]
    test_accs = [a for j in group.completed if (a := j.metrics.get("test_acc")) is not None]
    diverged = sum(j.status == "diverged" for j in group.jobs)
    trained = sum(trains(j, threshold) for j in decided)
    return LrPoint(group.lr, group, summarise(test_accs), diverged, len(decided), trained)


def without_lr(group: Group) -> dict | tuple:
    """The group's setup less the keys that set its lr; without a config, its overrides less those."""
    if group.setup is None:
        return tuple(o for o in group.overrides if override_key(o) not in LR_KEYS)
    return {key: value for key, value in group.setup.items() if key not in LR_KEYS}


def series_label(members: list[Group], common: set[str]) -> str:
    """The groups' labels as one, values in lr order (arm/cifar10_cnn=lr_too_low|relu|lr_too_high)."""
    values = defaultdict(list)
    for group in members:
        for override in group.overrides:
            key, _, value = override.partition("=")
            if override_key(override) not in LR_KEYS and value not in values[key]:
                values[key].append(value)
    common = {o for o in common if override_key(o) not in LR_KEYS}
    return label(tuple(f"{key}={'|'.join(v)}" for key, v in values.items()), common)


def lr_series(groups: list[Group], common: set[str], threshold: float) -> list[LrSeries]:
    """The series with two or more learning rates (an arm run at one lr says nothing about the range)."""
    by_setup = defaultdict(list)
    for group in groups:
        if group.lr is not None:
            by_setup[json.dumps(without_lr(group), sort_keys=True)].append(group)
    series = []
    for members in (sorted(m, key=lambda g: g.lr) for m in by_setup.values() if len(m) > 1):
        setup = without_lr(members[0])
        points = [lr_point(g, threshold) for g in members]
        name = series_label(members, common)
        # a generator per series, seeded by its label: its interval does not depend on the other series
        rng = np.random.default_rng([RNG_SEED, zlib.crc32(name.encode())])
        edge = estimate_edge(*zip(*((p.lr, p.trained, p.decided) for p in points), strict=True), rng)
        series.append(LrSeries(name, setup if isinstance(setup, dict) else None, points, edge))
    return series


@dataclass
class Comparison:
    with_bn: Group | LrSeries
    without_bn: Group | LrSeries
    keys: list[str]  # every config key whose value differs between the two

    @property
    def bn(self) -> bool:
        """Only normalisation differs: a BN comparison."""
        return set(self.keys) <= set(NORM_KEYS)


def test_accs(group: Group) -> list[float]:
    return group.stats["test_acc"].values if group.stats["test_acc"] else []


@dataclass
class GroupComparison(Comparison):
    @property
    def welch(self) -> Welch:
        """Test accuracy with BN against without, over the completed seeds."""
        return welch(test_accs(self.with_bn), test_accs(self.without_bn))


@dataclass
class SeriesComparison(Comparison):
    @property
    def ratio(self) -> float | None:
        """The largest lr at which all seeds still train, BN over no BN."""
        bn, nobn = self.with_bn.largest_lr, self.without_bn.largest_lr
        return bn / nobn if bn and nobn else None

    def per_lr(self) -> list[tuple[float, Welch]]:
        """Test accuracy with BN against without at each lr both series ran."""
        nobn = {p.lr: p.group for p in self.without_bn.points}
        return [(p.lr, welch(test_accs(p.group), test_accs(nobn[p.lr]))) for p in self.with_bn.points if p.lr in nobn]

    def at_best_lrs(self) -> tuple[float, float, Welch] | None:
        """Test accuracy with BN at its best lr against without BN at its own (`LrSeries.best`)."""
        bn, nobn = self.with_bn.best, self.without_bn.best
        if bn is None or nobn is None:
            return None
        return bn.lr, nobn.lr, welch(test_accs(bn.group), test_accs(nobn.group))


def comparisons(items: list, kind: type = GroupComparison) -> list:
    """BN vs no-BN pairs of `items` (groups or lr series) of one model family, each the other's nearest."""
    norm = [(item, (item.setup or {}).get("model.norm")) for item in items]
    with_bn = [item for item, value in norm if value in BN_NORMS]
    without_bn = [item for item, value in norm if value == "none"]
    keys = {
        (a, b): differing_keys(with_bn[a].setup, without_bn[b].setup)
        for a in range(len(with_bn))
        for b in range(len(without_bn))
        if with_bn[a].setup.get("model._target_") == without_bn[b].setup.get("model._target_")
    }

    def fewest(side: int, index: int) -> int:
        return min(len(k) for pair, k in keys.items() if pair[side] == index)

    pairs = [pair for pair, k in keys.items() if len(k) == fewest(0, pair[0]) == fewest(1, pair[1])]
    return [kind(with_bn[a], without_bn[b], keys[a, b]) for a, b in pairs]


@dataclass
class FactorComparison:
    """Two groups that differ in one factor, in the report's group order: one config key, or one study arm
    together with the keys that arm sets (`moved`)."""

    first: Group
    second: Group
    key: str
    values: tuple  # the first's and the second's value (or option) of `key`
    moved: tuple[str, ...] = ()  # for an arm: the config keys that differ with it

    def welch(self, column: str) -> Welch:
        """`column` (a COLUMNS key) of the first group against the second, over their completed seeds."""
        values = [g.stats[column].values if g.stats[column] else [] for g in (self.first, self.second)]
        return welch(*values)


def one_arm(a: Group, b: Group) -> str | None:
    """The study's arm group (`arm/<study>`) whose option alone tells `a` and `b` apart: their overrides, less
    the seed, differ only in it, and so do the options Hydra composed them from."""
    if not (a.choices and b.choices):
        return None
    keys = {override_key(o) for o in set(a.overrides) ^ set(b.overrides)}
    choices = [{k: v for k, v in g.choices.items() if k not in RUNTIME_KEYS} for g in (a, b)]
    if len(keys) != 1 or differing_keys(*choices) != sorted(keys):
        return None
    return keys.pop() if next(iter(keys)).startswith("arm/") else None


def one_factor(groups: list[Group]) -> list[FactorComparison]:
    """Every pair of groups whose setups differ in exactly one key other than optim.lr, or only in the arm of
    a study whose arms are levels of one setting: every two of its arms (the other overrides equal) differ in
    the same keys, as norm_batch_size's batch sizes move the batch, its lr and its steps together. Arms that
    each change a different thing (an ablation: dropout off in one, a GAP head in another) are not one factor
    two at a time; they are compared key by key, with the baseline."""
    found, arm_pairs = [], defaultdict(list)  # (arm, the overrides both share) -> [(comparison, keys)]
    with_setup = [g for g in groups if g.setup is not None]
    for i, a in enumerate(with_setup):
        for b in with_setup[i + 1 :]:
            keys = differing_keys(a.setup, b.setup)
            if len(keys) == 1 and keys[0] not in LR_KEYS:
                found.append(FactorComparison(a, b, keys[0], (a.setup.get(keys[0], "–"), b.setup.get(keys[0], "–"))))
            if arm := one_arm(a, b):
                by_arm = FactorComparison(a, b, arm, (a.choices[arm], b.choices[arm]), tuple(keys))
                # arms that add a setting (norm_batch_size's b2_recal: a callback) are levels among themselves,
                # not of the arms without it
                kind = frozenset(a.setup) if set(a.setup) == set(b.setup) else None
                arm_pairs[arm, frozenset(a.overrides) & frozenset(b.overrides), kind].append(by_arm)
    for pairs in arm_pairs.values():
        if len({c.moved for c in pairs}) == 1:  # levels of one setting
            found += [c for c in pairs if len(c.moved) > 1]
    return found


@dataclass
class ArmLevels:
    """A study's arm whose options are levels of one setting, as lines to plot: per combination of the other
    overrides that tell groups apart (the line's label), its groups by the value of the first key the arm
    moves (the x)."""

    arm: str
    key: str
    lines: dict[str, dict[object, Group]]


def arm_levels(comparisons: list[FactorComparison]) -> ArmLevels | None:
    by_arm = [c for c in comparisons if c.moved]
    if not by_arm:
        return None
    arm, key = by_arm[0].key, by_arm[0].moved[0]
    common_keys = set.intersection(*({k.rsplit(".", 1)[0] for k in c.first.setup} for c in by_arm))
    lines = defaultdict(dict)
    for c in by_arm:
        if c.key == arm:
            for group in (c.first, c.second):
                rest = " ".join(o for o in group.label.split() if override_key(o) != arm) or "all"
                added = sorted({k.rsplit(".", 1)[0] for k in group.setup} - common_keys)
                lines[" ".join([rest, *(f"+{k}" for k in added)])][group.setup[key]] = group
    return ArmLevels(arm, key, {rest: dict(sorted(points.items())) for rest, points in lines.items()})
