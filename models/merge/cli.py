r"""Merge GuardFormer / PolicyGuard model directories into one, searching the merge coefficients.

    guardstream merge PG_TAX PG_LEGAL PG_MEDICAL --base GUARDFORMER --out uniguard \
        --method task_arithmetic ties --search evolution --budget 30 --data-dir ../shared/data

The parents (positional) are merged; `--base` is the model they were fine-tuned from, which task
arithmetic and TIES start from (linear averaging needs none). Methods (`models.merge.methods`):
linear Σ wᵢ θᵢ (`--normalize`: weights scaled to sum to 1), task arithmetic θ_base + Σ λᵢ τᵢ,
TIES (task vectors trimmed to `--density`, sign election, disjoint mean, `--scale`).

The coefficients (one per parent, and TIES's density) are chosen by the mean validation F1 over
policies (`--policies`; by default every policy the base or a parent was trained on that has
validation pairs), each policy's pairs flagged at its threshold from the policy files.
Validation pairs come from the shared datasets (`--data-dir`, split "validation", at most
`--max-positives` positives and twice as many negatives per policy) or from a rows file
(`--rows`, JSON lines {"text", "policy", "label", "split"}). Search (`--search`): `grid` (every
coefficient from the range's low end to its high end in steps of `--grid-step`; TIES also every
`--densities` value), `evolution` (a seeded (μ+λ) evolution strategy, `--budget` evaluations per
method) or `none` (`--weights` and `--density` as given). The base and every parent are
scored on the same pairs, so the table compares the merged model with each of them.

Writes `--out`, a normal GuardFormer model directory (the worker loads it, `guardstream export`
exports it) whose config.json has a `merge` block (method, base, parents, coefficients, density,
search, validation score), and a report (`--report`, default OUT/merge.json) with every
candidate's coefficients and per-policy F1.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from models.merge.methods import BASED_METHODS, METHODS, merge
from models.merge.output import union_of_policies, write_merged_model
from models.merge.report import comparison_table, trial_record
from models.merge.search import (
    STRATEGIES,
    Candidate,
    EvolutionSettings,
    SearchResult,
    SearchSpace,
    Trial,
    evolution_search,
    fixed_search,
    grid_candidates,
    grid_search,
)
from models.merge.validation import (
    MergeObjective,
    PairScorer,
    mean_f1,
    pair_counts,
    pairs_from_data,
    pairs_from_rows,
    unscorable,
)
from models.merge.weights import MergeError, ModelWeights, Weights, check_same_architecture, load_weights
from models.policies import PolicyDefinition, PolicyError
from models.tool_main import tool_main
from models.train.finetune import choose_device
from models.train.guardformer_data import HANDWRITTEN_POLICY_FILES, TRAINING_POLICY_FILES, Pair, all_policies

log = logging.getLogger("guardstream.merge")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("parents", type=Path, nargs="+", help="trained GuardFormer / PolicyGuard directories")
    parser.add_argument("--base", type=Path, help="the model the parents were fine-tuned from")
    parser.add_argument("--out", type=Path, required=True, help="merged model directory to write")
    parser.add_argument(
        "--method",
        nargs="+",
        choices=METHODS,
        default=["task_arithmetic"],
        help="methods to search, the best candidate of all is kept [task_arithmetic]",
    )
    parser.add_argument("--search", choices=STRATEGIES, default="evolution", help="[evolution]")
    parser.add_argument(
        "--weights",
        type=float,
        nargs="+",
        help="one coefficient per parent: the merge (--search none) or the evolution's start",
    )
    parser.add_argument("--normalize", action="store_true", help="linear: scale the weights to sum to 1")
    parser.add_argument(
        "--density",
        type=float,
        default=0.2,
        help="TIES: fraction of each task vector kept (--search none, evolution start) [0.2]",
    )
    parser.add_argument(
        "--densities", type=float, nargs="+", default=[0.2, 0.5, 0.8], help="TIES grid [0.2 0.5 0.8]"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="TIES: scale of the merged task vector [1]")
    parser.add_argument(
        "--coefficient-range", type=float, nargs=2, default=[0.0, 1.0], metavar=("LOW", "HIGH"), help="[0 1]"
    )
    parser.add_argument("--grid-step", type=float, default=0.25, help="grid spacing of coefficients [0.25]")
    parser.add_argument("--budget", type=int, default=30, help="evolution: evaluations per method [30]")
    evolution = EvolutionSettings()
    parser.add_argument(
        "--population", type=int, default=evolution.population, help=f"evolution: μ [{evolution.population}]"
    )
    parser.add_argument(
        "--offspring", type=int, default=evolution.offspring, help=f"evolution: λ [{evolution.offspring}]"
    )
    parser.add_argument("--seed", type=int, default=0, help="evolution and pair sampling seed [0]")
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--data-dir", type=Path, help="the shared datasets (validation split)")
    data.add_argument("--rows", type=Path, help='JSON lines {"text", "policy", "label", "split"}')
    parser.add_argument(
        "--handwritten",
        type=Path,
        action="append",
        help="per-policy rows files, with --data-dir [the packaged ones]",
    )
    parser.add_argument("--policies", nargs="+", help="policy ids of the objective [all trained on]")
    parser.add_argument(
        "--policy-files", type=Path, action="append", help="policy definitions [starter + gip]"
    )
    parser.add_argument("--max-positives", type=int, default=40, help="validation positives per policy [40]")
    parser.add_argument("--name", default="guardformer-merged", help="model name in verdicts")
    parser.add_argument("--version", default="0.1.0", help="model version in verdicts")
    parser.add_argument("--report", type=Path, help="results JSON [OUT/merge.json]")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads, 0 = torch's default [0]")


def check_arguments(args: argparse.Namespace) -> None:
    """Combinations argparse cannot check; a `MergeError` with a one-line message."""
    based = sorted(set(args.method) & BASED_METHODS)
    if based and args.base is None:
        raise MergeError(
            f"--method {' '.join(based)} needs --base (the model the parents were fine-tuned from)"
        )
    if args.search == "none" and args.weights is None:
        raise MergeError("--search none needs --weights, one per parent")
    if args.weights is not None and len(args.weights) != len(args.parents):
        raise MergeError(f"--weights has {len(args.weights)} values for {len(args.parents)} parents")
    given = [*args.parents, *([args.base] if args.base is not None else [])]
    if args.out.resolve() in {path.resolve() for path in given}:
        raise MergeError(f"--out {args.out} is one of the models to merge: write the merge elsewhere")
    low, high = args.coefficient_range
    if low > high:
        raise MergeError(f"--coefficient-range {low} {high} is empty")
    densities = [args.density, *args.densities]
    if not all(0.0 < d <= 1.0 for d in densities):
        raise MergeError("densities must be within (0, 1]")
    if min(args.budget, args.max_positives, args.population, args.offspring) < 1 or args.grid_step <= 0:
        raise MergeError(
            "--grid-step, --budget, --population, --offspring and --max-positives must be positive"
        )


def load_models(args: argparse.Namespace) -> tuple[ModelWeights | None, list[ModelWeights]]:
    """The base (if any) and the parents, checked to share one architecture."""
    base = load_weights(args.base) if args.base is not None else None
    parents = [load_weights(path) for path in args.parents]
    check_same_architecture([m for m in [base, *parents] if m is not None])
    return base, parents


def objective_policies(
    args: argparse.Namespace, models: Sequence[ModelWeights], definitions: dict[str, PolicyDefinition]
) -> tuple[list[str], bool]:
    """(policy ids, chosen explicitly): --policies, else every policy a model was trained on."""
    if args.policies:
        unknown = [p for p in args.policies if p not in definitions]
        if unknown:
            raise MergeError(f"no definition of policy {', '.join(unknown)} in the policy files")
        return list(dict.fromkeys(args.policies)), True
    trained = [str(entry["id"]) for entry in union_of_policies(models)]
    undefined = [p for p in trained if p not in definitions]
    if undefined:
        log.warning("left out of the objective (no definition in the policy files): %s", ", ".join(undefined))
    chosen = [p for p in trained if p in definitions]
    if not chosen:
        raise MergeError("the models name no trained policy the policy files define: use --policies")
    return chosen, False


def validation_pairs(
    args: argparse.Namespace, policy_ids: list[str], explicit: bool
) -> tuple[list[Pair], list[str]]:
    """The pairs and the policies they can score; policies without pairs fail or are left out."""
    if args.rows is not None:
        if not args.rows.is_file():
            raise MergeError(f"{args.rows}: no such rows file")
        pairs = pairs_from_rows(args.rows, policy_ids, args.max_positives, args.seed)
    else:
        if not args.data_dir.is_dir():
            raise MergeError(f"{args.data_dir}: no data directory (see ../shared/data/README.md)")
        pairs = pairs_from_data(
            args.data_dir,
            args.handwritten or HANDWRITTEN_POLICY_FILES,
            policy_ids,
            args.max_positives,
            args.seed,
        )
    missing = unscorable(pairs, policy_ids)
    if missing and (explicit or len(missing) == len(policy_ids)):
        raise MergeError(f"no validation pairs with both labels for policy {', '.join(missing)}")
    if missing:
        log.warning(
            "left out of the objective (no validation positives or negatives): %s", ", ".join(missing)
        )
    kept = [p for p in policy_ids if p not in missing]
    return [p for p in pairs if p.policy in kept], kept


def builder(
    base: ModelWeights | None, parents: Sequence[ModelWeights], scale: float, normalize: bool
) -> Callable[[Candidate], Weights | None]:
    """Candidate -> merged weights (None for linear weights that sum to 0 under --normalize)."""
    tensors = [p.tensors for p in parents]

    def build(candidate: Candidate) -> Weights | None:
        if candidate.method == "linear" and normalize and math.fsum(candidate.coefficients) == 0:
            return None
        return merge(
            candidate.method,
            None if base is None else base.tensors,
            tensors,
            candidate.coefficients,
            candidate.density,
            scale,
            normalize,
        )

    return build


def search_space(args: argparse.Namespace, method: str) -> SearchSpace:
    low, high = args.coefficient_range
    densities = tuple(args.densities) if method == "ties" else ()
    return SearchSpace(method, len(args.parents), low, high, args.grid_step, densities)


class TrialLog:
    """Logs each evaluated candidate with its per-policy F1 and advances the progress bar."""

    def __init__(self, objective: MergeObjective, progress: tqdm) -> None:
        self.objective = objective
        self.progress = progress
        self.best = -math.inf

    def __call__(self, trial: Trial) -> None:
        f1 = self.objective.f1(trial.candidate)
        log.info(
            "%s: mean F1 %.4f | %s",
            trial.candidate.describe(),
            trial.score,
            " ".join(f"{policy} {value:.3f}" for policy, value in f1.items()),
        )
        self.best = max(self.best, trial.score)
        self.progress.update(1)
        self.progress.set_postfix(best=f"{self.best:.4f}")


def run_search(args: argparse.Namespace, method: str, objective: MergeObjective) -> SearchResult:
    """One method's search, with a progress bar and a log line per candidate."""
    space = search_space(args, method)
    given = None
    if args.weights is not None:
        given = Candidate(method, tuple(args.weights), args.density if method == "ties" else None)
    total = {"grid": len(grid_candidates(space)), "evolution": args.budget, "none": 1}[args.search]
    with logging_redirect_tqdm(), tqdm(total=total, desc=f"merge {method}", unit="model") as progress:
        on_trial = TrialLog(objective, progress)
        if args.search == "grid":
            return grid_search(space, objective, on_trial)
        if args.search == "evolution":
            settings = EvolutionSettings(population=args.population, offspring=args.offspring)
            return evolution_search(space, objective, args.budget, args.seed, given, settings, on_trial)
        assert given is not None  # noqa: S101 (check_arguments)
        return fixed_search(given, objective, on_trial)


