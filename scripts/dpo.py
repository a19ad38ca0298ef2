"""DPO on preference pairs: python scripts/dpo.py --config configs/dpo/tiny.yaml init_from=runs/sft-tiny [--resume]"""

from llm.cli import exit_status, main, stage_parser
from llm.config import DPOConfig, load_config


def entry() -> int:
    args = stage_parser(__doc__).parse_intermixed_args()
    cfg = load_config(DPOConfig, args.config, args.overrides)
    from llm.stages.dpo import run

    result = run(cfg, resume=args.resume, fresh=args.fresh)
    print(f"[dpo] done: {result.reason} at step {result.step}; run folder {result.run_dir}")
    return exit_status(result.reason)


if __name__ == "__main__":
    main(entry)
