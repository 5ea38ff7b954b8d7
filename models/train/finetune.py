r"""Fine-tune the sentence encoder so prompts of one class cluster together (Siamese set-up).

    python -m models.train.finetune --data-dir ../shared/data --out .local/finetune/minilm-triplet
    python -m models.train.finetune --data-dir ../shared/data --out DIR --max-steps 1500 --resume

The encoder (BERT, mean pooling, L2 norm: `models.train.torch_encoder.SentenceEncoder`) is trained
with a metric-learning loss of `models.train.losses` (batch-all triplet by default) over
class-balanced P x K batches: P classes, K prompts each, so every batch holds triplets. A
prompt's class is the combination of its known policy targets (see `classes_of`). Prompts are
tokenized exactly as the served model tokenizes them (the first window of `WindowTokenizer`,
`max_length` tokens with [CLS] and [SEP]), and a batch takes prompts of similar token length from
each class, which cuts the padding a CPU would otherwise pay for.

Writes into `--out`: the encoder directory (`model.safetensors`, `config.json`, tokenizer files;
what `train_head --encoder-dir` and `bert_onnx.build_model` read), `finetune.json` (settings,
loss history, validation loss, speed, device) and `checkpoints/step-N/` every `checkpoint_every`
steps (weights, optimizer, scheduler and RNG state), from which `--resume` continues.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from models.base.contract import IdArray
from models.base.windows import WindowTokenizer, pad_windows
from models.train import losses
from models.train.data import HANDWRITTEN_GROUPS, POLICIES, UNKNOWN, Example
from models.train.torch_encoder import SentenceEncoder

log = logging.getLogger("guardstream.finetune")

LossName = Literal["triplet", "batch_hard", "contrastive"]
DeviceName = Literal["auto", "cpu", "cuda"]
LossFunction = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]

LOSSES: dict[str, LossFunction] = {
    "triplet": losses.triplet_loss,
    "batch_hard": losses.batch_hard_triplet_loss,
    "contrastive": losses.contrastive_loss,
}
#: Margin of each loss when the settings give none (Euclidean distance between unit vectors).
DEFAULT_MARGINS = {"triplet": 0.5, "batch_hard": 0.5, "contrastive": 1.0}
CHECKPOINTS_SUBDIR = "checkpoints"
TRAINER_STATE_FILE = "trainer.pt"
PROGRESS_FILE = "progress.json"
#: Settings that may change between a run and its resumption without changing the result.
_RESUMABLE_CHANGES = frozenset(
    {"device", "threads", "checkpoint_every", "keep_checkpoints", "log_every", "save_epochs"}
)


@dataclass(frozen=True)
class FinetuneSettings:
    """Hyper-parameters of a fine-tuning run (see the module docstring)."""

    loss: LossName = "triplet"
    #: None: the loss's default (`DEFAULT_MARGINS`).
    margin: float | None = None
    epochs: int = 1
    batch_size: int = 32
    #: K of a P x K batch: prompts per class. With fewer classes than batch_size // K, every class
    #: is in every batch and gets batch_size // classes prompts.
    samples_per_class: int = 8
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    #: Tokens per prompt with [CLS] and [SEP]; longer prompts keep their first window.
    max_length: int = 128
    seed: int = 0
    #: Stop after this many optimizer steps (the learning-rate schedule ends there too).
    max_steps: int | None = None
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    #: Steps per entry of the loss history.
    log_every: int = 10
    #: Batches of the validation loss (None: one pass over the validation prompts).
    validation_batches: int | None = 40
    device: DeviceName = "auto"
    #: torch intra-op threads; 0 keeps torch's default.
    threads: int = 0
    #: Also write the encoder after each epoch to `epoch-N/` (to choose the epoch afterwards).
    save_epochs: bool = False

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.samples_per_class < 2 or self.batch_size < 2 * self.samples_per_class:
            raise ValueError("need samples_per_class >= 2 and batch_size >= 2 * samples_per_class")
        if self.max_length < 3:
            raise ValueError("max_length must leave room for [CLS], [SEP] and one token")
        counts = ("epochs", "checkpoint_every", "log_every", "keep_checkpoints", "max_steps")
        for name in (*counts, "validation_batches"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")

    @property
    def resolved_margin(self) -> float:
        return DEFAULT_MARGINS[self.loss] if self.margin is None else self.margin


@dataclass
class FinetuneResult:
    """What a run did; `to_json` is the content of finetune.json."""

    out_dir: Path
    settings: FinetuneSettings
    device: str
    steps: int
    total_steps: int
    steps_per_epoch: int
    train_prompts: dict[str, int]
    #: One entry per `log_every` steps: step, mean loss over the interval, learning rate, and
    #: seconds since the (last) process started.
    history: list[dict[str, float]] = field(default_factory=list)
    #: One entry per epoch run (also a partial last one): epoch, steps, mean loss.
    epochs: list[dict[str, float]] = field(default_factory=list)
    #: Validation loss before training and after each epoch.
    validation: list[dict[str, float]] = field(default_factory=list)
    #: Steps whose batch had no active triplet (zero loss): no optimizer update.
    skipped_steps: int = 0
    seconds: float = 0.0
    #: Wall time, steps and sequences of the training steps run by this process (the speed).
    train_seconds: float = 0.0
    train_steps: int = 0
    train_sequences: int = 0

    def to_json(self) -> dict[str, Any]:
        speed = self.train_seconds if self.train_seconds > 0 else math.inf
        return {
            "settings": {**asdict(self.settings), "margin": self.settings.resolved_margin},
            "device": self.device,
            "steps": self.steps,
            "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "train_prompts_per_class": self.train_prompts,
            "skipped_steps": self.skipped_steps,
            "loss_history": self.history,
            "epochs": self.epochs,
            "validation_loss": self.validation,
            "seconds": round(self.seconds, 1),
            "speed": {
                "steps_per_second": round(self.train_steps / speed, 4),
                "sequences_per_second": round(self.train_sequences / speed, 2),
            },
        }


# --- classes --------------------------------------------------------------------------------------


def class_of(targets: Sequence[int]) -> int | None:
    """The class of known targets: bit p set when policy p is violated; None if any is unknown.

    With the two shared policies: 0 benign, 1 unsafe content only, 2 prompt injection only,
    3 both. A target left unknown makes the class ambiguous (a jailbreak template with unknown
    unsafe_content could be class 2 or 3), so such a prompt gets no class.
    """
    if any(t == UNKNOWN for t in targets):
        return None
    if any(t not in (0, 1) for t in targets):
        raise ValueError(f"targets must be 0, 1 or {UNKNOWN}, got {tuple(targets)}")
    return sum(t << p for p, t in enumerate(targets))


def classes_of(examples: Sequence[Example], policies: Sequence[str]) -> list[int | None]:
    """A mining class per example (`class_of` of its targets for `policies`), None to leave it out.

    The examples' targets are in the order of `policies` (one per policy, as `models.train.data`
    and `models.train.files` build them).
    """
    classes = []
    for example in examples:
        if len(example.targets) != len(policies):
            raise ValueError(f"example has {len(example.targets)} targets for {len(policies)} policies")
        classes.append(class_of(example.targets))
    return classes


# --- tokens and batches ---------------------------------------------------------------------------


def token_ids(texts: Sequence[str], tokenizer_file: Path, max_length: int) -> tuple[list[IdArray], int]:
    """(the ids the served model sees in each text's first window, the pad id)."""
    tokenizer = WindowTokenizer(tokenizer_file, max_length, max_length - 2)
    ids = [encoded.windows[0] for encoded in tokenizer.encode(list(texts))]
    return ids, tokenizer.pad_id


def batch_shape(n_classes: int, batch_size: int, samples_per_class: int) -> tuple[int, int]:
    """(P classes per batch, rows per class): P = batch_size // K, at most the classes there are."""
    if n_classes < 2:
        raise ValueError(f"metric learning needs at least two classes, got {n_classes}")
    per_batch = min(batch_size // samples_per_class, n_classes)
    return per_batch, batch_size // per_batch


def _draw(indices: IdArray, count: int, rng: np.random.Generator) -> IdArray:
    """`count` indices: whole shuffled passes over `indices` (a small class repeats), then a cut."""
    passes = math.ceil(count / len(indices))
    return np.concatenate([rng.permutation(indices) for _ in range(passes)])[:count]


def _class_sets(
    n_batches: int, class_ids: list[int], per_batch: int, rng: np.random.Generator
) -> list[IdArray]:
    """The classes of each batch: all of them, or a random `per_batch` of them per batch."""
    all_classes = np.array(class_ids, dtype=np.int64)
    if per_batch == len(class_ids):
        return [all_classes for _ in range(n_batches)]
    return [np.sort(rng.choice(all_classes, per_batch, replace=False)) for _ in range(n_batches)]


def balanced_batches(
    classes: Sequence[int],
    lengths: Sequence[int],
    batch_size: int,
    samples_per_class: int,
    seed: int | Sequence[int],
    n_batches: int | None = None,
) -> list[list[int]]:
    """Class-balanced, length-aware P x K batches of row indices, reproducible from `seed`.

    Each batch takes the same number of rows from each of its P classes (minority classes are
    repeated, majority classes subsampled). Length-awareness: each class's draw is sorted by
    token length and cut into chunks; batch b gets from every class the chunk of the same length
    rank r_b, a random permutation of the batches, so short prompts share batches with short ones
    while the batch order stays random. Default `n_batches`: one pass worth of rows.
    """
    if len(classes) != len(lengths):
        raise ValueError("classes and lengths differ in length")
    rng = np.random.default_rng(list(seed) if isinstance(seed, Sequence) else seed)
    by_class = {c: np.flatnonzero(np.asarray(classes) == c) for c in sorted(set(classes))}
    per_batch, per_class = batch_shape(len(by_class), batch_size, samples_per_class)
    count = n_batches if n_batches is not None else max(1, len(classes) // batch_size)
    class_sets = _class_sets(count, list(by_class), per_batch, rng)
    rank = rng.permutation(count)
    token_lengths = np.asarray(lengths)
    batches: list[list[int]] = [[] for _ in range(count)]
    for c, indices in by_class.items():
        members = sorted((b for b in range(count) if c in class_sets[b]), key=lambda b: rank[b])
        drawn = _draw(indices, len(members) * per_class, rng)
        drawn = drawn[np.argsort(token_lengths[drawn], kind="stable")]
        for chunk, b in enumerate(members):
            batches[b] += drawn[chunk * per_class : (chunk + 1) * per_class].tolist()
    return batches


@dataclass(frozen=True)
class LabeledIds:
    """Token ids and classes of the prompts of one split."""

    ids: list[IdArray]
    classes: list[int]
    pad_id: int

    def tensors(self, rows: Sequence[int], device: torch.device) -> tuple[torch.Tensor, ...]:
        """(input_ids, attention_mask, labels) of `rows`, padded to the longest row."""
        input_ids, mask = pad_windows([self.ids[r] for r in rows], self.pad_id)
        labels = torch.tensor([self.classes[r] for r in rows], dtype=torch.long)
        return torch.from_numpy(input_ids).to(device), torch.from_numpy(mask).to(device), labels.to(device)

    def lengths(self) -> list[int]:
        return [len(i) for i in self.ids]


def labeled_ids(
    texts: Sequence[str], classes: Sequence[int], tokenizer_file: Path, max_length: int
) -> LabeledIds:
    if len(texts) != len(classes):
        raise ValueError(f"{len(texts)} texts but {len(classes)} classes")
    ids, pad_id = token_ids(texts, tokenizer_file, max_length)
    return LabeledIds(ids, list(classes), pad_id)


# --- device, optimizer, schedule ------------------------------------------------------------------


def choose_device(setting: str) -> torch.device:
    """CUDA when available and allowed, else the CPU; asking for CUDA without a GPU fails clearly."""
    available = torch.cuda.is_available()
    if setting == "cuda" and not available:
        raise RuntimeError("device cuda requested but torch sees no usable GPU (use --device auto or cpu)")
    return torch.device("cuda" if available and setting != "cpu" else "cpu")


def make_optimizer(model: torch.nn.Module, settings: FinetuneSettings) -> torch.optim.AdamW:
    """AdamW; biases and LayerNorm weights are not decayed (the usual practice for BERT)."""
    decayed: list[torch.nn.Parameter] = []
    plain: list[torch.nn.Parameter] = []
    for name, parameter in model.named_parameters():
        (plain if parameter.dim() < 2 or "LayerNorm" in name else decayed).append(parameter)
    groups = [
        {"params": decayed, "weight_decay": settings.weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=settings.learning_rate)


def linear_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning rate rising linearly to its peak over the warm-up, then falling linearly to zero."""
    warmup = int(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --- checkpoints ----------------------------------------------------------------------------------


@dataclass
class Progress:
    """Where a run is: what a checkpoint stores besides the tensors (JSON)."""

    step: int = 0
    skipped_steps: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)
    validation: list[dict[str, float]] = field(default_factory=list)
    #: Losses of the steps since the last history entry (they make the next entry).
    pending_losses: list[float] = field(default_factory=list)
    #: Losses of the current epoch so far.
    epoch_losses: list[float] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    data_sha256: str = ""


def data_fingerprint(texts: Sequence[str], classes: Sequence[int]) -> str:
    """SHA-256 of the training prompts and classes: a run resumes only on the data it started on."""
    digest = hashlib.sha256()
    for text, label in zip(texts, classes, strict=True):
        digest.update(f"{label}\t{text}\n".encode())
    return digest.hexdigest()


def checkpoint_dirs(out_dir: Path) -> list[Path]:
    """The checkpoints of `out_dir`, oldest first."""
    root = out_dir / CHECKPOINTS_SUBDIR
    found = [p for p in root.glob("step-*") if p.name[5:].isdigit() and (p / TRAINER_STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def save_checkpoint(
    out_dir: Path,
    base_dir: Path,
    model: SentenceEncoder,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    progress: Progress,
    keep: int,
) -> Path:
    """Write checkpoints/step-N (written aside, then renamed: never half a checkpoint); prune old ones."""
    final = out_dir / CHECKPOINTS_SUBDIR / f"step-{progress.step}"
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save(partial, tokenizer_from=base_dir)
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    torch.save(state, partial / TRAINER_STATE_FILE)
    (partial / PROGRESS_FILE).write_text(json.dumps(asdict(progress)) + "\n", encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    for old in checkpoint_dirs(out_dir)[:-keep]:
        shutil.rmtree(old)
    return final


def _check_resumable(progress: Progress, settings: FinetuneSettings, data_sha256: str) -> None:
    current = _settings_json(settings)
    changed = sorted(
        k
        for k in current.keys() | progress.settings.keys()
        if k not in _RESUMABLE_CHANGES and current.get(k) != progress.settings.get(k)
    )
    if changed:
        raise ValueError(f"cannot resume: settings changed since the checkpoint ({', '.join(changed)})")
    if progress.data_sha256 != data_sha256:
        raise ValueError("cannot resume: the training prompts differ from those of the checkpoint")


def load_checkpoint(
    checkpoint: Path,
    model: SentenceEncoder,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
) -> Progress:
    """Restore weights, optimizer, scheduler and RNG state from `checkpoint`; returns its progress."""
    restored = SentenceEncoder.from_dir(checkpoint)
    model.bert.load_state_dict(restored.bert.state_dict())
    state = torch.load(checkpoint / TRAINER_STATE_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return Progress(**json.loads((checkpoint / PROGRESS_FILE).read_text(encoding="utf-8")))


def _settings_json(settings: FinetuneSettings) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(settings)))  # type: ignore[no-any-return]


# --- training -------------------------------------------------------------------------------------


def batch_loss(
    model: SentenceEncoder,
    data: LabeledIds,
    rows: Sequence[int],
    settings: FinetuneSettings,
    device: torch.device,
) -> torch.Tensor:
    """The settings' loss on one batch of rows."""
    input_ids, mask, labels = data.tensors(rows, device)
    return LOSSES[settings.loss](model(input_ids, mask), labels, settings.resolved_margin)


def validation_loss(
    model: SentenceEncoder, data: LabeledIds, settings: FinetuneSettings, device: torch.device
) -> float:
    """Mean loss over fixed validation batches (the same batches every time), without dropout."""
    batches = balanced_batches(
        data.classes,
        data.lengths(),
        settings.batch_size,
        settings.samples_per_class,
        (settings.seed, 1_000_003),
        n_batches=_validation_batch_count(len(data.classes), settings),
    )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            total = sum(float(batch_loss(model, data, rows, settings, device)) for rows in batches)
    finally:
        model.train(was_training)
    return total / len(batches)


def _validation_batch_count(n_rows: int, settings: FinetuneSettings) -> int:
    one_pass = max(1, n_rows // settings.batch_size)
    return one_pass if settings.validation_batches is None else min(one_pass, settings.validation_batches)


@dataclass
class _Run:
    """The live objects of a run."""

    model: SentenceEncoder
    optimizer: torch.optim.AdamW
    scheduler: torch.optim.lr_scheduler.LambdaLR
    device: torch.device
    settings: FinetuneSettings
    result: FinetuneResult
    progress: Progress
    #: perf_counter() when this process started (the clock of the loss history).
    started: float = field(default_factory=time.perf_counter)

    def step(self, data: LabeledIds, rows: Sequence[int]) -> float:
        """One optimizer step; a batch without any active term (zero loss) updates nothing."""
        loss = batch_loss(self.model, data, rows, self.settings, self.device)
        value = float(loss.detach())
        if value > 0.0:
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.max_grad_norm)
            self.optimizer.step()
        else:
            self.progress.skipped_steps += 1
        self.scheduler.step()
        self.progress.step += 1
        return value

    def record(self, loss: float) -> None:
        """Add a step's loss; every `log_every` steps, a history entry."""
        self.progress.pending_losses.append(loss)
        self.progress.epoch_losses.append(loss)
        if len(self.progress.pending_losses) >= self.settings.log_every:
            self.flush_history()

    def maybe_checkpoint(self, total_steps: int, out_dir: Path, base_dir: Path) -> None:
        """Save a checkpoint every `checkpoint_every` steps (not at the end: the output is written then)."""
        step = self.progress.step
        if step % self.settings.checkpoint_every == 0 and step < total_steps:
            save_checkpoint(
                out_dir,
                base_dir,
                self.model,
                self.optimizer,
                self.scheduler,
                self.progress,
                self.settings.keep_checkpoints,
            )

    def flush_history(self) -> None:
        pending = self.progress.pending_losses
        if pending:
            self.progress.history.append(
                {
                    "step": self.progress.step,
                    "loss": round(sum(pending) / len(pending), 6),
                    "learning_rate": float(self.scheduler.get_last_lr()[0]),
                    "seconds": round(time.perf_counter() - self.started, 1),
                }
            )
            self.progress.pending_losses = []


def _start(
    base_dir: Path,
    out_dir: Path,
    settings: FinetuneSettings,
    total_steps: int,
    resume: bool,
    data_sha256: str,
) -> tuple[SentenceEncoder, torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR, Progress, torch.device]:
    """The model, optimizer and schedule, fresh from `base_dir` or restored from the latest checkpoint."""
    device = choose_device(settings.device)
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    model = SentenceEncoder.from_dir(base_dir).to(device)
    optimizer = make_optimizer(model, settings)
    scheduler = linear_schedule(optimizer, total_steps, settings.warmup_ratio)
    progress = Progress(settings=_settings_json(settings), data_sha256=data_sha256)
    found = checkpoint_dirs(out_dir) if resume else []
    if resume and not found:
        log.info("no checkpoint in %s: starting from %s", out_dir / CHECKPOINTS_SUBDIR, base_dir)
    if found:
        progress = load_checkpoint(found[-1], model, optimizer, scheduler)
        _check_resumable(progress, settings, data_sha256)
        log.info("resuming from %s (step %d)", found[-1], progress.step)
    model.train()
    return model, optimizer, scheduler, progress, device


def _class_counts(classes: Sequence[int]) -> dict[str, int]:
    return {str(c): int(n) for c, n in zip(*np.unique(np.asarray(classes), return_counts=True), strict=True)}


def _run_epoch(
    run: _Run,
    train: LabeledIds,
    epoch: int,
    steps_per_epoch: int,
    total_steps: int,
    out_dir: Path,
    base_dir: Path,
) -> None:
    """The remaining steps of one epoch, with a progress bar of the running loss and checkpoints."""
    s = run.settings
    batches = balanced_batches(
        train.classes, train.lengths(), s.batch_size, s.samples_per_class, (s.seed, epoch), steps_per_epoch
    )
    done_in_epoch = run.progress.step - epoch * steps_per_epoch
    todo = batches[done_in_epoch : done_in_epoch + total_steps - run.progress.step]
    started = time.perf_counter()
    with tqdm(todo, desc=f"epoch {epoch + 1}/{s.epochs}", unit="step", mininterval=2.0) as bar:
        for rows in bar:
            loss = run.step(train, rows)
            run.result.train_steps += 1
            run.result.train_sequences += len(rows)
            run.record(loss)
            recent = run.progress.epoch_losses[-s.log_every :]
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}", step=run.progress.step, refresh=False)
            # The last step of an epoch is checkpointed after `_end_epoch` (in `finetune_encoder`).
            if run.progress.step % steps_per_epoch != 0:
                run.maybe_checkpoint(total_steps, out_dir, base_dir)
    run.result.train_seconds += time.perf_counter() - started
    run.flush_history()


def _end_epoch(run: _Run, epoch: int, validation: LabeledIds | None) -> None:
    losses_of_epoch = run.progress.epoch_losses
    entry: dict[str, float] = {"epoch": epoch + 1, "step": run.progress.step, "steps": len(losses_of_epoch)}
    entry["loss"] = round(sum(losses_of_epoch) / max(1, len(losses_of_epoch)), 6)
    run.progress.epochs.append(entry)
    run.progress.epoch_losses = []
    message = f"epoch {epoch + 1}: train loss {entry['loss']:.4f}"
    if validation is not None:
        value = validation_loss(run.model, validation, run.settings, run.device)
        run.progress.validation.append(
            {"epoch": epoch + 1, "step": run.progress.step, "loss": round(value, 6)}
        )
        message += f", validation loss {value:.4f}"
    log.info(message)


def finetune_encoder(
    texts: Sequence[str],
    classes: Sequence[int],
    base_dir: Path,
    out_dir: Path,
    settings: FinetuneSettings,
    validation: tuple[Sequence[str], Sequence[int]] | None = None,
    resume: bool = False,
) -> FinetuneResult:
    """Fine-tune the encoder of `base_dir` on (text, class) pairs; write the encoder to `out_dir`.

    `validation`: (texts, classes) whose loss is measured before training and after each epoch.
    `resume`: continue from the latest checkpoint in `out_dir` (same settings and data), if any.
    """
    started = time.perf_counter()
    tokenizer_file = base_dir / "tokenizer.json"
    train = labeled_ids(texts, classes, tokenizer_file, settings.max_length)
    held = None if validation is None else labeled_ids(*validation, tokenizer_file, settings.max_length)
    batch_shape(len(set(train.classes)), settings.batch_size, settings.samples_per_class)
    steps_per_epoch = max(1, len(train.classes) // settings.batch_size)
    total_steps = settings.epochs * steps_per_epoch
    total_steps = total_steps if settings.max_steps is None else min(total_steps, settings.max_steps)
    out_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = data_fingerprint(texts, classes)
    model, optimizer, scheduler, progress, device = _start(
        base_dir, out_dir, settings, total_steps, resume, fingerprint
    )
    log.info(
        "%d training prompts (classes %s), %d steps of %d on %s",
        len(train.classes),
        _class_counts(train.classes),
        total_steps - progress.step,
        total_steps,
        device,
    )
    result = FinetuneResult(
        out_dir,
        settings,
        str(device),
        progress.step,
        total_steps,
        steps_per_epoch,
        _class_counts(train.classes),
    )
    run = _Run(model, optimizer, scheduler, device, settings, result, progress, started)
    if held is not None and progress.step == 0 and not progress.validation:
        value = validation_loss(model, held, settings, device)
        progress.validation.append({"epoch": 0, "step": 0, "loss": round(value, 6)})
        log.info("validation loss before training %.4f", value)
    for epoch in range(progress.step // steps_per_epoch, settings.epochs):
        if progress.step >= total_steps:
            break
        _run_epoch(run, train, epoch, steps_per_epoch, total_steps, out_dir, base_dir)
        _end_epoch(run, epoch, held)
        if settings.save_epochs:
            run.model.save(out_dir / f"epoch-{epoch + 1}", tokenizer_from=base_dir)
        run.maybe_checkpoint(total_steps, out_dir, base_dir)
    return _finish(run, out_dir, base_dir, started)


def _finish(run: _Run, out_dir: Path, base_dir: Path, started: float) -> FinetuneResult:
    """Write the encoder directory and finetune.json; fill in the result."""
    run.model.eval()
    run.model.save(out_dir, tokenizer_from=base_dir)
    result, progress = run.result, run.progress
    result.steps, result.skipped_steps = progress.step, progress.skipped_steps
    result.history, result.epochs, result.validation = progress.history, progress.epochs, progress.validation
    result.seconds = time.perf_counter() - started
    (out_dir / "finetune.json").write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    log.info("wrote the encoder and finetune.json to %s", out_dir)
    return result


# --- command line ---------------------------------------------------------------------------------


def training_pairs(
    examples: Sequence[Example], policies: Sequence[str], split: str, handwritten_repeat: int = 1
) -> tuple[list[str], list[int]]:
    """(texts, classes) of the examples of `split` that have a class; each hand-written prompt
    `handwritten_repeat` times (they are few beside the datasets, and chosen to teach contrasts)."""
    chosen = [e for e in examples if e.split == split]
    pairs = []
    for example, label in zip(chosen, classes_of(chosen, policies), strict=True):
        if label is not None:
            repeat = handwritten_repeat if example.group in HANDWRITTEN_GROUPS else 1
            pairs += [(example.text, label)] * repeat
    return [text for text, _ in pairs], [c for _, c in pairs]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m models.train.finetune",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = FinetuneSettings()
    parser.add_argument("--data-dir", type=Path, required=True, help="the shared datasets directory")
    parser.add_argument("--out", type=Path, required=True, help="output encoder directory")
    parser.add_argument("--base-dir", type=Path, default=None, help="encoder to start from [packaged MiniLM]")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    parser.add_argument("--loss", choices=list(LOSSES), default=defaults.loss, help="[%(default)s]")
    parser.add_argument("--margin", type=float, default=None, help=f"[per loss: {DEFAULT_MARGINS}]")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="[%(default)s]")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="[%(default)s]")
    parser.add_argument(
        "--samples-per-class", type=int, default=defaults.samples_per_class, help="K of P x K [%(default)s]"
    )
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate, help="[%(default)s]")
    parser.add_argument("--warmup-ratio", type=float, default=defaults.warmup_ratio, help="[%(default)s]")
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="[%(default)s]")
    parser.add_argument(
        "--max-length", type=int, default=defaults.max_length, help="tokens per prompt [%(default)s]"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="[%(default)s]")
    parser.add_argument(
        "--handwritten-repeat", type=int, default=4, help="times each hand-written prompt is used [4]"
    )
    parser.add_argument(
        "--checkpoint-every", type=int, default=defaults.checkpoint_every, help="steps [%(default)s]"
    )
    parser.add_argument(
        "--validation-batches", type=int, default=defaults.validation_batches, help="[%(default)s]"
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=defaults.device, help="[auto]")
    parser.add_argument("--threads", type=int, default=0, help="torch threads, 0 = torch's default [0]")
    parser.add_argument(
        "--save-epochs", action="store_true", help="also write the encoder after each epoch to OUT/epoch-N"
    )
    return parser


def settings_from_args(args: argparse.Namespace) -> FinetuneSettings:
    return FinetuneSettings(
        loss=args.loss,
        margin=args.margin,
        epochs=args.epochs,
        batch_size=args.batch_size,
        samples_per_class=args.samples_per_class,
        learning_rate=args.learning_rate,
        warmup_ratio=args.warmup_ratio,
        weight_decay=args.weight_decay,
        max_length=args.max_length,
        seed=args.seed,
        max_steps=args.max_steps,
        checkpoint_every=args.checkpoint_every,
        validation_batches=args.validation_batches,
        device=args.device,
        threads=args.threads,
        save_epochs=args.save_epochs,
    )


def run(args: argparse.Namespace) -> int:
    """Fine-tune on the train split of the shared data; 2 with a message when data is missing."""
    from models.base import bert_onnx
    from models.train.data import shared_examples

    if not args.data_dir.is_dir():
        print(f"finetune: data directory {args.data_dir} not found (the shared datasets)", file=sys.stderr)
        return 2
    try:
        settings = settings_from_args(args)
        examples = shared_examples(args.data_dir)
    except (FileNotFoundError, ValueError) as exc:
        print(f"finetune: {exc}", file=sys.stderr)
        return 2
    base_dir = args.base_dir if args.base_dir is not None else bert_onnx.encoder_dir()
    texts, classes = training_pairs(examples, POLICIES, "train", args.handwritten_repeat)
    result = finetune_encoder(
        texts,
        classes,
        base_dir,
        args.out,
        settings,
        validation=training_pairs(examples, POLICIES, "validation"),
        resume=args.resume,
    )
    print(f"{result.steps} steps in {result.seconds:.0f} s on {result.device}; wrote {args.out}")
    for entry in result.validation:
        print(f"validation loss after epoch {int(entry['epoch'])}: {entry['loss']:.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
