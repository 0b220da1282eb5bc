"""`ipsec-lab engine start|stop` and `ipsec-lab image build`: what the docker backend runs on.

The engine and image modules (lab.backends.docker) are imported inside the commands: they load
the docker SDK, which is slow to import, and `ipsec-lab --help` or a netns run should not pay
for it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from lab.cli.console import out, progress
from lab.errors import LabError

engine_app = typer.Typer(help="The Docker engine the docker backend uses.", no_args_is_help=True)
image_app = typer.Typer(help="The strongSwan image of the docker backend.", no_args_is_help=True)


@engine_app.command("start")
def engine_start() -> None:
    """Use a running engine, or install docker.io and start dockerd (no firewall changes)."""
    from lab.backends.docker.engine import ensure_engine

    client = ensure_engine(progress=progress)
    out.print(f"Docker engine {client.version().get('Version', '?')} answers")


@engine_app.command("stop")
def engine_stop() -> None:
    """Stop the dockerd that ipsec-lab started (never one it did not start)."""
    from lab.backends.docker.engine import stop_engine

    stopped = stop_engine(progress=progress)
    out.print("stopped the dockerd ipsec-lab started" if stopped else "no dockerd of ours runs")


@image_app.command("build")
def image_build(
    method: Annotated[str, typer.Option(help="auto, dockerfile or mmdebstrap.")] = "auto",
    force: Annotated[bool, typer.Option(help="Rebuild even when the image exists.")] = False,
) -> None:
    """Build (or reuse) the strongSwan image: Dockerfile with a registry, mmdebstrap without."""
    from lab.backends.docker.engine import ensure_engine
    from lab.backends.docker.image import build_image

    if method not in ("auto", "dockerfile", "mmdebstrap"):
        raise LabError(f"--method: must be auto, dockerfile or mmdebstrap (got {method!r})")
    tag = build_image(ensure_engine(progress=progress), method, progress=progress,  # type: ignore[arg-type]
                      force=force)
    out.print(f"image {tag} ready")


def register(app: typer.Typer) -> None:
    app.add_typer(engine_app, name="engine")
    app.add_typer(image_app, name="image")
