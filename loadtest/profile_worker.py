"""Where the worker's time goes on its hot path: py-spy on a worker fed as fast as Kafka can.

    python -m loadtest.profile_worker [--n 60000] [--duration-s 20] [--hits] [--out-dir loadtest/results]

Loads a topic with `--n` distinct prompts, starts the worker with the stand-in model
(`loadtest.standin_worker`: everything but the forward pass) under `py-spy record`, and writes
the samples of every thread as collapsed stacks, a flame graph (SVG) and a table of the
functions with the most samples of their own and in them (`profile-worker*.txt`). `--hits`
sends the same prompts twice and profiles the second round: the cache-hit path. py-spy is a
development tool: `pip install py-spy`.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

from loadtest.bench_run import REPO_ROOT, Process, preloaded_run, spawn, topic_settings
from loadtest.bench_worker import make_texts, values_of
from loadtest.demo import wait_ready
from worker.admin import ensure_topics
from worker.config import Settings

#: Where a main-thread sample is, by the first of these frames found in its stack.
STAGES = (
    ("consumer: fetch a batch (KafkaSource.batches, aiokafka getmany)", "KafkaSource.batches"),
    ("consumer: commit acked offsets", "KafkaSource.commit"),
    ("aiokafka: fetcher", "Fetcher."),
    ("pipeline: decode, prepare, cache, score, verdicts", "Pipeline.process"),
    ("pipeline: deliver (encode, produce, wait)", "Pipeline.deliver"),
    ("agent: in-order acks", "InOrderAcks."),
    ("aiokafka: producer sender", "Sender._"),
    ("redis client", "redis/"),
    ("idle: waiting in select", "EpollSelector.select"),
)


def stage_table(collapsed: Path) -> str:
    """Main-thread samples by stage of the hot path, and the other threads' samples."""
    stages: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    main = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        thread = stack.split(";", 1)[0]
        threads[thread.split(": ", 1)[-1]] += count
        if "MainThread" not in thread:
            continue
        main += count
        label = next((name for name, marker in STAGES if marker in stack), "other (event loop, asyncio)")
        stages[label] += count
    total = sum(threads.values())
    lines = [f"main thread: {main} of {total} samples; by stage (% of the main thread):"]
    lines += [f"{100 * n / main:5.1f}  {label}" for label, n in stages.most_common()]
    lines += ["", "samples by thread (% of all):"]
    lines += [f"{100 * n / total:5.1f}  {name}" for name, n in threads.most_common()]
    return "\n".join(lines) + "\n\n"


def top_table(collapsed: Path, top: int) -> str:
    """Functions by samples of their own (self) and samples in them (total), from collapsed stacks."""
    own: Counter[str] = Counter()
    inside: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inside[frame] += count
    lines = [f"{total} samples\n", "self%  total%  function"]
    for frame, count in own.most_common(top):
        lines.append(f"{100 * count / total:5.1f}  {100 * inside[frame] / total:6.1f}  {frame}")
    lines += ["", "total% (top by samples inside)"]
    for frame, count in inside.most_common(top):
        lines.append(f"{100 * count / total:5.1f}  {frame}")
    return "\n".join(lines) + "\n"


class Profiled:
    """Starts the stand-in worker, and py-spy on it once it is ready: `fmt` into `out`."""

    def __init__(self, settings: Settings, out: Path, fmt: str, duration_s: float) -> None:
        self.settings = settings
        self.command = [shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"), "record"]
        self.command += ["--threads", "--nonblocking", "-r", "200", "-d", str(int(duration_s))]
        self.command += ["-f", fmt, "-o", str(out), "--pid"]
        self.py_spy: subprocess.Popen[bytes] | None = None

    def __call__(self) -> subprocess.Popen[bytes]:
        worker = spawn(Process.STANDIN, self.settings, REPO_ROOT / ".local" / "profile-worker.log")
        wait_ready(self.settings, worker, 120)
        self.py_spy = subprocess.Popen([*self.command, str(worker.pid)], stdout=subprocess.DEVNULL)  # noqa: S603
        return worker


def run_round(settings: Settings, values: dict[str, bytes], out: Path, fmt: str, duration_s: float) -> None:
    asyncio.run(ensure_topics(settings.kafka))
    profiled = Profiled(settings, out, fmt, duration_s)
    figures = asyncio.run(preloaded_run(settings, values, profiled))
    if profiled.py_spy is not None:
        profiled.py_spy.wait(120)
    print(f"{fmt}: {figures.verdicts_per_s:,.0f} verdicts/s while sampled -> {out}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=60000, help="prompts per round [60000]")
    parser.add_argument("--duration-s", type=float, default=10.0, help="seconds sampled [10]")
    parser.add_argument("--hits", action="store_true", help="profile the cache-hit path")
    parser.add_argument("--top", type=int, default=30, help="rows of the table [30]")
    parser.add_argument("--out-dir", type=Path, default=Path("loadtest/results"), help="where to write")
    args = parser.parse_args()
    run_id = uuid.uuid4().hex[:6]
    name = "profile-worker-hits" if args.hits else "profile-worker"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    texts = make_texts(args.n, seed=3, tag=run_id)
    if args.hits:  # a first round puts every score in Redis
        warm = topic_settings(f"profile-{run_id}-warm", 8098)
        asyncio.run(ensure_topics(warm.kafka))
        log_path = REPO_ROOT / ".local" / "profile-warm.log"
        asyncio.run(
            preloaded_run(warm, values_of("w", texts), lambda: spawn(Process.STANDIN, warm, log_path))
        )
    for fmt, suffix in (("raw", ".collapsed"), ("flamegraph", ".svg")):
        round_texts = texts if args.hits else make_texts(args.n, seed=3, tag=run_id + fmt)
        settings = topic_settings(f"profile-{run_id}-{fmt}", 8098)
        run_round(
            settings, values_of(fmt, round_texts), args.out_dir / f"{name}{suffix}", fmt, args.duration_s
        )
    collapsed = args.out_dir / f"{name}.collapsed"
    table = stage_table(collapsed) + top_table(collapsed, args.top)
    (args.out_dir / f"{name}.txt").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
