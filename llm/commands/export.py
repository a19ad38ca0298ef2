"""Export a checkpoint as a Hugging Face transformers folder (Llama or GPT-2 architecture, no custom code).

llm export --checkpoint runs/tiny/sft --out exports/tiny-sft
python -c "from transformers import AutoModelForCausalLM, AutoTokenizer; AutoModelForCausalLM.from_pretrained('exports/tiny-sft')"

A PPO checkpoint exports its policy; a reward model exports as ...ForSequenceClassification with one label.
"""

import argparse


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Export a run or checkpoint folder as a transformers model folder.")
    parser.add_argument("--checkpoint", required=True, help="a run folder (uses its best checkpoint) or a checkpoint folder")
    parser.add_argument("--out", required=True, help="a new folder to write the transformers model into")
    return parser.parse_args()


def entry() -> int:
    args = parse_args()
    from llm.hf import require_transformers
    from llm.hf.export import export_checkpoint

    require_transformers().utils.logging.disable_progress_bar()  # a bar for writing one small file is noise
    done = export_checkpoint(args.checkpoint, args.out)
    what = {"gpt": "a language model", "actor_critic": "its PPO policy", "reward": "a reward model"}.get(done.kind, done.kind)
    print(f"exported {done.source} ({what}) as {done.model_class}, {done.params:,} parameters, to {done.folder}")
    return 0