def score_inputs(
    scorer: PairScorer, base: ModelWeights | None, parents: Sequence[ModelWeights]
) -> dict[str, dict[str, dict[str, float]]]:
    """Per-policy metrics of the base and each parent, keyed by their directories."""
    scored: dict[str, dict[str, dict[str, float]]] = {}
    for model in [m for m in [base, *parents] if m is not None]:
        started = time.perf_counter()
        scored[str(model.directory)] = scorer.evaluate(model.tensors)
        log.info(
            "%s: mean F1 %.4f (%.1f s)",
            model.directory,
            mean_f1(scored[str(model.directory)]),
            time.perf_counter() - started,
        )
    return scored


def merge_block(
    args: argparse.Namespace, best: Trial, policy_ids: list[str], seconds: float
) -> dict[str, Any]:
    """The `merge` entry of the merged model's config.json."""
    candidate = best.candidate
    block: dict[str, Any] = {
        "method": candidate.method,
        "base": None if args.base is None else str(args.base),
        "parents": [str(p) for p in args.parents],
        "coefficients": list(candidate.coefficients),
        "density": candidate.density,
        "scale": args.scale if candidate.method == "ties" else None,
        "normalize": bool(args.normalize) if candidate.method == "linear" else None,
        "search": args.search,
        "seed": args.seed,
        "validation_score": round(best.score, 6),
        "validation_metric": "mean F1 at the policies' thresholds",
        "validation_policies": policy_ids,
        "validation_source": str(args.rows or args.data_dir),
        "search_seconds": round(seconds, 1),
    }
    return block


