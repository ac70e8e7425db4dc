"""What the recipe-driven trainers share: the command line ``--config RECIPE [--set KEY=VALUE ...]`` and
how their manifests record it."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from collections.abc import Callable
from typing import Any

from pipeline.config import read_recipe


def command_line(module: str) -> str:
    """The command that ran this trainer, as its manifest records it."""
    return f"python -m {module} " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def recipe_main(module: str, description: str, example: str, train: Callable[[dict[str, Any]], dict],
                argv: list[str] | None = None) -> int:
    """Read the recipe (with its ``--set`` overrides), train, print the manifest's metrics."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description.split("\n")[0])
    parser.add_argument("--config", required=True, help=f"recipe YAML ({example})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    manifest = train(read_recipe(args.config, args.set))
    print(json.dumps(manifest["metrics"], indent=2))
    return 0
