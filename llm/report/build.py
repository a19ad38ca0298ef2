"""A readable report of a pipeline run: runs/<name>/report.md, the same as a self-contained report.html, plots/*.png.

Built from the run folder alone (pipeline.json and each stage's metrics.jsonl, final.json, samples.jsonl,
eval_items.json, checkpoints' meta.json), so `llm report runs/<name>` can rebuild it at any time.
The report is first a list of blocks (heading, text, table, image, code), then rendered twice: markdown
and HTML.
"""

from __future__ import annotations

import itertools
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from llm import stage_table
from llm.errors import DataError, LLMError
from llm.eval.stats import paired_comparison
from llm.report import plots
from llm.report.render import Code, Heading, Image, Table, Text, to_html, to_markdown
from llm.run_files import read_json, read_jsonl, write_json, write_text

STAGES = stage_table.NAMES
# what each stage is judged by: the first of these metrics its evaluations carry
# the models answering the report's prompts side by side: (column, stage)
ANSWER_MODELS = tuple((s.label, s.name) for s in stage_table.STAGES if s.answers)
# each model on the held-out sets: (label, stage, which evaluation); base is SFT's step 0, the policies come after SFT
MODELS = (("base", "sft", "baseline"), ("SFT", "sft", "metrics"), *((s.label, s.name, "metrics") for s in stage_table.POLICIES))
PERCENT = {"exact_match", "sft_exact_match", "stop_rate", "val_accuracy", "win_rate", "val_rewards/accuracies", "accuracy",
           "best_possible", "sft_best_possible", "val_top1_best",
           *(f"{axis}/{key}" for axis in ("new_words", "new_phrasings", "new_both") for key in ("exact_match", "best_possible")),
           *(f"{axis}/val_accuracy" for axis in ("new_words", "new_phrasings", "new_both")),
           "new_words/seen_tokens_exact_match", "new_words/unseen_tokens_exact_match"}
# the held-out axes (llm/data/builtin_tasks.py), what a person's own prompt is most like first
AXES = (("new_both", "new words, new phrasings"), ("new_words", "new words"), ("new_phrasings", "new phrasings"),
        ("items", "built-in held-out"))
RUBRIC = ("The built-in rater (`llm/data/styles.py`) stands in for the person who ranks replies. Its rubric: a correct reply "
          "that ends by itself before any other; among those, the preferred style before the others. The demonstrations "
          "answer in three styles, all correct: plain (the answer alone), filler (\"Sure! ...\") and disclaimer "
          "(\"... (I may be wrong)\"); the rater prefers plain. Best-possible: correct, finished and plain.")
TRAIN_KEYS = ("loss", "lr", "grad_norm", "tokens_per_s", "kl_coef", "objective/kl", "objective/scores",
              "objective/entropy", "policy/clipfrac", "accuracy", "margin")
MAX_NEW_TOKENS = 32
SAMPLE_ROWS = 6
CELL_CHARS = 240


@dataclass
class Stage:
    name: str
    folder: Path
    entry: dict  # this stage's record in pipeline.json
    train: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    final: dict | None = None
    meta: dict | None = None  # the newest checkpoint's meta.json
    config: dict = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)
    data: dict | None = None  # corpus.json (pretrain) or data.json
    items: dict | None = None  # eval_items.json: per-prompt verdicts of step 0's and the latest evaluation

    @property
    def ran(self) -> bool:
        return self.folder.is_dir()

    @property
    def metrics(self) -> dict:
        """The final evaluation, or the newest one of a stage that has not finished."""
        if self.final is not None:
            return self.final.get("metrics") or {}
        return self.evals[-1] if self.evals else {}

    @property
    def baseline(self) -> dict:
        return next((e for e in self.evals if e.get("step") == 0), {})

    def status(self) -> str:
        if not self.ran:
            return f"not run ({self.entry['status']})" if self.entry.get("status") in ("pending", "skipped") else "not run"
        if self.entry.get("status") == "failed":
            return "failed"
        if self.final is not None:
            return self.final.get("ending") or f"done ({self.final.get('reason', '?')})"
        return f"not finished ({self.entry.get('status', 'no final.json')})"

    @property
    def precision(self) -> dict:
        """The dtype the stage actually trained in, and why (final.json, else the newest checkpoint)."""
        return (self.final or {}).get("precision") or (self.meta or {}).get("precision") or {}


