"""Export a run's config as a standalone TRL GRPOTrainer script (+ DeepSpeed ZeRO-2), for training
beyond one host: a thin command line over core.export.trl_script.

    python -m scripts.export_trl --config configs/quickstart.yaml --out exported/quickstart
"""

from __future__ import annotations

import argparse
import sys

from core.config import Config, ConfigError
from core.export.trl_script import export_trl


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Export a run config as a TRL GRPOTrainer script (+ DeepSpeed ZeRO-2).")
    ap.add_argument("--config", required=True, help="run config YAML (or a run folder's config.yaml)")
    ap.add_argument("--out", required=True, help="folder to write into")
    args = ap.parse_args(argv)
    try:
        cfg = Config.load(args.config)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    for kind, path in export_trl(cfg, args.out).items():
        print(f"{kind:>18}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
