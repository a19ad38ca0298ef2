"""PPO against a reward model: python scripts/ppo.py --config configs/ppo/tiny.yaml policy=runs/sft-tiny reward_model=runs/reward-tiny [--resume]"""

from llm.cli import finish_stage, main, stage_parser
from llm.config import PPOConfig, load_config


def entry() -> int:
    args = stage_parser(__doc__).parse_intermixed_args()
    cfg = load_config(PPOConfig, args.config, args.overrides)
    from llm.stages.ppo import run

    return finish_stage("ppo", run(cfg, resume=args.resume, fresh=args.fresh))


if __name__ == "__main__":
    main(entry)
