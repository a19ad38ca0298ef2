"""Fine-tune on instructions: python scripts/sft.py --config configs/sft/tiny.yaml init_from=runs/pretrain-tiny [--resume]"""

from llm.cli import run_stage_script

if __name__ == "__main__":
    run_stage_script("sft", __doc__)
