"""Plans: a recipe's targets turned into exact, reproducible seeds.

Every dimension a recipe asks for gets its exact total: leaves (by weight, uniformly, or by
explicit per-node counts), languages, difficulty levels and task types, each by largest
remainder. The seeds fall in joint cells (leaf x language x difficulty x task type, the
dimensions the recipe controls): leaf x language is rounded so both totals hold (controlled
rounding), and so are language x difficulty and language x task type, whose counts are then
rounded over each language's leaves and cells the same way (``_Layout.joint``). Strategies
are spread evenly over the seeds. A seed (``recipe.seed``) fixes the order: same recipe, same
plan. The joint cells are the targets a job fills (``taxoforge.composition``).

A plan's cells and totals follow from the per-dimension counts alone, so a dry run or a
submission costs the same for ten seeds as for a million. The seeds themselves are laid out as
five small integers each (leaf, language, difficulty, task type, strategy) only when first read,
and each message is made when it is read: a million-seed plan holds a few tens of MB, never a
million messages.
"""

from __future__ import annotations

import difflib
import math
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np
import numpy.typing as npt

from services.taxonomy.tree import SESSION, index, planning_leaves, syllabus
from taxoforge.apportion import largest_remainder
from taxoforge.errors import PermanentError
from taxoforge.v1 import common_pb2 as pb
from taxoforge.v1 import taxonomy_pb2 as tpb

__all__ = [
    "DIFFICULTIES",
    "STRATEGIES",
    "Plan",
    "Seeds",
    "controlled_rounding",
    "even_sequence",
    "item_id",
    "plan_job",
]

# Instruction strategies a recipe may mix (design §1): GLAN homework questions from syllabi and
# key concepts, TaP prompts of a task type about a subject, CodecLM decoding of metadata.
STRATEGIES = ("glan", "tap", "codeclm")

# Difficulty levels a recipe may ask for, with what they mean to a question writer.
DIFFICULTIES: dict[str, str] = {
    "easy": "introductory: one idea, answerable by a beginner",
    "medium": "intermediate: combines two or three ideas, needs some reasoning",
    "hard": "advanced: several steps or concepts, needs real expertise",
    "expert": "expert: open-ended or research-level, several interacting ideas",
}


def item_id(index: int) -> str:
    """The id of the item planned at ``index`` (stable, sortable)."""
    return f"i{index:07d}"


def controlled_rounding(row_totals: Sequence[int], col_totals: Sequence[int]) -> list[list[int]]:
    """An integer table with exactly these row and column sums, each cell the floor or ceiling
    of its proportional share ``row * col / total`` (never rounded up when that is whole).

    The fractional parts form a table whose rows and columns sum to whole numbers, so a 0/1
    table of round-ups with those sums exists (transportation polytopes have integral corners).
    It is filled largest fraction first, and any units left are placed along augmenting paths.
    """
    total = sum(row_totals)
    if total != sum(col_totals):
        raise ValueError("row and column totals differ")
    n_rows, n_cols = len(row_totals), len(col_totals)
    if total == 0:
        return [[0] * n_cols for _ in range(n_rows)]
    exact = [[r * c / total for c in col_totals] for r in row_totals]
    table = [[math.floor(x + 1e-9) for x in row] for row in exact]
    frac = [[exact[i][j] - table[i][j] for j in range(n_cols)] for i in range(n_rows)]
    row_need = [row_totals[i] - sum(table[i]) for i in range(n_rows)]
    col_need = [col_totals[j] - sum(table[i][j] for i in range(n_rows)) for j in range(n_cols)]
    up = [[False] * n_cols for _ in range(n_rows)]
    cells = sorted(
        ((i, j) for i in range(n_rows) for j in range(n_cols) if frac[i][j] > 1e-9),
        key=lambda ij: (-frac[ij[0]][ij[1]], ij),
    )
    for i, j in cells:
        if row_need[i] > 0 and col_need[j] > 0:
            up[i][j] = True
            row_need[i] -= 1
            col_need[j] -= 1
    for j in range(n_cols):
        while col_need[j] > 0:
            if not _augment(j, up, frac, row_need):
                raise RuntimeError("no rounding meets both totals")  # unreachable, see above
            col_need[j] -= 1
    return [[table[i][j] + up[i][j] for j in range(n_cols)] for i in range(n_rows)]


