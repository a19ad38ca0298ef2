"""Typed config schemas for every stage, loaded from YAML with `a.b=c` command-line overrides.

A config is a tree of dataclasses. Loading walks the YAML mapping against the tree, so an unknown key,
a value of the wrong type or a missing file fails at once with one line naming the file and the dotted
key, with a close match suggested where one exists. Each dataclass then checks its own values (ranges,
choices, relations between its fields) as it is built, so a value outside what the code supports fails
the same way, before any data or model loads.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from llm import stage_table
from llm.errors import ConfigError
from llm.run_files import write_text
from llm.settings_checks import (
    AT_LEAST_1,
    BELOW_1,
    CONVERSATION_FORMATS,
    DTYPE_CHOICES,
    FRACTION,
    LORA_TARGETS,
    NON_NEGATIVE,
    ON_ERROR,
    POSITIVE,
    PREFERENCE_FORMATS,
    REWARD_SOURCES,
    STYLES,
    BadValue,
    Checked,
    Range,
    check_choices,
    check_device,
    check_filled,
    check_kinds,
    check_ranges,
    check_raters,
    check_reward_sources,
    check_sampling,
    check_sources,
)
from llm.tokenizer import MIN_VOCAB_SIZE, SPECIAL_TOKENS

PREFER_STYLES = ("", *STYLES)  # "": the rater ranks by correctness only


@dataclass
class ModelConfig(Checked):
    vocab_size: int = 0  # 0: taken from the tokenizer
    block_size: int = 256  # context length in tokens
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.0
    bias: bool = False
    norm: str = "rmsnorm"  # rmsnorm | layernorm
    norm_eps: float = 0.0  # 0: 1e-6 for rmsnorm, 1e-5 (PyTorch's default) for layernorm
    mlp: str = "swiglu"  # swiglu | gelu | gelu_tanh (GPT-2's tanh approximation)
    mlp_hidden: int = 0  # 0: 4 * n_embd for gelu, 8/3 * n_embd rounded up to 64 for swiglu
    position: str = "rope"  # rope | learned
    rope_theta: float = 10000.0
    tie_embeddings: bool = True
    # add a learned map of the previous token's embedding to each token's (docs/design.md, "Token shift"):
    # one attention layer can then match a token's predecessor, which is what copying needs
    token_shift: bool = False
    section = "model."

    def check(self) -> None:
        check_ranges(self, {"vocab_size": NON_NEGATIVE, "block_size": AT_LEAST_1, "n_layer": AT_LEAST_1, "n_head": AT_LEAST_1,
                            "n_embd": AT_LEAST_1, "dropout": BELOW_1, "rope_theta": POSITIVE, "norm_eps": NON_NEGATIVE,
                            "mlp_hidden": NON_NEGATIVE})
        check_choices(self, {"norm": ("rmsnorm", "layernorm"), "mlp": ("swiglu", "gelu", "gelu_tanh"), "position": ("rope", "learned")})
        if self.n_embd % self.n_head:
            raise BadValue("n_embd", f"must be divisible by model.n_head ({self.n_head})", self.n_embd)
        if self.position == "rope" and (self.n_embd // self.n_head) % 2:
            raise BadValue("n_embd", f"must be a multiple of 2 * model.n_head ({2 * self.n_head}): rotary positions need an even head size",
                           self.n_embd)


@dataclass
class TokenizerConfig(Checked):
    vocab_size: int = 4096
    min_frequency: int = 2
    path: str = ""  # an existing tokenizer.json to use instead of training one
    section = "tokenizer."

    def check(self) -> None:
        if not self.vocab_size >= MIN_VOCAB_SIZE:
            raise BadValue("vocab_size", f"must be at least {MIN_VOCAB_SIZE} (256 byte tokens + {len(SPECIAL_TOKENS)} special tokens)",
                           self.vocab_size)
        check_ranges(self, {"min_frequency": NON_NEGATIVE})


@dataclass
class DataConfig(Checked):
    path: str = "builtin"  # builtin | a text file | a folder of .txt | a .jsonl | a datasets name or folder
    text_field: str = "text"  # field read from JSONL records and datasets
    split: str = "train"  # split read from a datasets name
    val_fraction: float = 0.1
    chunk_chars: int = 16384  # a single long text is cut into documents of about this size
    cache_dir: str = ".cache/llm"  # tokenizers and token files, keyed by corpus + tokenizer
    num_proc: int = 0  # processes for datasets.map; 0 picks by corpus size
    # share of training windows in which a span of their own tokens is written again further on (llm/data/windows.py):
    # teaches a small model to copy what it has seen before; validation windows are never changed
    repeat_fraction: float = 0.0
    section = "data."

    def check(self) -> None:
        check_filled(self, ("path", "text_field", "split", "cache_dir"))
        # pre-training needs documents on both sides of the split
        check_ranges(self, {"val_fraction": Range(0, 1, "()"), "chunk_chars": AT_LEAST_1, "num_proc": NON_NEGATIVE,
                            "repeat_fraction": FRACTION})


@dataclass
class OptimConfig(Checked):
    name: str = "adamw"  # adamw | muon (Muon for the blocks' 2-D matrices, AdamW at `lr` for the rest)
    lr: float = 1e-3  # peak learning rate (of AdamW's parameters under muon)
    min_lr_ratio: float = 0.1  # the schedule ends at lr * min_lr_ratio
    schedule: str = "cosine"  # cosine | wsd | constant
    warmup_steps: int = 100
    decay_fraction: float = 0.2  # wsd: the last fraction of steps decays linearly
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0 disables clipping
    fused: str | bool = "auto"  # auto | true | false (auto: fused AdamW on CUDA and the CPU)
    # name=muon: the transformer blocks' matrices; the schedule scales this peak as it scales `lr`
    muon_lr: float = 0.02
    muon_momentum: float = 0.95
    muon_weight_decay: float = 0.0
    section = "optim."

    def check(self) -> None:
        # torch's AdamW takes betas in [0, 1); a negative grad_clip would silently mean no clipping
        check_ranges(self, {"lr": POSITIVE, "min_lr_ratio": FRACTION, "warmup_steps": NON_NEGATIVE, "decay_fraction": Range(0, 1, "(]"),
                            "weight_decay": NON_NEGATIVE, "beta1": BELOW_1, "beta2": BELOW_1,
                            "eps": NON_NEGATIVE, "grad_clip": NON_NEGATIVE})
        check_choices(self, {"schedule": ("cosine", "wsd", "constant"), "name": ("adamw", "muon")})
        check_ranges(self, {"muon_lr": POSITIVE, "muon_momentum": BELOW_1, "muon_weight_decay": NON_NEGATIVE})
        if self.fused not in ("auto", True, False):
            raise BadValue("fused", "must be one of auto, true, false", self.fused)


@dataclass
class TrainConfig(Checked):
    batch_size: int = 16  # rows per micro-batch
    tokens_per_step: int = 0  # 0: one micro-batch per step; else accumulate micro-batches up to this
    max_steps: int = 1000
    max_tokens: int = 0  # 0: no limit
    max_time_s: float = 0.0  # 0: no limit
    epochs: float = 0.0  # 0: no limit; stages with a finite dataset stop after this many passes
    eval_every: int = 100
    eval_batches: int = 20
    log_every: int = 10
    early_stop_patience: int = 0  # evaluations without improvement before stopping; 0 disables
    early_stop_min_delta: float = 0.0
    early_stop_metric: str = ""  # an evaluation metric to watch ("" = the stage's own, e.g. val_loss)
    early_stop_mode: str = ""  # min | max ("" = the stage's own)
    # stop at the first evaluation whose watched metric (early_stop_metric) reaches this value, e.g.
    # train.target=2.71 train.early_stop_metric=val_bpb; 0 = off. For time-to-quality measurements
    target: float = 0.0
    eval_at_start: bool = True  # evaluate before the first step: the baseline every later figure is compared with
    max_nonfinite: int = 5  # non-finite losses skipped before the run aborts
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: str = "auto"  # auto | float32 | bfloat16 (auto: bf16 where the GPU or CPU runs it natively, else fp32)
    compile: bool = False
    # under torchrun: ddp keeps a whole model, gradients and optimizer state on every process; fsdp (FSDP2)
    # shards them per transformer block, and checkpoints are written as shards each process saves
    parallel: str = "ddp"
    activation_checkpointing: bool = False  # recompute each block's activations in backward: less memory, ~1/3 more compute
    deterministic: bool = False  # torch.use_deterministic_algorithms, for bitwise resume on GPU
    seed: int = 1337
    progress: bool = True
    section = "train."

    def check(self) -> None:
        # seed too: numpy's generators, which draw the batches, refuse a negative one
        zero_or_more = ("tokens_per_step", "max_steps", "max_tokens", "max_time_s", "epochs", "eval_every", "log_every",
                        "early_stop_patience", "early_stop_min_delta", "max_nonfinite", "seed")
        check_ranges(self, {"batch_size": AT_LEAST_1, "eval_batches": AT_LEAST_1, **dict.fromkeys(zero_or_more, NON_NEGATIVE)})
        if self.dtype == "float16":  # fp16 gradients underflow without loss scaling, which the loop does not do
            raise BadValue("dtype", "float16 training needs a gradient scaler, which this loop has not; use bfloat16 or auto", self.dtype)
        check_choices(self, {"early_stop_mode": ("", "min", "max"), "dtype": DTYPE_CHOICES, "parallel": ("ddp", "fsdp")})
        check_device("device", self.device)


@dataclass
class CheckpointConfig(Checked):
    save_every: int = 500  # steps; 0 saves only at the end and on a signal
    keep_last: int = 2
    keep_best: bool = True
    section = "checkpoint."

    def check(self) -> None:
        # keep_last 0 would delete the checkpoint just written, leaving nothing to resume from
        check_ranges(self, {"save_every": NON_NEGATIVE, "keep_last": AT_LEAST_1})


@dataclass
class SamplingConfig(Checked):
    prompts: list[str] = field(default_factory=lambda: ["The", "A function"])
    max_new_tokens: int = 64
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 1.0
    seed: int = 0
    section = "sampling."

    def check(self) -> None:
        check_filled(self, ("prompts",))  # the samples written at each evaluation continue these
        check_sampling(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)


@dataclass
class LogConfig(Checked):
    """Where the figures of metrics.jsonl also go, for a person to watch and compare runs (llm/train/trackers.py)."""

    tensorboard: str | bool = "auto"  # auto: event files in the run folder when tensorboard is installed | true | false
    wandb: bool = False  # a W&B run per stage; W&B's own variables set the rest (WANDB_PROJECT, WANDB_MODE=offline, ...)
    section = "log."

    def check(self) -> None:
        if self.tensorboard not in ("auto", True, False):
            raise BadValue("tensorboard", "must be one of auto, true, false", self.tensorboard)


@dataclass
class RunConfig(Checked):
    """Fields shared by every stage's config."""

    name: str = "run"
    out_dir: str = "runs"  # the run folder is <out_dir>/<name>
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    log: LogConfig = field(default_factory=LogConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    def check(self) -> None:
        check_filled(self, ("name", "out_dir"))  # an empty name would make out_dir itself the run folder

    def missing_input(self) -> str:
        """What a run of this stage lacks to start (a required key, with an example), or "": checked when a stage is
        launched, before its run folder exists; not when the settings are built, so defaults stay constructible."""
        return ""


@dataclass
class LoRAConfig(Checked):
    """Low-rank adapters (llm/lora.py): the base weights frozen, only rank-`rank` adapters (and a reward head) train."""

    rank: int = 0  # 0: full fine-tuning
    alpha: float = 16.0  # an adapter's output is scaled by alpha / rank, as PEFT does
    dropout: float = 0.0  # on the adapters' input only
    targets: list[str] = field(default_factory=lambda: ["all"])  # attention | mlp | all, or layers by name: qkv, proj, up, down
    section = "lora."

    def check(self) -> None:
        check_ranges(self, {"rank": NON_NEGATIVE, "alpha": POSITIVE, "dropout": BELOW_1})
        check_filled(self, ("targets",))
        for target in self.targets:
            if target not in LORA_TARGETS:
                raise BadValue("targets", f"has {target!r}, which matches no layer (choose from {', '.join(LORA_TARGETS)})", self.targets)


@dataclass
class FineTuningConfig(RunConfig):
    """The settings every stage after pre-training shares."""

    lora: LoRAConfig = field(default_factory=LoRAConfig)


@dataclass
class PretrainConfig(RunConfig):
    name: str = "pretrain"
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def check(self) -> None:
        super().check()
        # any tokenizer has MIN_VOCAB_SIZE ids; not tokenizer.vocab_size, which a small corpus may not reach (the
        # stage then sets model.vocab_size to the size trained)
        if 0 < self.model.vocab_size < MIN_VOCAB_SIZE:
            raise BadValue("model.vocab_size", f"must be 0 (the tokenizer's size) or at least {MIN_VOCAB_SIZE}", self.model.vocab_size)


@dataclass
class SourceConfig(Checked):
    path: str = "builtin"  # builtin | a .jsonl/.json(.gz) file | a saved dataset folder | a datasets name
    format: str = "auto"
    split: str = "train"  # split of a datasets name or saved DatasetDict
    max_records: int = 0  # 0: all

    def check(self) -> None:
        check_filled(self, ("path", "split"))
        check_choices(self, {"format": ("auto", *dict.fromkeys(CONVERSATION_FORMATS + PREFERENCE_FORMATS))})
        check_ranges(self, {"max_records": NON_NEGATIVE})


@dataclass
class StyleMix(Checked):
    """Shares of the built-in demonstrations written in each reply style (llm/data/styles.py): all correct,
    so SFT learns the mix, and only a preference can choose among them."""

    plain: float = 0.2
    filler: float = 0.4
    disclaimer: float = 0.4
    section = "data.styles."

    def check(self) -> None:
        check_ranges(self, dict.fromkeys(("plain", "filler", "disclaimer"), NON_NEGATIVE))
        if not sum(self.weights()) > 0:
            raise BadValue("plain", "and the other style shares must not all be 0", self.plain)

    def weights(self) -> tuple[float, float, float]:
        return self.plain, self.filler, self.disclaimer


@dataclass
class ChatDataConfig(Checked):
    sources: list[SourceConfig] = field(default_factory=lambda: [SourceConfig()])
    on_error: str = "skip"  # skip (and count) or raise on a malformed record
    val_fraction: float = 0.05  # held out from file sources; built-in tasks have their own held-out split
    builtin_train: int = 20000  # built-in training examples to generate
    builtin_val: int = 300
    builtin_kinds: list[str] = field(default_factory=list)  # [] = every kind
    styles: StyleMix = field(default_factory=StyleMix)  # how the built-in demonstrations are written
    seed: int = 0
    section = "data."

    def check(self) -> None:
        check_sources("sources", self.sources, CONVERSATION_FORMATS)
        check_choices(self, {"on_error": ON_ERROR})
        check_ranges(self, {"val_fraction": BELOW_1, "builtin_train": NON_NEGATIVE, "builtin_val": NON_NEGATIVE})
        check_kinds("builtin_kinds", self.builtin_kinds)


@dataclass
class TaskEvalConfig(Checked):
    n_tasks: int = 200  # held-out built-in tasks answered greedily and checked at each evaluation; 0 = off
    max_new_tokens: int = 32
    prefer_style: str = "plain"  # the rater's preferred style, for the best-possible share ("" = correctness only)
    unseen: int = 200  # held-out tasks on each unseen axis: new words, new phrasings, both (llm/data/builtin_tasks.py); 0 = off
    prompts: list[str] = field(default_factory=lambda: ["Reverse the words: red green blue", "What is 7 + 5?", "What is Python?"])
    section = "eval."

    def check(self) -> None:
        check_ranges(self, {"n_tasks": NON_NEGATIVE, "unseen": NON_NEGATIVE})
        check_sampling(max_new_tokens=self.max_new_tokens)
        check_choices(self, {"prefer_style": PREFER_STYLES})


@dataclass
class SFTConfig(FineTuningConfig):
    name: str = "sft"
    init_from: str = ""  # a pre-training run folder or checkpoint; its model config and tokenizer are used

    def missing_input(self) -> str:
        return "" if self.init_from else ("key 'init_from' is required: the pre-training run to fine-tune "
                                          "(e.g. init_from=runs/pretrain-tiny)")
    data: ChatDataConfig = field(default_factory=ChatDataConfig)
    eval: TaskEvalConfig = field(default_factory=TaskEvalConfig)


@dataclass
class PreferenceDataConfig(Checked):
    sources: list[SourceConfig] = field(default_factory=lambda: [SourceConfig()])
    on_error: str = "skip"
    val_fraction: float = 0.1  # held out from file sources; built-in pairs have their own held-out split
    builtin_train: int = 8000
    builtin_val: int = 400
    builtin_kinds: list[str] = field(default_factory=list)  # [] = every kind
    # source builtin_samples: replies sampled from the starting model, ranked by the task checker
    sampled_train: int = 3000  # built-in prompts to sample replies for
    sampled_val: int = 300
    samples_per_prompt: int = 4
    sample_temperature: float = 1.0
    sample_max_new_tokens: int = 32
    prefer_style: str = "plain"  # the built-in rater ranks replies: correct first, then this style ("" = correctness only)
    unseen_pairs: int = 200  # held-out built-in pairs on each unseen axis (new words, new phrasings, both); 0 = off
    styles: StyleMix = field(default_factory=StyleMix)  # styles of the built-in pairs' replies, as in the SFT data
    # source rankings:FILE: a ranking's pairs share one batch slot and one unit of weight (InstructGPT);
    # false trains on them as if each comparison had been given alone
    ranking_groups: bool = True
    # source rankings:FILE: whose rankings: all, majority (per prompt, each pair in the order most raters gave),
    # or raters' names
    raters: list[str] = field(default_factory=lambda: ["all"])
    seed: int = 0
    section = "data."

    def check(self) -> None:
        check_sources("sources", self.sources, PREFERENCE_FORMATS)
        check_raters("raters", self.raters, self.sources)
        check_choices(self, {"on_error": ON_ERROR})
        counts = ("builtin_train", "builtin_val", "sampled_train", "sampled_val", "unseen_pairs")
        check_ranges(self, {"val_fraction": BELOW_1, "samples_per_prompt": AT_LEAST_1, **dict.fromkeys(counts, NON_NEGATIVE)})
        check_kinds("builtin_kinds", self.builtin_kinds)
        check_sampling("sample_", temperature=self.sample_temperature, max_new_tokens=self.sample_max_new_tokens)
        check_choices(self, {"prefer_style": PREFER_STYLES})


@dataclass
class RewardConfig(FineTuningConfig):
    name: str = "reward"
    init_from: str = ""  # an SFT run folder or checkpoint: the reward model's trunk
    data: PreferenceDataConfig = field(default_factory=PreferenceDataConfig)
    margin: float = 0.0  # loss -logsigmoid(r_chosen - r_rejected - margin)
    center_coef: float = 0.01  # penalty on (r_chosen + r_rejected)^2 that keeps rewards centred on zero

    def missing_input(self) -> str:
        return "" if self.init_from else ("key 'init_from' is required: the SFT run the reward model starts from "
                                          "(e.g. init_from=runs/sft-tiny)")

    def check(self) -> None:
        super().check()
        # a negative margin or coefficient would reward a wrong ranking or rewards growing without bound
        check_ranges(self, {"margin": NON_NEGATIVE, "center_coef": NON_NEGATIVE})


@dataclass
class PolicyEvalConfig(Checked):
    n_prompts: int = 200  # held-out built-in tasks: true exact match, reward score, win rate, KL
    max_new_tokens: int = 32
    kinds: list[str] = field(default_factory=list)  # task kinds to evaluate on ([] = every kind)
    n_samples: int = 8  # prompts whose SFT and policy replies are written side by side to the run folder
    reward_model: str = ""  # a reward run to judge replies by (PPO uses its own reward model when empty)
    prefer_style: str = "plain"  # the rater's preferred style, for the best-possible share ("" = correctness only)
    unseen: int = 200  # held-out tasks on each unseen axis: new words, new phrasings, both (llm/data/builtin_tasks.py); 0 = off
    pass_k: int = 0  # > 0: sample this many replies per prompt at temperature 1 and report pass@1 and pass@k on new_both
    pass_prompts: int = 100  # of the new_both tasks, the first this many
    section = "eval."

    def check(self) -> None:
        check_choices(self, {"prefer_style": PREFER_STYLES})
        check_ranges(self, {"n_prompts": NON_NEGATIVE, "n_samples": NON_NEGATIVE, "unseen": NON_NEGATIVE,
                            "pass_k": NON_NEGATIVE, "pass_prompts": NON_NEGATIVE})
        check_sampling(max_new_tokens=self.max_new_tokens)
        check_kinds("kinds", self.kinds)


@dataclass
class RewardSource(Checked):
    """One term of PPO's reward: the score is the sum of weight * reward over ppo.rewards."""

    source: str = "model"  # model: the reward model's score; checker: 1.0 for a finished reply the task checker accepts, else 0.0
    weight: float = 1.0

    def check(self) -> None:
        check_choices(self, {"source": REWARD_SOURCES})
        check_ranges(self, {"weight": NON_NEGATIVE})


@dataclass
class PPOSettings(Checked):
    prompts: list[SourceConfig] = field(default_factory=lambda: [SourceConfig()])  # prompts to roll out on
    builtin_prompts: int = 20000
    builtin_kinds: list[str] = field(default_factory=list)  # [] = every kind
    # > 0: sample samples_per_prompt replies from the SFT model to this many built-in prompts and roll out only on those
    # it answers right sometimes but not always (RL at the edge of its competence)
    edge_candidates: int = 0
    rollout_batch: int = 64  # prompts per PPO iteration in each process (under torchrun the processes share their rollouts)
    samples_per_prompt: int = 1  # replies sampled per prompt; rloo, grpo and dr_grpo need 2 or more
    # gae: critic + GAE (PPO); rloo: each reply's return minus the mean of its group's others, no critic; grpo: each reply's
    # score minus its group's mean over the group's standard deviation, less its KL penalty minus the group's mean one, no critic;
    # dr_grpo: as grpo, not divided by the deviation (Dr. GRPO)
    advantage: str = "gae"
    rewards: list[RewardSource] = field(default_factory=lambda: [RewardSource()])  # the score: weighted sum of these sources
    minibatch: int = 16  # rollouts per optimizer step in each process
    epochs: int = 2  # passes over each rollout batch
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_k: int = 0
    kl_coef: float = 0.05  # initial coefficient of the per-token KL penalty
    kl_estimator: str = "k1"  # k1: log p - log p_ref; k3: (r - 1) - log r with r = p_ref / p (Schulman)
    adaptive_kl: bool = True  # move kl_coef toward target_kl (Ziegler et al. 2019)
    target_kl: float = 2.0  # KL per reply the adaptive controller steers to (nats, summed over tokens)
    kl_horizon: int = 10000
    gamma: float = 1.0
    lam: float = 0.95
    clip_ratio: float = 0.2
    clip_ratio_high: float = 0.0  # > 0: the ratio's upper clip is 1 + this instead of 1 + clip_ratio (DAPO's clip-higher, 0.28)
    # the policy loss's divisor: token: every reply token of the step (DAPO's token-level mean); constant: rows times
    # max_new_tokens (Dr. GRPO), so a long reply's tokens weigh as much as a short one's
    loss_norm: str = "token"
    clip_value: float = 0.2
    vf_coef: float = 0.1
    whiten_advantages: bool = True
    missing_end_penalty: float = 1.0  # subtracted from the score of a reply that hit the length limit
    critic_init: str = "reward"  # reward: the critic starts as the reward model; policy: as the SFT trunk
    ptx_coef: float = 0.0  # > 0: add this times the LM loss on built-in SFT conversations (InstructGPT's PPO-ptx)
    ptx_batch: int = 16  # SFT conversations per minibatch and process for the ptx loss
    max_kl: float = 20.0  # guardrail: stop when the mean KL per reply passes this
    max_ratio: float = 20.0  # guardrail: stop when a probability ratio passes this
    section = "ppo."

    def check(self) -> None:
        check_sources("prompts", self.prompts, PREFERENCE_FORMATS)
        check_kinds("builtin_kinds", self.builtin_kinds)
        check_sampling(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_k=self.top_k)
        check_reward_sources("rewards", self.rewards, self.prompts)
        check_choices(self, {"advantage": ("gae", "rloo", "grpo", "dr_grpo"), "kl_estimator": ("k1", "k3"),
                             "critic_init": ("reward", "policy"), "loss_norm": ("token", "constant")})
        one_or_more = ("rollout_batch", "samples_per_prompt", "minibatch", "epochs", "kl_horizon", "ptx_batch")
        zero_or_more = ("builtin_prompts", "edge_candidates", "kl_coef", "vf_coef", "missing_end_penalty", "ptx_coef", "clip_ratio_high")
        # target_kl divides the KL error; a ratio starts at 1, so max_ratio <= 1 would stop the first step
        check_ranges(self, {**dict.fromkeys(one_or_more, AT_LEAST_1), **dict.fromkeys(zero_or_more, NON_NEGATIVE),
                            **dict.fromkeys(("target_kl", "clip_ratio", "clip_value", "max_kl"), POSITIVE),
                            "gamma": FRACTION, "lam": FRACTION, "max_ratio": Range(1, ends="(]")})
        if self.advantage != "gae" and self.samples_per_prompt < 2:
            raise BadValue("samples_per_prompt", f"must be 2 or more with ppo.advantage={self.advantage}, "
                                                 "which compares replies to the same prompt",
                           self.samples_per_prompt)

    def reward_model_use(self) -> str:
        """Why a run must load a reward model ("" when it need not): a model reward source, or a critic started from it."""
        if any(r.source == "model" for r in self.rewards):
            return "ppo.rewards has a model source"
        if self.advantage == "gae" and self.critic_init == "reward":
            return "ppo.critic_init=reward starts the critic from it"
        return ""


@dataclass
class PPOConfig(FineTuningConfig):
    name: str = "ppo"
    policy: str = ""  # the SFT run folder or checkpoint: the policy and the frozen reference start here
    reward_model: str = ""  # the reward run folder or checkpoint
    ppo: PPOSettings = field(default_factory=PPOSettings)
    eval: PolicyEvalConfig = field(default_factory=PolicyEvalConfig)

    def missing_input(self) -> str:
        if not self.policy:
            return "key 'policy' is required: the SFT run to optimise (e.g. policy=runs/sft-tiny reward_model=runs/reward-tiny)"
        if not self.reward_model and (why := self.ppo.reward_model_use()):
            return f"key 'reward_model' is required: {why} (e.g. reward_model=runs/reward-tiny)"
        return ""


@dataclass
class DPOSettings(Checked):
    beta: float = 0.1
    loss: str = "sigmoid"  # sigmoid (DPO) | ipo | (label-smoothed) conservative via label_smoothing
    label_smoothing: float = 0.0  # > 0: conservative DPO, the labels are flipped with this probability
    nll_coef: float = 0.0  # > 0: add this times the chosen reply's per-token NLL (RPO; TRL's rpo_alpha)
    section = "dpo."

    def check(self) -> None:
        # at label_smoothing 0.5 the flipped and true labels cancel and nothing is learned
        check_ranges(self, {"beta": POSITIVE, "label_smoothing": Range(0, 0.5, "[)"), "nll_coef": NON_NEGATIVE})
        check_choices(self, {"loss": ("sigmoid", "ipo")})


@dataclass
class DPOConfig(FineTuningConfig):
    name: str = "dpo"
    init_from: str = ""  # the SFT run folder or checkpoint: the policy and the frozen reference
    data: PreferenceDataConfig = field(default_factory=PreferenceDataConfig)
    dpo: DPOSettings = field(default_factory=DPOSettings)
    eval: PolicyEvalConfig = field(default_factory=PolicyEvalConfig)

    def missing_input(self) -> str:
        return "" if self.init_from else "key 'init_from' is required: the SFT run to optimise (e.g. init_from=runs/sft-tiny)"


@dataclass
class StageRef(Checked):
    config: str = ""  # the stage's YAML under configs/
    overrides: list[str] = field(default_factory=list)  # key=value applied on top, like on the command line
    reference_s: float = 0.0  # seconds the stage took on the reference machine (the README's): scales the time estimate

    def check(self) -> None:
        check_ranges(self, {"reference_s": NON_NEGATIVE})
        for i, text in enumerate(self.overrides):
            try:
                parse_override(text)
            except ConfigError:
                raise BadValue(f"overrides[{i}]", "must be key.sub=value", text) from None


@dataclass
class PipelineSettings(Checked):
    """A pipeline's own keys; PipelineConfig adds one StageRef per stage of the table (llm/stage_table.py)."""

    name: str = "tiny"
    out_dir: str = "runs"  # stages run in <out_dir>/<name>/<stage>
    stages: list[str] = field(default_factory=lambda: ["pretrain", "sft", "reward", "ppo", "dpo"])
    report: bool = True
    report_prompts: list[str] = field(default_factory=lambda: [
        "What is the first word in: value string file?",
        "Say module 3 times.",
        "Reverse the words: class object method",
        "How many words are in: path name type data?",
        "What is Python?",
    ])

    def check(self) -> None:
        check_filled(self, ("name", "out_dir", "stages"))
        unknown = [s for s in self.stages if s not in stage_table.NAMES]
        if unknown:
            raise BadValue("stages", f"has an unknown stage {unknown[0]!r} (choose from {', '.join(stage_table.NAMES)})", self.stages)
        for stage in self.stages:
            if not getattr(self, stage).config:
                raise BadValue(f"{stage}.config", f"must name the stage's YAML (e.g. configs/{stage}/tiny.yaml) "
                                                  f"while stages lists {stage}", "")


def stage_ref(name: str) -> Any:
    return field(default_factory=lambda: StageRef(f"configs/{name}/tiny.yaml"))


PipelineConfig = dataclasses.make_dataclass("PipelineConfig", [(s.name, StageRef, stage_ref(s.name)) for s in stage_table.STAGES],
                                            bases=(PipelineSettings,))
PipelineConfig.__module__ = __name__
# the schema of each folder under configs/
STAGE_SCHEMAS: dict[str, type] = {**{s.name: globals()[s.schema] for s in stage_table.STAGES}, "pipeline": PipelineConfig}

C = TypeVar("C")


def load_config(schema: type[C], path: str | Path | None, overrides: list[str] = ()) -> C:
    """Build `schema` from a YAML file (or defaults when path is None) and `a.b=c` overrides."""
    return build(schema, *raw_settings(path, overrides))


def raw_settings(path: str | Path | None, overrides: list[str]) -> tuple[dict[str, Any], str]:
    """The YAML mapping with the overrides set in it, and the name errors give its source by."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        raw = read_yaml_mapping(Path(path))
    for override in overrides:
        key, value = parse_override(override)
        set_dotted(raw, key, value)
    return raw, source


def load_stage_config(stage: str, path: str | Path | None, overrides: list[str] = ()) -> Any:
    """A stage's settings with its preset's keys fixed (another value for one is an error) and its inputs present:
    everything a launch checks before the run folder is touched."""
    spec = stage_table.spec(stage)
    raw, source = raw_settings(path, overrides)
    for key, value in spec.preset:
        if get_dotted(raw, key) not in (None, value):
            raise ConfigError(f"{source}: key '{key}' is {value} in llm {stage} (llm {spec.module} takes any); "
                              f"got {get_dotted(raw, key)!r}")
        set_dotted(raw, key, value)
    cfg = build(STAGE_SCHEMAS[stage], raw, source)
    if missing := cfg.missing_input():
        raise ConfigError(f"{source}: {missing}")
    return cfg


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of keys, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}': expected key.sub=value")
    try:
        parsed = yaml.safe_load(value) if value else ""
    except yaml.YAMLError:
        parsed = value
    return key, parsed


def get_dotted(tree: dict[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[leaf] = value


def build(schema: type[C], raw: dict[str, Any], source: str, prefix: str = "") -> C:
    """Instantiate a dataclass from a mapping, checking every key and type."""
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    hints = typing.get_type_hints(schema)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"{source}: unknown key '{dotted}'{suggest(dotted, schema, prefix)}")
        kwargs[key] = coerce(hints[key], value, source, dotted)
    try:
        return schema(**kwargs)
    except BadValue as exc:  # the dataclass names its own field; only here are the file and the full key known
        raise ConfigError(f"{source}: {exc.at(prefix)}") from None


def coerce(hint: Any, value: Any, source: str, dotted: str) -> Any:
    if dataclasses.is_dataclass(hint):
        if hint is SourceConfig and isinstance(value, str):  # data.sources=[builtin, rankings:feedback/x.jsonl]
            value = {"path": value}
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: key '{dotted}' is a section; set its fields as '{dotted}.<name>'")
        return build(hint, value, source, dotted + ".")
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(option, value, source, dotted)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        if isinstance(value, (str, int, float)) and item_hint is str:
            value = [str(value)]
        if not isinstance(value, list):
            raise type_error(source, dotted, "a list", value)
        return [coerce(item_hint, item, source, f"{dotted}[{i}]") for i, item in enumerate(value)]
    return coerce_scalar(hint, value, source, dotted)


def coerce_scalar(hint: Any, value: Any, source: str, dotted: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise type_error(source, dotted, "true or false", value)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise type_error(source, dotted, "an integer", value)
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:  # YAML 1.1 reads '1e-3' (no dot) as a string
                return float(value)
            except ValueError:
                pass
        raise type_error(source, dotted, "a number", value)
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise type_error(source, dotted, "a string", value)
    if hint is Any:
        return value
    raise ConfigError(f"{source}: key '{dotted}' has an unsupported type {hint}")


def type_error(source: str, dotted: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{source}: key '{dotted}' expects {expected}, got {value!r}")


def suggest(dotted: str, schema: type, prefix: str) -> str:
    candidates = [prefix + name for name in dotted_names(schema)]
    match = difflib.get_close_matches(dotted, candidates, n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def dotted_names(schema: type, prefix: str = "") -> list[str]:
    names = []
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        if not f.init:
            continue
        names.append(prefix + f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            names.extend(dotted_names(hints[f.name], f"{prefix}{f.name}."))
    return names


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def dump_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def save_config(config: Any, path: Path) -> None:
    write_text(path, dump_yaml(config))

