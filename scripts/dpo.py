"""DPO on preference pairs: python scripts/dpo.py --config configs/dpo/tiny.yaml init_from=runs/sft-tiny [--resume]"""

from llm.cli import finish_stage, main, stage_parser
from llm.config import DPOConfig, load_config


def entry() -> int:
    args = stage_parser(__doc__).parse_intermixed_args()
    cfg = load_config(DPOConfig, args.config, args.overrides)
    from llm.stages.dpo import run

    return finish_stage("dpo", run(cfg, resume=args.resume, fresh=args.fresh))


if __name__ == "__main__":
    main(entry)
