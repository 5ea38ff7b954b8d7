"""One synth run: generate -> reflect -> deduplicate -> balance -> split -> write.

`synthesize` plans `per_label` requests of each label for each policy, finishes the ones the work
directory `OUT.work/` does not already hold (`models.synth.runner`), assembles the rows
(`models.synth.assemble`), then writes `OUT` and `OUT.summary.json`, each atomically (a
temporary file and a rename). Running the same command again after a crash or Ctrl-C resumes;
running it after it finished only re-assembles (with the current dedup, balance, split and
`--on-disagree` settings). Delete `OUT.work/` to start over.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.policies import PolicyDefinition
from models.synth.assemble import AssembleSettings, assemble
from models.synth.generators import Generator
from models.synth.ratelimit import RequestLimiter
from models.synth.requests import plan_requests
from models.synth.runner import RequestSettings, SynthRunner
from models.synth.summary import Prices, build_summary
from models.synth.workdir import WorkDir, jsonl_text, work_dir_for, write_atomically

DEFAULT_PER_LABEL = 50


@dataclass(frozen=True, slots=True)
class SynthConfig:
    """Everything a run needs besides the policies, the generator and the output path."""

    per_label: int = DEFAULT_PER_LABEL
    requests: RequestSettings = field(default_factory=RequestSettings)
    assembly: AssembleSettings = field(default_factory=AssembleSettings)
    requests_per_minute: float | None = None
    prices: Prices = field(default_factory=Prices)


def summary_path_for(output: Path) -> Path:
    """`OUT.summary.json` next to the output file `OUT`."""
    return output.with_name(output.name + ".summary.json")


async def synthesize(
    policies: Sequence[PolicyDefinition], generator: Generator, output: Path, config: SynthConfig
) -> dict[str, Any]:
    """Run the pipeline for `policies`, write the output and the summary, return the summary.

    Raises `GeneratorFatalError` when the generator stops working; what finished is kept.
    """
    plan = plan_requests(policies, config.per_label)
    work = WorkDir(work_dir_for(output))
    try:
        limiter = RequestLimiter(config.requests_per_minute) if config.requests_per_minute else None
        stats = await SynthRunner(generator, work, config.requests, limiter).run(plan)
        rows, counts = assemble(plan, work, config.assembly)
        write_atomically(output, jsonl_text(rows))
        summary = build_summary(
            output=str(output),
            generator=generator.name,
            plan=plan,
            work=work,
            counts=counts,
            stats=stats,
            reflect=config.assembly.reflect,
            prices=config.prices,
        )
        write_atomically(summary_path_for(output), json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        return summary
    finally:
        work.close()
