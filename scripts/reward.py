"""Train a reward model on preference pairs:
python scripts/reward.py --config configs/reward/tiny.yaml init_from=runs/sft-tiny [--resume]"""

from llm.cli import run_stage_script

if __name__ == "__main__":
    run_stage_script("reward", __doc__)
