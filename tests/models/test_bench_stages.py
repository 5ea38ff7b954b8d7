"""`python -m loadtest.bench_stages` runs the worker's stages and pipeline on the real model's text work."""

from __future__ import annotations

import argparse

from loadtest import bench_stages


def test_stage_costs_and_the_pipeline_rate_come_out_of_one_small_run() -> None:
    result = bench_stages.run(argparse.Namespace(n=96, batch=32))
    stages = result["us_per_prompt"]
    assert list(stages) == ["decode", "normalize", "cache_key", "tokenize", "cost"]
    assert all(cost > 0 for cost in stages.values()), stages
    assert result["us_per_prompt_sum"] == round(sum(stages.values()), 2)
    assert result["one_core_ceiling_prompts_per_s"] == round(1e6 / sum(stages.values()))
    assert result["pipeline_records_per_s"] > 0
    assert result["model"].startswith("embedder-minilm:")
