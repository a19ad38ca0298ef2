"""Pre-train a GPT on a text corpus: python scripts/pretrain.py --config configs/pretrain/tiny.yaml [--resume] [key=value ...]"""

from llm.cli import finish_stage, main, stage_parser
from llm.config import PretrainConfig, load_config


def entry() -> int:
    args = stage_parser(__doc__).parse_intermixed_args()
    cfg = load_config(PretrainConfig, args.config, args.overrides)
    from llm.stages.pretrain import run

    return finish_stage("pretrain", run(cfg, resume=args.resume, fresh=args.fresh))


if __name__ == "__main__":
    main(entry)
