"""`python -m arke_local.fly_emulator`: serve the Fly Machines emulator until SIGTERM/SIGINT,
then kill every machine it started."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading

from .server import FlyEmulator
from .settings import EmulatorSettings, default_images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m arke_local.fly_emulator",
                                     description="Local Fly Machines API emulator")
    parser.add_argument("--host", help="bind address (env FLY_EMULATOR_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (env FLY_EMULATOR_PORT, default 4280)")
    parser.add_argument("--token", help="require this Bearer token (env FLY_EMULATOR_TOKEN)")
    parser.add_argument("--images", help="JSON image-to-command map (env FLY_EMULATOR_IMAGES)")
    parser.add_argument("--idle-unmapped", action="store_true",
                        help="run unmapped images as idle machines instead of refusing them")
    parser.add_argument("--max-machines", type=int, help="env FLY_EMULATOR_MAX_MACHINES")
    parser.add_argument("--create-rate", type=float, help="env FLY_EMULATOR_CREATE_RATE")
    parser.add_argument("--create-burst", type=int, help="env FLY_EMULATOR_CREATE_BURST")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(message)s")
    settings = EmulatorSettings.from_env()
    changes: dict[str, object] = {}
    for name in ("host", "port", "token", "max_machines", "create_rate", "create_burst"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.images:
        changes["images"] = {**default_images(), **json.loads(args.images)}
    if args.idle_unmapped:
        changes["idle_unmapped"] = True

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    emulator = FlyEmulator(settings, **changes).start()
    try:
        stop.wait()
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
