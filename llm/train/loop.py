"""The training loop that every stage uses.

A stage contributes a model, a batch source, a loss and an evaluation (`Stage` below); the loop owns
the rest: gradient accumulation, the learning-rate schedule, clipping, precision, compilation, DDP or
FSDP (llm/train/sharding.py), activation checkpointing, evaluation and early stopping, stop conditions,
logging, checkpoints, signals and exact resume.

Losses are sums over items (tokens, pairs, ...) with their count; gradients of the micro-batches are
summed and divided once by the total count, so a step's gradient is the mean over every item in it
whatever the micro-batches held.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from llm import lora
from llm.config import RunConfig, dump_yaml, save_config
from llm.device import peak_flops
from llm.distributed import any_across, from_every, from_main, sum_across
from llm.errors import TrainingError
from llm.run_files import write_json
from llm.train import checkpoint as ckpt
from llm.train import sharded_checkpoint, sharding
from llm.train.activation_checkpointing import apply_activation_checkpointing
from llm.train.log import EvalItemsLog, MetricsLog, Progress
from llm.train.optim import build_optimizer, lr_at
from llm.train.runtime import Runtime, SignalGuard
from llm.train.throughput import Interval
from llm.train.trackers import Trackers, open_trackers

# callables (stage name, step, total steps, training seconds so far) told of every logged step; the
# pipeline uses this to estimate the time left without the loop knowing about pipelines
_progress_observers: list[Callable[[str, int, int, float], None]] = []


@contextlib.contextmanager
def observe_progress(observer: Callable[[str, int, int, float], None]):
    _progress_observers.append(observer)
    try:
        yield
    finally:
        _progress_observers.remove(observer)


@dataclass
class LossOutput:
    loss: torch.Tensor  # the loss summed over `count` items
    count: float  # items in the sum: tokens, pairs, ...
    tokens: int = 0  # tokens processed, for throughput
    metrics: dict[str, Any] = field(default_factory=dict)  # sums over the same items, averaged by the loop


class Stage:
    """What a stage contributes to the loop. Subclasses set `model` and `source` and define `loss`."""

    name = "stage"
    model_kind = "gpt"
    early_stop_metric = "val_loss"
    early_stop_mode = "min"  # min | max

    model: nn.Module
    source: Any  # next_batch(), state_dict(), load_state_dict(), optional `epoch`

    def loss(self, model: nn.Module, batch: dict) -> LossOutput:
        raise NotImplementedError

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return {}

    def samples(self, model: nn.Module) -> list | None:
        """Replies to show after each evaluation (main process only): the loop writes them to samples.jsonl
        and the trackers; None = none."""
        return None

    def eval_items(self) -> dict[str, dict[str, bool]] | None:
        """The last evaluation's verdicts on each held-out item, by measure ({"items": {item: correct}, ...}),
        for eval_items.json; None = none."""
        return None

    def total_steps(self, cfg: RunConfig) -> int:
        """Schedule length: max_steps, or fewer when train.epochs over a finite dataset ends training first."""
        per_epoch = getattr(self.source, "batches_per_epoch", None)
        if not cfg.train.epochs or not per_epoch:
            return cfg.train.max_steps
        return min(cfg.train.max_steps, max(1, round(cfg.train.epochs * per_epoch / accumulation_steps(cfg))))

    def flops_per_token(self) -> float | None:
        return None

    def next_batch_generates(self) -> bool:
        """Whether the coming next_batch() runs the model (PPO's rollouts): under FSDP it gets it gathered."""
        return False

    def frozen_models(self) -> list[nn.Module]:
        """Models the stage runs but does not train (a reference, a reward model): sharded too under FSDP."""
        return []

    def log_extras(self) -> dict:
        """Figures the stage tracks itself (e.g. PPO's rollout statistics), added to each training log line."""
        return {}

    def checkpoint_meta(self) -> dict:
        config = getattr(self.model, "config", None)
        meta = {"kind": self.model_kind, "model_config": dataclasses.asdict(config) if config is not None else None}
        if adapters := lora.describe(self.model):  # what folds them into the weights when the checkpoint is read
            meta["lora"] = adapters
        return meta


@dataclass
class LoopState:
    step: int = 0
    tokens_seen: int = 0
    elapsed_s: float = 0.0
    best_value: float | None = None
    best_checkpoint: str | None = None
    evals_since_best: int = 0
    nonfinite: int = 0
    last_eval_step: int = -1
    last_save_step: int = -1
    last_metrics: dict = field(default_factory=dict)


# the reasons that mean the stage did the work its config asked for
WORK_DONE = ("max_steps", "max_tokens", "epochs")


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    reason: str  # max_steps | max_tokens | max_time | epochs | early_stop | interrupted:SIGINT | ...
    best_checkpoint: str | None
    metrics: dict
    elapsed_s: float
    total_steps: int = 0

    @property
    def interrupted(self) -> bool:
        return self.reason.startswith("interrupted")

    @property
    def cut_short(self) -> bool:
        """Something other than the configured work or early stopping ended the stage (a clock, a signal)."""
        return self.reason not in (*WORK_DONE, "early_stop", "target")

    @property
    def ending(self) -> str:
        return describe_stop(self.reason, self.step, self.total_steps)


def describe_stop(reason: str, step: int, total_steps: int) -> str:
    """How a stage ended, in the words its last line, the pipeline and the report use."""
    of_total = f"at step {step:,} of {total_steps:,}"
    if reason in WORK_DONE:
        return f"done: {reason} at step {step:,}" + ("" if step == total_steps else f" of {total_steps:,}")
    if reason == "early_stop":
        return f"stopped early (train.early_stop_patience: no better evaluation) {of_total}"
    if reason == "target":
        return f"done: reached train.target {of_total}"
    if reason == "max_time":
        return f"stopped by train.max_time_s {of_total}: cut short, not the configured work"
    if reason.startswith("interrupted:"):
        return f"stopped by {reason.split(':', 1)[1]} {of_total}"
    return f"stopped ({reason}) {of_total}"


def train(stage: Stage, cfg: RunConfig, runtime: Runtime, tokenizer_json: str | None = None, resume: bool = False) -> TrainResult:
    """Train `stage` under `cfg` in cfg.run_dir; with `resume`, continue from the newest valid checkpoint."""
    return Trainer(stage, cfg, runtime, tokenizer_json).run(resume)


class Trainer:
    def __init__(self, stage: Stage, cfg: RunConfig, runtime: Runtime, tokenizer_json: str | None):
        self.stage, self.cfg, self.rt = stage, cfg, runtime
        self.run_dir = cfg.run_dir
        self.checkpoints = self.run_dir / "checkpoints"
        self.tokenizer_json = tokenizer_json
        self.sharded = cfg.train.parallel == "fsdp" and runtime.dist.enabled
        # sharded, the model moves to the device a block at a time as it is sharded: never whole there
        self.model = stage.model.train() if self.sharded else stage.model.to(runtime.device).train()
        if cfg.train.activation_checkpointing:
            apply_activation_checkpointing(self.model)
        if self.sharded:
            for model in sharding.models_to_shard(self.model, stage.frozen_models()):
                sharding.shard_model(model, runtime.dist.world_size, runtime.device, runtime.precision.dtype, cfg.train.compile)
        self.optimizer = build_optimizer(self.model, cfg.optim, runtime.device, runtime.precision.dtype)
        frozen = frozenset(name for name, p in self.model.named_parameters(remove_duplicate=False) if not p.requires_grad)
        self.frozen = ckpt.FrozenStore(self.checkpoints, frozen)  # a frozen base under adapters: written once per run
        self.total_steps = stage.total_steps(cfg)
        self.state = LoopState()
        self.accum = accumulation_steps(cfg)
        self.is_main = runtime.dist.is_main
        self.watch_metric = cfg.train.early_stop_metric or stage.early_stop_metric
        self.watch_mode = cfg.train.early_stop_mode or stage.early_stop_mode

    # --- setup -------------------------------------------------------------------------------------

    def run(self, resume: bool) -> TrainResult:
        resumed_from = self.restore() if resume else None
        if self.is_main:
            save_config(self.cfg, self.run_dir / "config.yaml")
            if self.tokenizer_json is not None:
                (self.run_dir / "tokenizer.json").write_text(self.tokenizer_json)
        # a resume that found no checkpoint starts over: the old lines would repeat the steps it redoes
        resume_step = self.state.step if resumed_from is not None else None
        self.log = MetricsLog(self.run_dir / "metrics.jsonl", resume_step) if self.is_main else None
        self.samples_log = MetricsLog(self.run_dir / "samples.jsonl", resume_step) if self.is_main else None
        self.items_log = EvalItemsLog(self.run_dir / "eval_items.json", resume_step, self.state.best_checkpoint) if self.is_main else None
        self.trackers = open_trackers(self.cfg, resume_step, self.say) if self.is_main else Trackers([])
        self.train_model = self.wrap(self.model)
        if resumed_from is not None:
            self.say(f"resumed from {resumed_from} at step {self.state.step}")
        try:
            with SignalGuard() as guard:
                reason = self.loop(guard)
            return self.finish(reason)
        finally:
            self.trackers.close()

    def restore(self) -> Path | None:
        folder = self.newest_checkpoint()
        if folder is None:
            self.say(f"no checkpoint to resume in {self.checkpoints}; starting from scratch")
            return None
        trainer = ckpt.read_trainer_state(folder)
        if (folder / sharded_checkpoint.SHARDS).is_dir():
            sharded_checkpoint.read_shards(folder, self.model, self.optimizer)  # resharded to this run's processes
        elif self.sharded:
            raise ckpt.CheckpointError(f"{folder}: written by a run without train.parallel=fsdp, which FSDP cannot resume; "
                                       f"resume it with train.parallel=ddp (or start a new run from it with init_from)")
        else:
            self.model.load_state_dict(ckpt.read_folder_weights(folder))
            self.optimizer.load_state_dict(trainer["optimizer"])
        self.state = LoopState(**trainer["loop"])
        self.stage.source.load_state_dict(trainer["source"])
        ckpt.set_rng_state(self.own_rng(trainer))
        return folder

    def newest_checkpoint(self) -> Path | None:
        """The newest valid checkpoint, its files hashed once by process 0, which tells the others."""
        return from_main(ckpt.newest_valid(self.checkpoints) if self.is_main else None, self.rt.dist)

    def own_rng(self, trainer: dict) -> dict:
        """This process's random state: its own when the run had as many processes, else process 0's."""
        states, rank = trainer.get("rng_by_rank"), self.rt.dist.rank
        if states and len(states) == self.rt.dist.world_size:
            return states[rank]
        if states and len(states) != self.rt.dist.world_size:
            self.say(f"the checkpoint was written by {len(states)} processes and this run has {self.rt.dist.world_size}: "
                     f"model and optimizer continue exactly, the data order and random draws do not")
        return trainer["rng"]

    def gathered(self, needed: bool = True, frozen: bool = False):
        """The trained model (and with `frozen` the frozen ones) whole for a while under FSDP; nothing otherwise."""
        if not (self.sharded and needed):
            return contextlib.nullcontext()
        return sharding.gathered([self.model, *(self.stage.frozen_models() if frozen else [])])

    def wrap(self, model: nn.Module) -> nn.Module:
        wrapped = model
        if self.sharded:  # FSDP shards in place; its blocks were compiled before sharding
            return wrapped
        if self.cfg.train.compile:
            wrapped = torch.compile(wrapped)
        if self.rt.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.rt.device.index] if self.rt.device.type == "cuda" else None
            wrapped = DistributedDataParallel(wrapped, device_ids=ids)
        return wrapped

    # --- the loop ----------------------------------------------------------------------------------

    def loop(self, guard: SignalGuard) -> str:
        cfg, state = self.cfg, self.state
        progress = Progress(self.total_steps, state.step, cfg.train.progress and self.is_main, self.stage.name)
        self.progress = progress
        self.interval = Interval(self.rt.device, state.tokens_seen)
        if state.step == 0 and state.last_eval_step < 0 and cfg.train.eval_at_start:
            self.evaluate()
        # checked before every step, the first too: resuming a run that already met its limit must not train on
        try:
            while (reason := self.stop_reason(guard)) is None:
                stats = self.step()
                state.step += 1
                self.record(stats, progress)
                due_eval = cfg.train.eval_every and state.step % cfg.train.eval_every == 0
                if due_eval:
                    self.evaluate()
                if cfg.checkpoint.save_every and state.step % cfg.checkpoint.save_every == 0:
                    self.save()
        finally:
            progress.close()
            self.progress = None
        return reason

    def step(self) -> dict:
        cfg, rt = self.cfg, self.rt
        lr = lr_at(self.state.step, cfg.optim, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # Muon's matrices have their own peak
        started = time.perf_counter()
        loss_sum, count, tokens, metric_sums, finite = 0.0, 0.0, 0, {}, True
        for micro in range(self.accum):
            with self.gathered(self.stage.next_batch_generates()):
                batch = to_device(self.stage.source.next_batch(), rt.device)
            sync = micro == self.accum - 1 or not rt.dist.enabled
            with maybe_no_sync(self.train_model, sync), rt.precision.autocast():
                out = self.stage.loss(self.train_model, batch)
            # one micro-batch in one process: the step's item count is known now, so scale before
            # backward and spare apply_gradients a pass over every gradient
            prescaled = self.accum == 1 and not rt.dist.enabled and float(out.count) > 0
            (out.loss / float(out.count) if prescaled else out.loss).backward()
            value = out.loss.item()
            finite = finite and math.isfinite(value)
            loss_sum += value
            count += float(out.count)
            tokens += int(out.tokens)
            for key, val in out.metrics.items():
                metric_sums[key] = metric_sums.get(key, 0.0) + float(val)
        keys = sorted(metric_sums)  # a stage logs the same metrics in every process
        totals = sum_across([loss_sum, count, float(tokens), float(not finite), *(metric_sums[k] for k in keys)], rt.dist, rt.device)
        loss_sum, count, tokens, metric_sums = totals[0], totals[1], int(totals[2]), dict(zip(keys, totals[4:]))
        finite = totals[3] == 0 and count > 0
        grad_norm = self.apply_gradients(1.0 if prescaled else count) if finite else float("nan")
        stepped = finite and math.isfinite(grad_norm)
        if not stepped:
            self.optimizer.zero_grad(set_to_none=True)
            self.on_nonfinite(loss_sum, count)
        self.state.tokens_seen += tokens
        loss = loss_sum / count if count else float("nan")
        metrics = {k: v / count for k, v in metric_sums.items()} if count else {}
        return {"loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens": tokens,
                "skipped": not stepped, "step_s": time.perf_counter() - started, **metrics}

    def apply_gradients(self, count: float) -> float:
        # DDP averages gradients over ranks: undo that, then divide the summed gradient by every item
        scale = self.rt.dist.world_size / count
        params = [p for p in self.model.parameters() if p.grad is not None]
        if scale != 1.0:
            torch._foreach_mul_([p.grad for p in params], scale)
        clip = self.cfg.optim.grad_clip
        norm = sharding.as_number(torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf")))
        if math.isfinite(norm):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def on_nonfinite(self, loss_sum: float, count: float) -> None:
        self.state.nonfinite += 1
        limit = self.cfg.train.max_nonfinite
        self.say(f"step {self.state.step + 1}: non-finite loss or gradient (loss sum {loss_sum}, items {count}); "
                 f"step skipped ({self.state.nonfinite}/{limit})")
        if self.state.nonfinite > limit:
            kept = ckpt.latest_step_dir(self.checkpoints)
            where = f"; the last good checkpoint is {self.checkpoints / kept}" if kept else ""
            raise TrainingError(
                f"aborting: {self.state.nonfinite} non-finite steps (train.max_nonfinite={limit}); lower optim.lr or check the data{where}"
            )

    def record(self, stats: dict, progress: Progress) -> None:
        state, cfg = self.state, self.cfg
        state.elapsed_s += stats["step_s"]
        self.interval.add(stats["tokens"])
        progress.update(1, stats["loss"], stats["lr"], self.interval.rate())
        if not (cfg.train.log_every and state.step % cfg.train.log_every == 0):
            return
        if self.is_main:
            for observer in _progress_observers:
                observer(self.stage.name, state.step, self.total_steps, state.elapsed_s)
        tokens_per_s = self.interval.measure()
        line = {"kind": "train", "step": state.step, **{k: v for k, v in stats.items() if k != "step_s"}}
        line.update(tokens_seen=state.tokens_seen, tokens_per_s=tokens_per_s, elapsed_s=state.elapsed_s)
        epoch = getattr(self.stage.source, "epoch", None)
        if epoch is not None:
            line["epoch"] = epoch
        mfu = self.mfu(tokens_per_s)
        if mfu is not None:
            line["mfu"] = mfu
        line.update(self.stage.log_extras())
        self.write_line(line)

    def write_line(self, line: dict) -> None:
        """A metrics.jsonl line, its figures to TensorBoard and W&B too (the main process's)."""
        if self.log is not None:
            self.log.write(line)
            self.trackers.record(line)

    def mfu(self, tokens_per_s: float) -> float | None:
        peak = peak_flops(self.rt.device, self.rt.precision.dtype)
        flops = self.stage.flops_per_token()
        if peak is None or flops is None:
            return None
        return flops * tokens_per_s / (peak * self.rt.dist.world_size)

    # --- evaluation, early stopping, checkpoints ---------------------------------------------------

    def evaluate(self) -> dict:
        state = self.state
        self.interval.pause()
        with self.gathered(frozen=True):  # an evaluation compares the policy with its reference, weight for weight
            self.model.eval()
            with torch.no_grad(), self.rt.precision.autocast():
                metrics = self.stage.evaluate(self.model)
            self.model.train()
            samples = self.stage.samples(self.model) if self.is_main else None  # gathered: no collective calls
        state.last_eval_step = state.step
        state.last_metrics = metrics
        improved = self.track_best(metrics)
        if self.is_main:
            if samples is not None:
                self.samples_log.write({"step": state.step, "samples": samples})
                self.trackers.samples(state.step, samples)
            self.write_line({"kind": "eval", "step": state.step, "tokens_seen": state.tokens_seen, **metrics})
            self.say(f"step {state.step}: " + ", ".join(f"{k} {format_metric(v)}" for k, v in metrics.items() if not isinstance(v, dict)))
        saves_best = improved and self.cfg.checkpoint.keep_best and state.step > 0
        if self.items_log is not None and (items := self.stage.eval_items()):
            # before the save: a kill between the two leaves entries newer than the checkpoint, which resume drops
            self.items_log.write(state.step, items, ckpt.step_dir_name(state.step) if saves_best else None)
        if saves_best:
            self.save(best=True)
        self.interval.resume()
        return metrics

    def track_best(self, metrics: dict) -> bool:
        name, state = self.watch_metric, self.state
        value = metrics.get(name)
        if value is None or not math.isfinite(value):
            return False
        sign = 1.0 if self.watch_mode == "min" else -1.0
        delta = self.cfg.train.early_stop_min_delta
        if state.best_value is None or sign * (state.best_value - value) > delta:
            state.best_value = value
            state.evals_since_best = 0
            return True
        state.evals_since_best += 1
        return False

    def reached_target(self, value: float | None) -> bool:
        """The latest evaluation's own figure, not the best so far: early_stop_min_delta must not hide a crossing."""
        target = self.cfg.train.target
        return value is not None and (value <= target if self.watch_mode == "min" else value >= target)

    def save(self, best: bool = False) -> Path:
        state = self.state
        if best:
            state.best_checkpoint = ckpt.step_dir_name(state.step)
        if state.last_save_step == state.step:
            if best and self.is_main:
                self.write_best()
            return self.checkpoints / ckpt.step_dir_name(state.step)
        self.interval.pause()
        folder = self.checkpoints / ckpt.step_dir_name(state.step)
        self.check_finite_weights()
        rng_by_rank = from_every(ckpt.rng_state(), self.rt.dist)
        if self.is_main:
            self.trackers.flush()
        state.last_save_step = state.step
        if self.sharded:
            folder = sharded_checkpoint.save(self.checkpoints, state.step, self.model, self.optimizer, self.rt.dist, self.rt.device,
                                             lambda weights: self.contents(rng_by_rank, weights))
        elif self.is_main:
            folder = ckpt.save_checkpoint(self.checkpoints, state.step, self.contents(rng_by_rank))
        if self.is_main:
            if best:
                self.write_best()
            protect = {state.best_checkpoint} if state.best_checkpoint else set()
            ckpt.prune(self.checkpoints, self.cfg.checkpoint.keep_last, protect)
        self.interval.resume()
        return folder

    def contents(self, rng_by_rank: list[dict] | None, weights: tuple[dict, dict] | None = None) -> ckpt.CheckpointContents:
        state = self.state
        return ckpt.CheckpointContents(
            model=None if weights is not None else self.model,
            weights=weights,
            frozen=self.frozen,
            trainer_state=self.trainer_state(rng_by_rank, with_optimizer=weights is None),
            meta={**self.stage.checkpoint_meta(), "stage": self.stage.name, "step": state.step, "tokens_seen": state.tokens_seen,
                  "precision": self.rt.precision.describe(), "metrics": state.last_metrics},
            config_yaml=dump_yaml(self.cfg),
            tokenizer_json=self.tokenizer_json,
        )

    def write_best(self) -> None:
        record = {"checkpoint": self.state.best_checkpoint, "metric": self.watch_metric, "value": self.state.best_value}
        write_json(self.run_dir / "best.json", record)

    def trainer_state(self, rng_by_rank: list[dict] | None = None, with_optimizer: bool = True) -> dict:
        """The loop's state; a sharded run's optimizer state is in the shards instead."""
        state = {
            "loop": dataclasses.asdict(self.state),
            "source": self.stage.source.state_dict(),
            "rng": ckpt.rng_state(),
        }
        if with_optimizer:
            state["optimizer"] = self.optimizer.state_dict()
        if rng_by_rank is not None:
            state["rng_by_rank"] = rng_by_rank
        return state

    def check_finite_weights(self) -> None:
        """Every process checks the weights it holds, and all refuse together."""
        bad = sharding.first_nonfinite(self.model) if (self.is_main or self.sharded) else None
        if any_across(bad is not None, self.rt.dist, self.rt.device):
            raise TrainingError(f"refusing to save non-finite weights ({bad or 'on another process'}); the last good checkpoint is intact")

    # --- stopping ----------------------------------------------------------------------------------

    def stop_reason(self, guard: SignalGuard) -> str | None:
        cfg, state = self.cfg.train, self.state
        reason = None
        epoch = getattr(self.stage.source, "epoch", None)
        if state.step >= self.total_steps:
            reason = "max_steps"
        elif cfg.max_tokens and state.tokens_seen >= cfg.max_tokens:
            reason = "max_tokens"
        elif cfg.max_time_s and state.elapsed_s >= cfg.max_time_s:
            reason = "max_time"
        elif cfg.epochs and epoch is not None and epoch >= cfg.epochs:
            reason = "epochs"
        elif cfg.early_stop_patience and state.evals_since_best >= cfg.early_stop_patience:
            reason = "early_stop"
        elif cfg.target and self.reached_target(state.last_metrics.get(self.watch_metric)):
            reason = "target"
        if any_across(guard.received is not None, self.rt.dist, self.rt.device):
            reason = f"interrupted:{guard.received or 'peer'}"
        if self.rt.dist.enabled:  # every rank must stop at the same step
            stop = any_across(reason is not None, self.rt.dist, self.rt.device)
            reason = reason or ("peer" if stop else None)
        return reason

    def finish(self, reason: str) -> TrainResult:
        state = self.state
        if not reason.startswith("interrupted") and state.last_eval_step != state.step:
            self.evaluate()
        self.save()
        result = TrainResult(self.run_dir, state.step, reason, state.best_checkpoint, state.last_metrics, state.elapsed_s, self.total_steps)
        if self.is_main and not result.interrupted:
            final = {"checkpoint": ckpt.step_dir_name(state.step), "step": state.step, "total_steps": self.total_steps, "reason": reason,
                     "ending": result.ending, "cut_short": result.cut_short, "best_checkpoint": state.best_checkpoint,
                     "tokens_seen": state.tokens_seen, "elapsed_s": state.elapsed_s, "precision": self.rt.precision.describe(),
                     "metrics": state.last_metrics}
            write_json(self.run_dir / "final.json", final)
        if result.interrupted:
            self.say(f"{result.ending}; saved {self.checkpoints / ckpt.step_dir_name(state.step)}; continue with --resume")
        return result

    def say(self, text: str) -> None:
        if not self.is_main:
            return
        line = f"[{self.stage.name}] {text}"
        if getattr(self, "progress", None) is not None:
            self.progress.write(line)  # above the bar, not through it
        else:
            print(line, flush=True)


def accumulation_steps(cfg: RunConfig) -> int:
    if not cfg.train.tokens_per_step:
        return 1
    per_micro = cfg.train.batch_size * cfg.model.block_size
    return max(1, round(cfg.train.tokens_per_step / per_micro))


def maybe_no_sync(model: nn.Module, sync: bool):
    """Gradients are reduced across processes only on the last micro-batch of a step (DDP and FSDP)."""
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2's root sets it for every unit below it
        model.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()
    if sync or not hasattr(model, "no_sync"):
        return contextlib.nullcontext()
    return model.no_sync()


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list):
        return [to_device(v, device) for v in batch]
    return batch


def format_metric(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