def newest_meta(folder: Path) -> dict | None:
    metas = sorted((folder / "checkpoints").glob("step_*/meta.json"))
    return read_json(metas[-1]) if metas else None


def read_stage(run_dir: Path, name: str, entry: dict) -> Stage:
    import yaml

    stage = Stage(name, run_dir / name, entry)
    if not stage.ran:
        return stage
    metrics = read_jsonl(stage.folder / "metrics.jsonl")
    stage.train = [m for m in metrics if m.get("kind") == "train"]
    stage.evals = [m for m in metrics if m.get("kind") == "eval"]
    stage.final = read_json(stage.folder / "final.json")
    stage.meta = newest_meta(stage.folder)
    config_path = stage.folder / "config.yaml"
    stage.config = (yaml.safe_load(config_path.read_text()) or {}) if config_path.is_file() else {}
    stage.samples = read_jsonl(stage.folder / "samples.jsonl")
    data_file = stage_table.spec(name).data_file
    stage.data = read_json(stage.folder / data_file) if data_file else None
    stage.items = read_json(stage.folder / "eval_items.json")
    return stage


def read_run(run_dir: Path) -> tuple[dict, dict[str, Stage]]:
    """pipeline.json (or a stand-in built from the stage folders present) and every stage, in run order."""
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: no such run folder (give runs/<name>, the folder holding pipeline.json)")
    pipeline = read_json(run_dir / "pipeline.json") or {}
    entries = {e["stage"]: e for e in pipeline.get("stages", []) if e.get("stage") in STAGES}
    for name in STAGES:
        if name not in entries and (run_dir / name).is_dir():
            entries[name] = {"stage": name, "status": "?"}
    if not entries:
        raise DataError(f"{run_dir}: neither pipeline.json nor a stage folder ({', '.join(STAGES)}); is this a pipeline run?")
    return pipeline, {name: read_stage(run_dir, name, entries[name]) for name in STAGES if name in entries}


# ---------------------------------------------------------------- numbers as text