def _augment(
    start: int, up: list[list[bool]], frac: list[list[float]], row_need: list[int]
) -> bool:
    """Give column ``start`` one more round-up, shifting others along an alternating path."""
    n_rows, n_cols = len(up), len(up[0])
    reached_row: dict[int, int] = {}  # row -> the column it was reached from
    reached_col: dict[int, int] = {start: -1}  # column -> the row that gave it up
    queue = [start]
    while queue:
        col = queue.pop(0)
        for row in range(n_rows):
            if row in reached_row or up[row][col] or frac[row][col] <= 1e-9:
                continue
            reached_row[row] = col
            if row_need[row] > 0:
                row_need[row] -= 1
                while True:  # walk back: round up (row, col), release the row's previous one
                    up[row][col] = True
                    if col == start:
                        return True
                    row = reached_col[col]
                    up[row][col] = False
                    col = reached_row[row]
            for other in range(n_cols):
                if up[row][other] and other not in reached_col:
                    reached_col[other] = row
                    queue.append(other)
    return False


def even_sequence(counts: Sequence[int]) -> list[int]:
    """Value indices laid out so every stretch of the sequence holds them near their shares.

    Occurrence k of value v sits at (k + 1/2) * n / counts[v]; sorting by that position spreads
    each value evenly, so any block of consecutive seeds gets a near-proportional mix.
    """
    total = sum(counts)
    slots = [((k + 0.5) * total / c, v, k) for v, c in enumerate(counts) for k in range(c) if c > 0]
    slots.sort()
    return [v for _, v, _ in slots]


def _even_positions(counts: Sequence[int]) -> npt.NDArray[np.int32]:
    """``even_sequence(counts)`` as an array, for millions of values: the same positions in
    the same float arithmetic, ordered by the same (position, value, occurrence) key."""
    total = sum(counts)
    values = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
    nth = np.concatenate([np.arange(c, dtype=np.int64) for c in counts])
    sizes = np.repeat(np.asarray(counts, dtype=np.int64), counts)
    positions = (nth + 0.5) * total / sizes
    return values[np.lexsort((nth, values, positions))]


@dataclass(frozen=True)
class _Layout:
    """What the seeds' order is made from; the order itself is computed when first needed."""

    table: list[list[int]]
    difficulties: list[int]  # per difficulty; empty: none asked
    tasks: list[int]  # per task type; empty: none
    strategies: list[int]  # per strategy; one entry: all the same
    seed: int

    def joint(self) -> list[tuple[int, int, int, int, int]]:
        """The joint cells (leaf, language, difficulty, task type; -1 for a dimension not
        asked) with their counts, each dimension's totals exact.

        The language x difficulty and language x task type tables are controlled roundings of
        their totals (as the leaf x language table is), so each language gets its exact share of
        every difficulty and task type; within a language, its difficulties are rounded over its
        leaves, and its task types over its (leaf, difficulty) cells, the same way. So every
        two-way table with the language, and the leaf x language x difficulty cells, hold the
        plan's proportions to within one seed.
        """
        n_leaves = len(self.table)
        n_langs = len(self.table[0]) if self.table else 0
        per_lang = [sum(self.table[i][j] for i in range(n_leaves)) for j in range(n_langs)]
        by_level = (
            controlled_rounding(per_lang, self.difficulties)
            if self.difficulties
            else [[n] for n in per_lang]
        )
        by_task = controlled_rounding(per_lang, self.tasks) if self.tasks else []
        out: list[tuple[int, int, int, int, int]] = []
        for j in range(n_langs):
            leaf_counts = [self.table[i][j] for i in range(n_leaves)]
            levels = controlled_rounding(leaf_counts, by_level[j])
            cells = [
                (i, d if self.difficulties else -1, n)
                for i in range(n_leaves)
                for d, n in enumerate(levels[i])
                if n
            ]
            if not self.tasks:
                out.extend((i, j, d, -1, n) for i, d, n in cells)
                continue
            tasks = controlled_rounding([n for _, _, n in cells], by_task[j])
            for (i, d, _), row in zip(cells, tasks, strict=True):
                out.extend((i, j, d, t, n) for t, n in enumerate(row) if n)
        out.sort()
        return out

    def rows(self) -> npt.NDArray[np.int32]:
        """(n, 5) rows of leaf, language, difficulty, task type and strategy indices (-1 for
        none), in plan order: the joint cells' seeds, strategies spread evenly over them,
        shuffled by the recipe's seed."""
        joint = np.asarray(self.joint(), dtype=np.int64).reshape(-1, 5)
        counts = joint[:, 4]
        leaf, lang, difficulty, task = (
            np.repeat(joint[:, k], counts).astype(np.int32) for k in range(4)
        )
        count = len(leaf)
        strategy = np.zeros(count, dtype=np.int32)
        if len(self.strategies) > 1:
            strategy = _even_positions(self.strategies)
        # random.shuffle of the rows moves them by the positions it draws; draw those alone.
        shuffled = list(range(count))
        random.Random(self.seed).shuffle(shuffled)
        order = np.asarray(shuffled, dtype=np.int64)
        del shuffled
        return np.stack([leaf, lang, difficulty, task, strategy], axis=1)[order]