def column_names(directories: Sequence[str]) -> list[str]:
    """Short table headings for model directories: their names, or the whole path when two share one."""
    names = [Path(d).name or d for d in directories]
    return [n if names.count(n) == 1 else d for n, d in zip(names, directories, strict=True)]


@dataclass(frozen=True)
class Inputs:
    """What a merge starts from: the models, the objective's policies and pairs, the scorer."""

    base: ModelWeights | None
    parents: list[ModelWeights]
    policy_ids: list[str]
    pairs: list[Pair]
    scorer: PairScorer

    @property
    def models(self) -> list[ModelWeights]:
        return [m for m in [self.base, *self.parents] if m is not None]


def prepare(args: argparse.Namespace) -> Inputs:
    """Check the arguments, load the models, draw the validation pairs, build the scorer."""
    check_arguments(args)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    base, parents = load_models(args)
    models = [m for m in [base, *parents] if m is not None]
    definitions = all_policies(args.policy_files or TRAINING_POLICY_FILES)
    policy_ids, explicit = objective_policies(args, models, definitions)
    pairs, policy_ids = validation_pairs(args, policy_ids, explicit)
    log.info("validation pairs (positives, negatives): %s", pair_counts(pairs, policy_ids))
    try:
        device = choose_device(args.device)
    except RuntimeError as exc:
        raise MergeError(str(exc)) from exc
    scorer = PairScorer(models[0], pairs, definitions, device)
    return Inputs(base, parents, policy_ids, pairs, scorer)


