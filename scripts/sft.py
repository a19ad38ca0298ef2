"""Fine-tune on instructions: python scripts/sft.py --config configs/sft/tiny.yaml init_from=runs/pretrain-tiny [--resume]"""

from llm.cli import exit_status, main, stage_parser
from llm.config import SFTConfig, load_config


def entry() -> int:
    args = stage_parser(__doc__).parse_intermixed_args()
    cfg = load_config(SFTConfig, args.config, args.overrides)
    from llm.stages.sft import run

    result = run(cfg, resume=args.resume, fresh=args.fresh)
    print(f"[sft] done: {result.reason} at step {result.step}; run folder {result.run_dir}")
    return exit_status(result.reason)


if __name__ == "__main__":
    main(entry)
