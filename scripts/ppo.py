"""PPO against a reward model:
python scripts/ppo.py --config configs/ppo/tiny.yaml policy=runs/sft-tiny reward_model=runs/reward-tiny [--resume]"""

from llm.cli import run_stage_script

if __name__ == "__main__":
    run_stage_script("ppo", __doc__)
