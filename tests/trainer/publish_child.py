"""Child process for the publish crash tests: publish, and SIGKILL itself at a given stage.

Usage: python publish_child.py DATABASE_URL REPOSITORY SOURCE_DIR KILL_AT_STAGE|never
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from registry.config import RegistrySettings
from registry.db import connect
from trainer.publish import ArtifactSource, PublishRequest, PublishStage, publish


def main() -> None:
    url, repository, source, kill_at = sys.argv[1:5]
    settings = RegistrySettings(database_url=url, model_repository=Path(repository))
    db = connect(settings)

    def on_stage(stage: PublishStage, _version: int) -> None:
        if stage.value == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    src = Path(source)
    publish(
        db=db,
        repository=settings.model_repository,
        request=PublishRequest(
            model="crashy",
            files={
                "model.onnx": ArtifactSource(path=src / "model.onnx", format="onnx"),
                "tokenizer.json": ArtifactSource(path=src / "tokenizer.json", format="tokenizer"),
            },
            dataset_sha256="e" * 64,
            metrics={"val_perplexity": 12.5},
        ),
        on_stage=on_stage,
    )


if __name__ == "__main__":
    main()
