"""Pre-train a GPT on a text corpus: python scripts/pretrain.py --config configs/pretrain/tiny.yaml [--resume] [key=value ...]"""

from llm.cli import exit_status, main, stage_parser
from llm.config import PretrainConfig, load_config


def entry() -> int:
    args = stage_parser(__doc__).parse_intermixed_args()
    cfg = load_config(PretrainConfig, args.config, args.overrides)
    from llm.stages.pretrain import run

    result = run(cfg, resume=args.resume, fresh=args.fresh)
    print(f"[pretrain] done: {result.reason} at step {result.step}; run folder {result.run_dir}")
    return exit_status(result.reason)


if __name__ == "__main__":
    main(entry)
