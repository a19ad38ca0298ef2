"""Train a reward model on preference pairs: python scripts/reward.py --config configs/reward/tiny.yaml init_from=runs/sft-tiny [--resume]"""

from llm.cli import finish_stage, main, stage_parser
from llm.config import RewardConfig, load_config


def entry() -> int:
    args = stage_parser(__doc__).parse_intermixed_args()
    cfg = load_config(RewardConfig, args.config, args.overrides)
    from llm.stages.reward import run

    return finish_stage("reward", run(cfg, resume=args.resume, fresh=args.fresh))


if __name__ == "__main__":
    main(entry)