class Seeds(Sequence[pb.Seed]):
    """A plan's seeds, each made when read (``seeds[i]``, a slice, iteration)."""

    def __init__(
        self,
        job_id: str,
        count: int,
        layout: _Layout,
        leaves: list[tuple[pb.TaxonomyNode, tuple[str, ...]]],
        languages: list[pb.LanguageShare],
        difficulties: list[pb.Share],
        tasks: list[tuple[pb.TaxonomyNode, float]],
        strategies: list[pb.Share],
    ) -> None:
        self._job_id = job_id
        self._count = count
        self._layout = layout
        self._leaves = leaves
        self._languages = [s.code for s in languages]
        self._difficulties = [d.name for d in difficulties]
        self._tasks = tasks
        self._strategies = [s.name for s in strategies]
        self._rows: npt.NDArray[np.int32] | None = None
        self._leaf_seeds: dict[int, pb.Seed] = {}
        self._task_seeds: dict[int, pb.Seed] = {}

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> pb.Seed: ...

    @overload
    def __getitem__(self, index: slice) -> list[pb.Seed]: ...

    def __getitem__(self, index: int | slice) -> pb.Seed | list[pb.Seed]:
        if isinstance(index, slice):
            return [self._seed(n) for n in range(*index.indices(self._count))]
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError("seed index out of range")
        return self._seed(index)

    def __iter__(self) -> Iterator[pb.Seed]:
        for n in range(self._count):
            yield self._seed(n)

    def rows(self) -> npt.NDArray[np.int32]:
        """(n, 5) leaf, language, difficulty, task type and strategy indices, in plan order."""
        if self._rows is None:
            self._rows = self._layout.rows()
        return self._rows

    def cells(self) -> tuple[list[pb.CellCount], npt.NDArray[np.int64]]:
        """The plan's joint cells (leaf x language x difficulty x task type, the dimensions
        the recipe controls) with their counts, in the order their first seed is planned,
        and each seed's cell index."""
        joint = self.rows()[:, :4].astype(np.int64)
        # One integer per cell, sized by each dimension's values (-1: not asked, hence +1).
        sizes = [len(self._leaves), len(self._languages), len(self._difficulties) + 1]
        sizes.append(len(self._tasks) + 1)
        code = ((joint[:, 0] * sizes[1] + joint[:, 1]) * sizes[2] + joint[:, 2] + 1) * sizes[3] + (
            joint[:, 3] + 1
        )
        _, first, inverse, counts = np.unique(
            code, return_index=True, return_inverse=True, return_counts=True
        )
        order = np.argsort(first, kind="stable")  # cells by their first seed
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        out = []
        for c in order.tolist():
            li, lj, di, ti = (int(x) for x in joint[first[c]])
            out.append(
                pb.CellCount(
                    node_id=self._leaves[li][0].id,
                    node_path=" > ".join(self._leaves[li][1]),
                    language=self._languages[lj],
                    difficulty=self._difficulties[di] if di >= 0 else "",
                    task_type=self._tasks[ti][0].id if ti >= 0 else "",
                    planned=int(counts[c]),
                )
            )
        return out, rank[inverse.reshape(-1)].astype(np.int64)

    def replacements(
        self, cell_seeds: npt.NDArray[np.int64], asks: Sequence[int], start: int
    ) -> Iterator[pb.Seed]:
        """New seeds for cells: ``asks[c]`` for cell ``c``, numbered from ``start`` on.

        A replacement takes the dimensions of its cell's seeds in turn (so a cell's mix of
        strategies holds) but a new index and item id, so it is a new seed (new sampling,
        new concepts), not a retry of a failed one.
        """
        members: dict[int, npt.NDArray[np.int64]] = {}
        wanted = {c for c, n in enumerate(asks) if n}
        if wanted:
            order = np.argsort(cell_seeds, kind="stable")
            bounds = np.searchsorted(cell_seeds[order], np.arange(len(asks) + 1))
            members = {c: order[bounds[c] : bounds[c + 1]] for c in wanted}
        n = start
        for c, ask in enumerate(asks):
            for k in range(ask):
                proto = members[c]
                seed = self._seed(int(proto[k % len(proto)]))
                seed.item_id = item_id(n)
                seed.index = n
                n += 1
                yield seed

    def _seed(self, n: int) -> pb.Seed:
        li, lj, di, ti, si = (int(x) for x in self.rows()[n])
        seed = pb.Seed()
        seed.CopyFrom(self._leaf_seed(li))
        if ti >= 0:
            seed.MergeFrom(self._task_seed(ti))
        seed.job_id = self._job_id
        seed.item_id = item_id(n)
        seed.index = n
        seed.language = self._languages[lj]
        seed.difficulty = self._difficulties[di] if di >= 0 else ""
        seed.strategy = self._strategies[si]
        return seed

    def _leaf_seed(self, li: int) -> pb.Seed:
        """What every seed of leaf ``li`` shares (its syllabus is built once, not per seed)."""
        if li not in self._leaf_seeds:
            leaf, path = self._leaves[li]
            part = pb.Seed(
                node_id=leaf.id,
                node_path=" > ".join(path),
                node_title=leaf.title,
                node_description=leaf.description,
                syllabus=syllabus(leaf),
            )
            for attr, attr_value in leaf.attributes.items():
                part.node_attributes[attr].CopyFrom(attr_value)
            self._leaf_seeds[li] = part
        return self._leaf_seeds[li]

    def _task_seed(self, ti: int) -> pb.Seed:
        if ti not in self._task_seeds:
            task = self._tasks[ti][0]
            part = pb.Seed(
                task_type=task.id, task_title=task.title, task_description=task.description
            )
            for attr, attr_value in task.attributes.items():
                part.task_attributes[attr].CopyFrom(attr_value)
            self._task_seeds[ti] = part
        return self._task_seeds[ti]


