"""The shared entry point of the model tools (`guardstream train`, `eval`, `export`)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable


def tool_main(
    name: str,
    description: str | None,
    configure: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
    argv: list[str] | None,
    log_level: int = logging.INFO,
) -> int:
    """Parse `argv` with the tool's flags, set up logging, run it; returns its exit status."""
    parser = argparse.ArgumentParser(
        prog=f"guardstream {name}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure(parser)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(parser.parse_args(argv))
