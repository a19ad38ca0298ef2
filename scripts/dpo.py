"""DPO on preference pairs: python scripts/dpo.py --config configs/dpo/tiny.yaml init_from=runs/sft-tiny [--resume]"""

from llm.cli import run_stage_script

if __name__ == "__main__":
    run_stage_script("dpo", __doc__)