class Plan:
    """Seeds for a job, the count of each (leaf, language) cell, and each dimension's totals."""

    def __init__(
        self, seeds: Seeds, cells: list[tpb.PlanCell], totals: list[tpb.PlanCount]
    ) -> None:
        self.seeds = seeds
        self.cells = cells
        self.totals = totals


def _unknown(kind: str, name: str, known: Sequence[str]) -> PermanentError:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return PermanentError(f"unknown {kind} {name!r}{hint}")


def _leaves(
    recipe: pb.Recipe, taxonomy: pb.Taxonomy
) -> list[tuple[pb.TaxonomyNode, tuple[str, ...]]]:
    nodes = index(taxonomy.root)
    if not recipe.nodes:
        return planning_leaves(taxonomy.root) if _has_children(taxonomy.root) else []
    out: list[tuple[pb.TaxonomyNode, tuple[str, ...]]] = []
    seen: set[str] = set()
    for node_id in recipe.nodes:
        if node_id not in nodes:
            raise _unknown(f"node in taxonomy {taxonomy.id!r}:", node_id, list(nodes))
        located = nodes[node_id]
        if located.node.kind == SESSION:
            raise PermanentError(f"node {node_id!r} is a syllabus session; plan on its subject")
        chain = node_id
        while chain in nodes and chain != taxonomy.root.id:
            if nodes[chain].node.status == pb.NODE_STATUS_PROPOSED:
                raise PermanentError(
                    f"node {node_id!r} is still proposed (awaiting review); accept it first"
                )
            chain = nodes[chain].parent_id
        for leaf, path in planning_leaves(located.node, located.path):
            if leaf.id not in seen:
                seen.add(leaf.id)
                out.append((leaf, path))
    return out


