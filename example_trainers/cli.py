"""The digits job configured from YAML with LightningCLI: every lightning_xai callback, probe included.

Run:  .venv/bin/python example_trainers/cli.py fit --config example_trainers/digits_cli.yaml
Then: .venv/bin/tensorboard --logdir lightning_logs
(from the repository root, in the environment that ``bash scripts/setup.sh`` makes)

Any value of the config can be overridden on the command line, e.g. ``--trainer.max_epochs=2``;
``.venv/bin/python example_trainers/cli.py fit --help`` lists them, ``--print_config`` prints the resolved config.
The probes are ``lightning_xai.ProbeSpec`` entries (size, seed, source): each callback draws its probe
from the datamodule's validation set when training starts, the same samples on every run.
"""

from __future__ import annotations

import os
import sys
from typing import Any, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from digits import DigitsCNN, DigitsDataModule  # noqa: E402  (digits.py puts the repository on sys.path)

from pytorch_lightning.cli import LightningCLI  # noqa: E402


def main(args: Optional[List[str]] = None, run: bool = True) -> Any:
    """Build (and with ``run=True`` run) the CLI; ``args`` as on the command line (default: ``sys.argv``)."""
    return LightningCLI(
        DigitsCNN,
        DigitsDataModule,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":
    main()
