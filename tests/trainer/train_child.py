"""Child process for the resume test: train the test preset in RUN_DIR until killed or done."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.trainer.tiny_preset import token_streams, write_preset
from trainer.presets import load_preset
from trainer.train import train


def main() -> None:
    run_dir = Path(sys.argv[1])
    preset = load_preset(str(write_preset(run_dir.parent)))
    train_ids, val_ids = token_streams()
    train(
        config=preset.training,
        model_config=preset.model_config(64),
        train_ids=train_ids,
        val_ids=val_ids,
        run_dir=run_dir,
        progress=False,
    )


if __name__ == "__main__":
    main()