def search_all(args: argparse.Namespace, objective: MergeObjective) -> list[Trial]:
    """Every method's trials, numbered in the order they were evaluated."""
    found = [t for method in args.method for t in run_search(args, method, objective).trials]
    return [Trial(index, t.candidate, t.score) for index, t in enumerate(found)]


def write_outputs(
    args: argparse.Namespace, inputs: Inputs, weights: Weights, block: dict[str, Any], report: dict[str, Any]
) -> Path:
    """The merged model directory, and the report (inside it unless --report says elsewhere)."""
    method = block["method"]
    merged_from = inputs.models if method in BASED_METHODS else inputs.parents
    report_path: Path = args.report or args.out / "merge.json"
    report_text = json.dumps(report, indent=2) + "\n"
    inside = report_path.parent.resolve() == args.out.resolve()
    write_merged_model(
        args.out, weights, inputs.models[0], args.name, args.version, union_of_policies(merged_from), block,
        {report_path.name: report_text} if inside else None,
    )  # fmt: skip
    if not inside:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(report_text, encoding="utf-8")
    return report_path


def run(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    """Merge, write the model and the report, print the table; 0, or 2 with a one-line error."""
    started = time.perf_counter()
    try:
        inputs = prepare(args)
        scored_inputs = score_inputs(inputs.scorer, inputs.base, inputs.parents)
        objective = MergeObjective(
            inputs.scorer, builder(inputs.base, inputs.parents, args.scale, args.normalize)
        )
        trials = search_all(args, objective)
        best = max(trials, key=lambda t: t.score)  # max keeps the earliest among equals
        seconds = time.perf_counter() - started
        weights = objective.build(best.candidate)
        if weights is None:
            raise MergeError("no candidate gave a model (every linear weight sum was 0)")
        block = merge_block(args, best, inputs.policy_ids, seconds)
        report = {
            "command": "guardstream merge " + shlex.join(argv),
            **build_report(args, inputs, scored_inputs, objective, trials, best, seconds),
        }
        report_path = write_outputs(args, inputs, weights, block, report)
    except (MergeError, PolicyError, FileNotFoundError) as exc:
        print(f"guardstream merge: {exc}", file=sys.stderr)
        return 2
    headings = column_names(list(scored_inputs))
    columns = dict(zip(headings, scored_inputs.values(), strict=True))
    columns[f"merged ({args.out.name})"] = objective.results[best.candidate]
    print(comparison_table(inputs.policy_ids, columns))
    print(
        f"best: {best.candidate.describe()}, mean validation F1 {best.score:.4f} ({len(trials)} candidates)"
    )
    print(f"wrote {args.out} and {report_path} in {seconds:.0f} s")
    return 0


def build_report(
    args: argparse.Namespace,
    inputs: Inputs,
    scored_inputs: dict[str, dict[str, dict[str, float]]],
    objective: MergeObjective,
    trials: list[Trial],
    best: Trial,
    seconds: float,
) -> dict[str, Any]:
    """The results JSON: the setup, the inputs' and the best candidate's metrics, every trial."""
    return {
        "out": str(args.out),
        "base": None if args.base is None else str(args.base),
        "parents": [str(p) for p in args.parents],
        "methods": args.method,
        "search": args.search,
        "seed": args.seed,
        "policies": inputs.policy_ids,
        "validation_pairs": {p: list(c) for p, c in pair_counts(inputs.pairs, inputs.policy_ids).items()},
        "inputs": scored_inputs,
        "best": {
            **trial_record(best, objective.f1(best.candidate)),
            "metrics": objective.results[best.candidate],
        },
        "trials": [trial_record(t, objective.f1(t.candidate)) for t in trials],
        "seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    return tool_main("merge", __doc__, configure_parser, lambda args: run(args, arguments), arguments)


if __name__ == "__main__":
    sys.exit(main())