def _has_children(node: pb.TaxonomyNode) -> bool:
    return any(c.status == pb.NODE_STATUS_ACCEPTED for c in node.children)


def _leaf_counts(
    recipe: pb.Recipe,
    taxonomy: pb.Taxonomy,
    leaves: list[tuple[pb.TaxonomyNode, tuple[str, ...]]],
) -> list[int]:
    if recipe.node_counts:
        nodes = index(taxonomy.root)
        position = {leaf.id: i for i, (leaf, _) in enumerate(leaves)}
        counts = [0] * len(leaves)
        asked = sum(nc.count for nc in recipe.node_counts)
        if asked != recipe.count:
            raise PermanentError(
                f"node_counts sum to {asked} but count is {recipe.count}; make them equal"
            )
        for nc in recipe.node_counts:
            if nc.node_id not in nodes:
                raise _unknown(f"node in taxonomy {taxonomy.id!r}:", nc.node_id, list(nodes))
            if nc.count < 0:
                raise PermanentError(f"node_counts[{nc.node_id}] must not be negative")
            located = nodes[nc.node_id]
            under = [
                position[leaf.id]
                for leaf, _ in planning_leaves(located.node, located.path)
                if leaf.id in position
            ]
            if not under:
                raise PermanentError(
                    f"node {nc.node_id!r} has no leaf in the planned part of the taxonomy"
                )
            weights = [leaves[i][0].weight for i in under]
            for i, n in zip(under, largest_remainder(weights, nc.count), strict=True):
                counts[i] += n
        return counts
    if recipe.distribution not in ("", "weight", "uniform"):
        raise PermanentError(
            f"distribution {recipe.distribution!r} is not one of weight, uniform "
            "(or give node_counts)"
        )
    if recipe.distribution == "uniform":
        return largest_remainder([1.0] * len(leaves), recipe.count)
    return largest_remainder([leaf.weight for leaf, _ in leaves], recipe.count)


def _shares(kind: str, shares: Sequence[float], names: Sequence[str]) -> None:
    bad = [n for n, s in zip(names, shares, strict=True) if not (math.isfinite(s) and s > 0)]
    if bad:
        raise PermanentError(f"{kind} shares must be > 0; check {', '.join(bad)}")
    total = sum(shares)
    if abs(total - 1.0) > 1e-6:
        raise PermanentError(f"{kind} shares sum to {total:g}; they must sum to 1")
    dupes = [n for n, c in Counter(names).items() if c > 1]
    if dupes:
        raise PermanentError(f"{kind} {', '.join(dupes)} listed twice")


def _task_weights(
    recipe: pb.Recipe, tasks: pb.Taxonomy | None
) -> list[tuple[pb.TaxonomyNode, float]]:
    if tasks is None:
        if recipe.task_types:
            raise PermanentError("task_types need a task taxonomy (task_taxonomy, e.g. tasks)")
        return []
    if not recipe.task_types:
        leaves = planning_leaves(tasks.root)
        mass = sum(leaf.weight for leaf, _ in leaves)
        return [(leaf, leaf.weight / mass) for leaf, _ in leaves]
    _shares("task type", [t.share for t in recipe.task_types], [t.name for t in recipe.task_types])
    nodes = index(tasks.root)
    weights: dict[str, float] = {}
    by_id: dict[str, pb.TaxonomyNode] = {}
    for share in recipe.task_types:
        if share.name not in nodes:
            raise _unknown(f"task type in {tasks.id!r}:", share.name, list(nodes))
        located = nodes[share.name]
        leaves = planning_leaves(located.node, located.path)
        mass = sum(leaf.weight for leaf, _ in leaves)
        for leaf, _ in leaves:
            weights[leaf.id] = weights.get(leaf.id, 0.0) + share.share * leaf.weight / mass
            by_id[leaf.id] = leaf
    return [(by_id[i], w) for i, w in weights.items()]


