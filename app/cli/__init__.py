"""The `mapcascade` command line. Commands load lazily, so `serve --help` never imports torch."""

from __future__ import annotations

import importlib

import click

COMMANDS = {
    "serve": (
        "app.cli.serve",
        "serve",
        "Run everything on this machine: Redis, a worker, the API.",
    ),
    "api": ("app.cli.serve", "api", "Run the HTTP API only (uvicorn)."),
    "worker": ("app.cli.serve", "worker", "Run one generation worker."),
    "nginx-config": (
        "app.cli.nginx",
        "nginx_config",
        "Print the nginx front's config (cache hits from files).",
    ),
    "seed": ("app.cli.seed", "seed", "Pre-generate a bounding box over a zoom range."),
    "truncate": ("app.cli.seed", "truncate", "Remove tiles (and their descendants)."),
    "export": ("app.cli.export", "export", "Write stored tiles to an MBTiles or PMTiles file."),
    "generate": ("app.cli.generate", "generate", "Run the generator on one image."),
    "dataset": ("app.cli.dataset", "dataset", "Build training sets."),
    "eval": ("app.cli.evaluate", "evaluate", "Evaluate a model on a held-out area."),
    "train": ("app.cli.train", "train", "Train a model."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise click.ClickException(f"command {name!r} is not available: {e}") from e

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, _, help_) in COMMANDS.items()])


@click.group(cls=LazyGroup)
@click.version_option(package_name="mapcascade")
def main() -> None:
    """mapcascade: generative web map tiles from remote-sensing imagery."""


if __name__ == "__main__":
    main()
