"""Pre-train a GPT on a text corpus: python scripts/pretrain.py --config configs/pretrain/tiny.yaml [--resume] [key=value ...]"""

from llm.cli import run_stage_script

if __name__ == "__main__":
    run_stage_script("pretrain", __doc__)
