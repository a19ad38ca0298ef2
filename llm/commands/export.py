"""Export a checkpoint as a Hugging Face transformers folder (Llama or GPT-2 architecture, no custom code).

llm export --checkpoint runs/tiny/sft --out exports/tiny-sft
python -c "from transformers import AutoModelForCausalLM, AutoTokenizer; AutoModelForCausalLM.from_pretrained('exports/tiny-sft')"

A PPO checkpoint exports its policy; a reward model exports as ...ForSequenceClassification with one label.
A run trained with adapters (lora.rank > 0) exports its base model and OUT/adapter, a PEFT LoRA folder
(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(OUT), OUT + "/adapter")); --merge folds them in instead.
"""

import argparse


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Export a run or checkpoint folder as a transformers model folder.")
    parser.add_argument("--checkpoint", required=True, help="a run folder (uses its best checkpoint) or a checkpoint folder")
    parser.add_argument("--out", required=True, help="a new folder to write the transformers model into")
    parser.add_argument("--merge", action="store_true",
                        help="fold a LoRA run's adapters into the weights (else they go to OUT/adapter in PEFT's format)")
    return parser.parse_args()


def entry() -> int:
    args = parse_args()
    from llm.hf import require_transformers
    from llm.hf.export import export_checkpoint

    require_transformers().utils.logging.disable_progress_bar()  # a bar for writing one small file is noise
    done = export_checkpoint(args.checkpoint, args.out, args.merge)
    what = {"gpt": "a language model", "actor_critic": "its PPO policy", "reward": "a reward model"}.get(done.kind, done.kind)
    print(f"exported {done.source} ({what}) as {done.model_class}, {done.params:,} parameters, to {done.folder}")
    return 0
