"""Fine-tune on instructions: python scripts/sft.py --config configs/sft/tiny.yaml init_from=runs/pretrain-tiny [--resume]"""

from llm.cli import finish_stage, main, stage_parser
from llm.config import SFTConfig, load_config


def entry() -> int:
    args = stage_parser(__doc__).parse_intermixed_args()
    cfg = load_config(SFTConfig, args.config, args.overrides)
    from llm.stages.sft import run

    return finish_stage("sft", run(cfg, resume=args.resume, fresh=args.fresh))


if __name__ == "__main__":
    main(entry)