def plan_job(
    recipe: pb.Recipe, taxonomy: pb.Taxonomy, job_id: str, tasks: pb.Taxonomy | None = None
) -> Plan:
    """Spread ``recipe.count`` seeds over leaves, languages, difficulties and task types.

    Raises:
        PermanentError: the recipe cannot be planned, and why (unknown names with suggestions,
            shares that do not sum to 1, a taxonomy with no leaves).
    """
    if recipe.count < 1:
        raise PermanentError("count must be at least 1")
    leaves = _leaves(recipe, taxonomy)
    if not leaves:
        raise PermanentError(f"taxonomy {taxonomy.id!r} has no leaves to plan seeds on")
    languages = list(recipe.languages) or [pb.LanguageShare(code="en", share=1.0)]
    _shares("language", [s.share for s in languages], [s.code for s in languages])
    difficulties = list(recipe.difficulties)
    if difficulties:
        _shares("difficulty", [d.share for d in difficulties], [d.name for d in difficulties])
        for d in difficulties:
            if d.name not in DIFFICULTIES:
                raise _unknown("difficulty", d.name, list(DIFFICULTIES))
    task_weights = _task_weights(recipe, tasks)
    strategies = list(recipe.strategies) or [pb.Share(name="tap", share=1.0)]
    _shares("strategy", [s.share for s in strategies], [s.name for s in strategies])
    for s in strategies:
        if s.name not in STRATEGIES:
            raise _unknown("strategy", s.name, STRATEGIES)

    # Leaf x language: exact totals both ways.
    per_leaf = _leaf_counts(recipe, taxonomy, leaves)
    per_language = largest_remainder([s.share for s in languages], recipe.count)
    table = controlled_rounding(per_leaf, per_language)
    cells = [
        tpb.PlanCell(node_id=leaf.id, language=share.code, count=table[i][j])
        for i, (leaf, _) in enumerate(leaves)
        for j, share in enumerate(languages)
        if table[i][j]
    ]
    # Then each further dimension, spread evenly within the strata of those before it.
    layout = _Layout(
        table=table,
        difficulties=largest_remainder([d.share for d in difficulties], recipe.count)
        if difficulties
        else [],
        tasks=largest_remainder([w for _, w in task_weights], recipe.count) if task_weights else [],
        strategies=largest_remainder([s.share for s in strategies], recipe.count)
        if len(strategies) > 1
        else [recipe.count],
        seed=recipe.seed,
    )
    totals = _totals(
        [
            ("node", [leaf.id for leaf, _ in leaves], [sum(row) for row in table]),
            ("language", [s.code for s in languages], per_language),
            ("difficulty", [d.name for d in difficulties], layout.difficulties),
            ("task_type", [t.id for t, _ in task_weights], layout.tasks),
            ("strategy", [s.name for s in strategies], layout.strategies),
        ]
    )
    seeds = Seeds(
        job_id, recipe.count, layout, leaves, languages, difficulties, task_weights, strategies
    )
    return Plan(seeds, cells, totals)


def _totals(dimensions: list[tuple[str, list[str], list[int]]]) -> list[tpb.PlanCount]:
    """Each dimension's values that get seeds, with their counts, by value."""
    out = []
    for dimension, names, counts in dimensions:
        merged: Counter[str] = Counter()
        for name, count in zip(names, counts, strict=True):
            merged[name] += count
        for value, count in sorted(merged.items()):
            if count:
                out.append(tpb.PlanCount(dimension=dimension, value=value, count=count))
    return out