def fmt(key: str, value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if key in PERCENT or key.endswith("_by_kind"):
        return f"{100 * value:.1f}%"
    if isinstance(value, int) or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def duration(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return "n/a"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else (f"{minutes}m {secs:02d}s" if minutes else f"{seconds:.1f}s")


def count(n) -> str:
    if not isinstance(n, (int, float)):
        return "n/a"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


def cell(text, limit: int = CELL_CHARS) -> str:
    """A model's text for a table cell: newlines shown as ↵, long text cut."""
    text = str(text).replace("\n", "↵")
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------- the stage facts

def model_config(stage: Stage) -> dict | None:
    config = (stage.meta or {}).get("model_config") or stage.config.get("model")
    return config if isinstance(config, dict) and config.get("vocab_size") else None


def params(stage: Stage) -> int | None:
    from llm.config import ModelConfig
    from llm.model import model_size

    config = model_config(stage)
    try:
        return model_size(ModelConfig(**config)).params if config else None
    except TypeError:  # a model_config with keys this version does not know
        return None


def last(records: list[dict], key: str):
    return next((r[key] for r in reversed(records) if r.get(key) is not None), None)


def measure(stage: Stage) -> tuple[str, object, object] | None:
    """(metric, step-0 value, final value) of what the stage is judged by."""
    for key in stage_table.spec(stage.name).measures:
        if key in stage.metrics or key in stage.baseline:
            return key, stage.baseline.get(key), stage.metrics.get(key)
    return None


def paired(stage: Stage | None, measure: str = "items") -> dict | None:
    """The stage's step-0 and final evaluations compared prompt by prompt (llm/eval/stats.py) on `measure`
    ("items": correct; "preferred": best-possible to the rater), or None when eval_items.json is missing (an
    older run folder) or holds another evaluation than the figures shown."""
    if stage is None or not stage.ran or not isinstance(stage.items, dict):
        return None
    start, end = stage.items.get("step0"), stage.items.get("latest")
    shown_step = (stage.final or {}).get("step", last(stage.evals, "step"))
    if not isinstance(start, dict) or not isinstance(end, dict) or end.get("step") != shown_step:
        return None
    result = paired_comparison(start.get(measure) or {}, end.get(measure) or {})
    return result if result["n"] else None


def p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3g}"


def paired_text(result: dict) -> str:
    text = f"fixed {result['fixed']}, broken {result['broken']} of {result['n']} paired prompts, {p_text(result['p_value'])}"
    return text if result["significant"] else text + ": not significant"


def summary_row(stage: Stage) -> list[str]:
    final = stage.final or {}
    step = final.get("step", last(stage.train, "step"))
    seconds = stage.entry.get("elapsed_s") or final.get("elapsed_s") or last(stage.train, "elapsed_s")
    tokens = final.get("tokens_seen", last(stage.train, "tokens_seen"))
    judged = measure(stage)
    judged_text = f"{judged[0]}: {fmt(judged[0], judged[1])} → {fmt(judged[0], judged[2])}" if judged else ""
    result = paired(stage) if judged and judged[0] == "exact_match" else None
    judged_text += f" ({paired_text(result)})" if result else ""
    if not stage.ran:
        return [stage.name, stage.status(), "", "", "", "", ""]
    return [stage.name, stage.status(), fmt("step", step), duration(seconds), count(tokens), count(params(stage)), judged_text]


def data_line(stage: Stage) -> str | None:
    """One line of what the stage trained on, from corpus.json or data.json."""
    data = stage.data
    if not data:
        return None
    if stage.name == "pretrain":
        docs, tokens = data.get("documents", {}), data.get("tokens", {})
        return (f"corpus: {fmt('n', docs.get('train'))} train / {fmt('n', docs.get('val'))} val documents, "
                f"{fmt('n', tokens.get('train'))} / {fmt('n', tokens.get('val'))} tokens, vocab {data.get('vocab_size')}, "
                f"{fmt('x', data.get('val_bytes_per_token'))} bytes per token")
    parts = [f"{s.get('path')} ({fmt('n', s.get('train'))} train / {fmt('n', s.get('val'))} val)" for s in data.get("sources", [])]
    for split in ("train", "val"):
        counts = data.get(split)
        if isinstance(counts, dict):
            parts.append(f"{split}: " + ", ".join(f"{k} {fmt(k, v)}" for k, v in counts.items()))
    return "data: " + "; ".join(parts)


def config_line(stage: Stage) -> str | None:
    model, train, optim = model_config(stage), stage.config.get("train") or {}, stage.config.get("optim") or {}
    if not model:
        return None
    precision = stage.precision
    dtype = f"{precision['dtype']} ({precision.get('reason', '')})" if precision.get("dtype") else train.get("dtype", "?")
    return (f"model: {model.get('n_layer')} layers × {model.get('n_embd')} wide, {model.get('n_head')} heads, "
            f"context {model.get('block_size')}, vocab {model.get('vocab_size')}; train: batch {train.get('batch_size', '?')}, "
            f"lr {optim.get('lr', '?')}, precision {dtype}")


# ---------------------------------------------------------------- the document

def header(run_dir: Path, pipeline: dict) -> list:
    started, finished = pipeline.get("started"), pipeline.get("finished")
    blocks = [Heading(1, f"Run report: {pipeline.get('name') or run_dir.name}")]
    if pipeline.get("command"):
        blocks += [Text("Reproduce with:"), Code(pipeline["command"])]
    total = total_seconds(pipeline)
    machine = pipeline.get("device", "?")
    torch_text = "" if "torch" in machine else f"**torch:** {pipeline.get('torch', '?')} · "  # older runs named only the device
    blocks.append(Text(f"**Machine:** {machine} · {torch_text}"
                       f"**started:** {started or '?'} · **finished:** {finished or 'not finished'} · "
                       f"**total time:** {duration(total)}"))
    return blocks


def total_seconds(pipeline: dict) -> float | None:
    from datetime import datetime

    try:
        return (datetime.fromisoformat(pipeline["finished"]) - datetime.fromisoformat(pipeline["started"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        spent = [e.get("elapsed_s") for e in pipeline.get("stages", []) if isinstance(e.get("elapsed_s"), (int, float))]
        return sum(spent) if spent else None


def summary(stages: dict[str, Stage]) -> list:
    header_row = ["stage", "status", "steps", "time", "tokens seen", "parameters", "measure: step 0 → final"]
    return [Heading(2, "Summary"), Table(header_row, [summary_row(s) for s in stages.values()])]


def headline_points(stages: dict[str, Stage]) -> list[tuple[str, float]]:
    """(model, true exact-match accuracy) for base, SFT, PPO and DPO, where known."""
    def exact(name: str, which: str):
        stage = stages.get(name)
        value = getattr(stage, which).get("exact_match") if stage and stage.ran else None
        return float(value) if isinstance(value, (int, float)) else None

    # PPO's and DPO's step-0 evaluation is the SFT model: a stand-in when the SFT stage is not in this run
    sft = next((v for v in (exact("sft", "metrics"), *(exact(s.name, "baseline") for s in stage_table.POLICIES)) if v is not None), None)
    found = [("base", exact("sft", "baseline")), ("SFT", sft), *((s.label, exact(s.name, "metrics")) for s in stage_table.POLICIES)]
    return [(label, value) for label, value in found if value is not None]


def policy_chains(points: list[tuple[str, float]]) -> list[list[tuple[str, float]]]:
    """base -> SFT -> the first policy stage, then SFT -> each other one: the policy stages (PPO, GRPO, RLOO,
    DPO) are alternatives after SFT, each compared with SFT, not with one another."""
    first = [p for p in points if p[0] in ("base", "SFT")]
    policies = points[len(first):]
    if not policies:
        return [points]
    sft = [p for p in first if p[0] == "SFT"]
    return [first + policies[:1], *(sft + [p] for p in policies[1:])]


def compare(a: tuple[str, float], b: tuple[str, float], result: dict | None) -> tuple[str, str]:
    """The sign between two accuracies and a sentence on whether the second improves on the first: by the paired
    sign test on the prompts both answered (`result`, from `paired`), or by the plain numbers when there is none."""
    delta = 100 * (b[1] - a[1])
    sign = "<" if delta > 0 else "=" if delta == 0 else ">"
    if result is None:
        unknown = "significance unknown: no per-prompt results (`eval_items.json`) in this run folder"
        if delta > 0:
            return sign, f"{b[0]} is better than {a[0]} (+{delta:.1f} points; {unknown})."
        change = "the same" if delta == 0 else f"{delta:.1f} points"
        return sign, f"**{b[0]} is NOT better than {a[0]}** ({change}; {unknown})."
    test = paired_text(result)
    shown = (fmt("exact_match", a[1]), fmt("exact_match", b[1]))
    on_paired = (fmt("exact_match", result["before_accuracy"]), fmt("exact_match", result["after_accuracy"]))
    if on_paired != shown:  # a prompt drawn twice counts once; PPO and DPO are paired with their own SFT start
        test += f"; {on_paired[0]} → {on_paired[1]} on those prompts"
    if not result["significant"]:
        return sign, f"**{b[0]} is not significantly different from {a[0]}** ({delta:+.1f} points; {test})."
    if result["fixed"] > result["broken"]:
        return sign, f"{b[0]} is better than {a[0]} ({delta:+.1f} points; {test})."
    return sign, f"**{b[0]} is worse than {a[0]}** ({delta:+.1f} points; {test})."


def problems(pipeline: dict, stages: dict[str, Stage]) -> list:
    """What a reader must see before any figure: a stage that failed or was cut short."""
    lines = []
    for stage in stages.values():
        error = stage.entry.get("error")
        if stage.entry.get("status") == "failed" and error:
            command = pipeline.get("command") or "the same pipeline command"
            lines.append(Text(f"**The pipeline stopped: {stage.name} failed:** {error}. The stages before it are kept; "
                              f"after fixing the cause, continue with `{command}` (finished stages are skipped)."))
        elif stage.final and stage.final.get("cut_short"):
            lines.append(Text(f"**{stage.name} {stage.final.get('ending')}**; the stages after it started from that model."))
    return lines


def axis_value(stage: Stage | None, which: str, axis: str):
    if stage is None or not stage.ran:
        return None
    return getattr(stage, which).get("exact_match" if axis == "items" else f"{axis}/exact_match")


def generalisation(stages: dict[str, Stage]) -> list:
    """The headline: exact match on each held-out axis, model by model, new words and new phrasings first,
    and each step between models compared prompt by prompt on every axis."""
    rows = []
    for label, name, which in MODELS:
        values = [axis_value(stages.get(name), which, axis) for axis, _ in AXES]
        if any(v is not None for v in values):
            rows.append([label, *(fmt("exact_match", v) for v in values)])
    if not rows or all(row[1] == "n/a" for row in rows):
        return []
    lines = []
    for before, after, name in (("base", "SFT", "sft"), *(("SFT", s.label, s.name) for s in stage_table.POLICIES)):
        parts = [f"{title}: {paired_text(result)}" + (" (worse)" if result["significant"] and result["broken"] > result["fixed"] else "")
                 for axis, title in AXES if (result := paired(stages.get(name), axis))]
        if parts:
            lines.append(Text(f"{before} → {after}: " + "; ".join(parts) + "."))
    return [Heading(2, "Headline: what a person's own prompt gets"), Table(["model", *(title for _, title in AXES)], rows), *lines,
            Text("Exact match of greedy replies on four held-out sets (`llm/data/builtin_tasks.py`): everyday words that no "
                 "training example uses, asked in phrasings that none uses; the new words in training phrasings; training "
                 "words in the new phrasings; and held-out combinations of training words and phrasings. Base is SFT's "
                 "step-0 evaluation; each step is an exact two-sided sign test on the prompts that changed.")]


def headline(run_dir: Path, stages: dict[str, Stage], pipeline: dict | None = None) -> list:
    points = headline_points(stages)
    blocks = [Heading(2, "True accuracy on held-out built-in combinations"), *problems(pipeline or {}, stages)]
    if len(points) < 2:
        return blocks + [Text("Not enough stages ran to compare: needs at least two of base (SFT's step 0), SFT and "
                              f"{', '.join(s.label for s in stage_table.POLICIES)}.")]
    chains = policy_chains(points)
    lines, verdicts = [], []
    for chain in [c for c in chains if len(c) > 1]:
        text = f"{chain[0][0]} {fmt('exact_match', chain[0][1])}"
        for a, b in itertools.pairwise(chain):
            # each step is judged in the later model's stage run: base -> SFT in sft's, SFT -> PPO in ppo's, ...
            result = paired(stages.get(dict(ANSWER_MODELS)[b[0]]))
            sign, verdict = compare(a, b, result)
            text += f" {sign} {b[0]} {fmt('exact_match', b[1])}"
            text += " (not significant)" if result and not result["significant"] else ""
            verdicts.append(verdict)
        lines.append(f"**{text}**")
    plots.headline_figure(points, run_dir / "plots" / "headline.png")
    blocks += [Text(line) for line in lines] + [Text(" ".join(dict.fromkeys(verdicts)))]
    blocks.append(Text("Exact match of greedy replies checked by the task checker: base is the pre-trained model "
                       "(SFT's step-0 evaluation, in the chat template), the others are each stage's final evaluation. "
                       "Each step compares the two models prompt by prompt: fixed counts the held-out prompts the later "
                       "model answers right and the earlier one wrong, broken the reverse, and p is the exact two-sided "
                       "sign test on those (McNemar's exact test); p ≥ 0.05 is labelled not significant. PPO and DPO are "
                       "paired with their own step-0 evaluation, the SFT model they started from; a prompt drawn twice counts once."))
    return blocks + [Image("plots/headline.png", "exact match by model")]


def preference_section(stages: dict[str, Stage]) -> list:
    """What RLHF changed that the demonstrations left open: the rater's best-possible share, the correct share and
    the styles of each model's greedy replies, on held-out tasks and on tasks built from words no training used."""
    rows, lines = [], []
    for label, name, which in MODELS:
        stage = stages.get(name)
        m = getattr(stage, which) if stage and stage.ran else {}
        if "best_possible" not in m:
            continue
        style = m.get("style") or {}
        rows.append([label, fmt("best_possible", m["best_possible"]), fmt("exact_match", m.get("exact_match")),
                     " / ".join(f"{style.get(k, 0):.0%}" for k in ("plain", "filler", "disclaimer")),
                     fmt("exact_match", m.get("new_words/exact_match")), fmt("best_possible", m.get("new_words/best_possible"))])
    for label, name in ((s.label, s.name) for s in stage_table.POLICIES):
        result = paired(stages.get(name), "preferred")
        if result:
            before, after = fmt("best_possible", result["before_accuracy"]), fmt("best_possible", result["after_accuracy"])
            lines.append(Text(f"SFT → {label}, best-possible share: {before} → {after} ({paired_text(result)})."))
    if not rows:
        return []
    header_row = ["model", "best-possible", "correct", "plain / filler / disclaimer", "correct, new words", "best-possible, new words"]
    return [Heading(2, "What the preference changed"), Text(RUBRIC), Table(header_row, rows), *lines,
            Text("Greedy replies to the same held-out tasks as the headline; \"new words\" are held-out tasks built from everyday "
                 "words that no SFT or preference example uses (`builtin_tasks.new_words`): what a person's own prompt brings.")]


def metric_tables(stage: Stage) -> list:
    before, after = stage.baseline, stage.metrics
    keys = [k for k in dict.fromkeys([*after, *before]) if k not in ("kind", "step", "tokens_seen")]
    scalars = [k for k in keys if not isinstance(after.get(k, before.get(k)), dict)]
    blocks = [Table(["metric", "step 0", "final"], [[k, fmt(k, before.get(k)), fmt(k, after.get(k))] for k in scalars])]
    for key in [k for k in keys if k not in scalars]:
        kinds = dict.fromkeys([*(after.get(key) or {}), *(before.get(key) or {})])
        rows = [[kind, fmt(key, (before.get(key) or {}).get(kind)), fmt(key, (after.get(key) or {}).get(kind))] for kind in kinds]
        blocks += [Text(f"`{key}`:"), Table(["kind", "step 0", "final"], rows)]
    if stage.train:
        line = stage.train[-1]
        rows = [[k, fmt(k, line[k])] for k in TRAIN_KEYS if k in line]
        blocks += [Text(f"Last training line (step {line.get('step')}):"), Table(["metric", "value"], rows)]
    return blocks


def stage_section(run_dir: Path, stage: Stage) -> list:
    blocks = [Heading(2, f"Stage: {stage.name}")]
    if not stage.ran:
        return blocks + [Text(f"**{stage.status()}.**")]
    final = stage.final or {}
    facts = f"**{stage.status()}**"
    if final:
        best = final.get("best_checkpoint")
        facts += "" if final.get("ending") else f" at step {final.get('step')}"  # the ending names its step
        facts += f"; last checkpoint `{final.get('checkpoint')}`, " + (f"best `{best}`" if best else "no best kept")
    blocks.append(Text(facts + "."))
    blocks += [Text(line) for line in (data_line(stage), config_line(stage)) if line]
    if plots.stage_figure(stage.name, stage.train, stage.evals, run_dir / "plots" / f"{stage.name}.png"):
        blocks.append(Image(f"plots/{stage.name}.png", f"{stage.name} curves"))
    if stage.metrics or stage.baseline:
        blocks += metric_tables(stage)
    result = paired(stage)
    if result:
        blocks.append(Text(f"`exact_match` step 0 → final, prompt by prompt: {paired_text(result)} (exact sign test)."))
    return blocks


def answers_section(answers: dict | None) -> list:
    blocks = [Heading(2, "The same prompts, model by model")]
    models = (answers or {}).get("models") or {}
    if not models:
        return blocks + [Text("No answers: no `report_prompts` in pipeline.json, or no model could be loaded.")]
    labels = [label for label, _ in ANSWER_MODELS if label in models]
    rows = []
    for n, prompt in enumerate(answers["prompts"]):
        row = [cell(prompt)]
        for label in labels:
            replies = models[label].get("replies") or []
            reply = replies[n] if n < len(replies) else {"text": "", "finished": True}
            row.append(cell(reply.get("text", "")) + ("" if reply.get("finished", True) else " (did not stop)"))
        rows.append(row)
    where = ", ".join(f"{label}: {models[label]['stage']}/{models[label]['checkpoint']}" for label in labels)
    blocks.append(Text(f"Greedy, at most {answers.get('max_new_tokens', MAX_NEW_TOKENS)} new tokens, in the chat template ({where})."))
    return blocks + [Table(["prompt", *labels], rows)]


def samples_section(stages: dict[str, Stage]) -> list:
    blocks = [Heading(2, "Samples from the last evaluation")]
    for name in (*(s.name for s in stage_table.POLICIES), "sft"):
        stage = stages.get(name)
        if stage and stage.samples:
            record = stage.samples[-1]
            rows = record.get("samples", [])[:SAMPLE_ROWS]
            blocks.append(Heading(3, f"{name} (step {record.get('step')})"))
            if name == "sft":
                blocks.append(Table(["prompt", "reply"], [[cell(r.get("prompt", "")), cell(r.get("reply", "")) +
                                                           ("" if r.get("finished") else " (did not stop)")] for r in rows]))
            else:
                keys = ("prompt", "answer", "sft", "policy")
                blocks.append(Table(list(keys), [[cell(r.get(k, "")) for k in keys] for r in rows]))
    pretrain = stages.get("pretrain")
    if pretrain and pretrain.samples:
        record = pretrain.samples[-1]
        blocks.append(Heading(3, f"pretrain (step {record.get('step')})"))
        blocks += [Code(str(text)) for text in record.get("samples", [])[:SAMPLE_ROWS]]
    return blocks if len(blocks) > 1 else blocks + [Text("No samples.jsonl in any stage.")]


# ---------------------------------------------------------------- answers and the whole report

def generate_answers(run_dir: Path, stages: dict[str, Stage], prompts: list[str]) -> dict:
    """Greedy replies of each stage's best checkpoint to `prompts`, saved in answers.json for later rebuilds."""
    from llm.chat import generate_replies
    from llm.device import pick_device
    from llm.load import load_gpt

    device, models = pick_device("auto"), {}
    for label, name in ANSWER_MODELS:
        stage = stages.get(name)
        if not prompts or stage is None or not (stage.folder / "checkpoints").is_dir():
            continue
        try:
            loaded = load_gpt(stage.folder, device)
        except LLMError as exc:
            warnings.warn(f"report: no {label} answers ({exc})", stacklevel=2)
            continue
        replies = generate_replies(loaded.model, loaded.tokenizer, prompts, max_new_tokens=MAX_NEW_TOKENS)
        models[label] = {"stage": name, "checkpoint": loaded.folder.name,
                         "replies": [{"text": r.text, "finished": r.finished} for r in replies]}
    record = {"prompts": prompts, "max_new_tokens": MAX_NEW_TOKENS, "models": models}
    write_json(run_dir / "answers.json", record)
    return record


def build_report(run_dir: Path, answers: bool = True) -> Path:
    """Write report.md, report.html and plots/*.png in `run_dir`; returns the report.md path.

    answers=True loads each stage's model to answer pipeline.json's report_prompts (and caches them in
    answers.json); answers=False shows the cached answers, if any.
    """
    run_dir = Path(run_dir)
    pipeline, blocks = report_blocks(run_dir, answers)
    title = f"Run report: {pipeline.get('name') or run_dir.name}"
    write_text(run_dir / "report.md", to_markdown(blocks))
    write_text(run_dir / "report.html", to_html(blocks, run_dir, title))
    return run_dir / "report.md"


def report_blocks(run_dir: Path, answers: bool) -> tuple[dict, list]:
    pipeline, stages = read_run(run_dir)
    if answers:
        replies = generate_answers(run_dir, stages, list(pipeline.get("report_prompts") or []))
    else:
        replies = read_json(run_dir / "answers.json")
    blocks = [*header(run_dir, pipeline), *summary(stages), *generalisation(stages), *headline(run_dir, stages, pipeline),
              *preference_section(stages)]
    for stage in stages.values():
        blocks += stage_section(run_dir, stage)
    return pipeline, blocks + [*answers_section(replies), *samples_section(stages)]


def write_results(run_dir: Path, out: Path) -> Path:
    """The report of a finished run as a document to keep in the repository (docs/results.md): the same blocks,
    from the run folder's cached answers, with its figures copied beside it, so the figures a reader is shown
    are the run's own and cannot drift from it."""
    run_dir, out = Path(run_dir), Path(out)
    if not (run_dir / "answers.json").is_file():
        raise DataError(f"{run_dir}: no answers.json; build its report first (llm report {run_dir})")
    pipeline, blocks = report_blocks(run_dir, answers=False)
    figures = out.with_suffix("")  # docs/results.md -> docs/results/
    for block in blocks:
        if isinstance(block, Image):
            figures.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run_dir / block.path, figures / Path(block.path).name)
            block.path = f"{figures.name}/{Path(block.path).name}"
    note = Text(f"Generated from the run folder `{run_dir}` by `llm report {run_dir} --results {out}`; not edited by hand.")
    write_text(out, to_markdown([blocks[0], note, *blocks[1:]]))
    return out
