"""A local Fly Machines API: serves the machines endpoints on loopback, runs each machine
as a local process, and injects Fly's failure modes on demand. Part of the local stack;
never imported by `chalicelib/` or deployed.

    from arke_local.fly_emulator import FlyEmulator
    with FlyEmulator(port=0) as fly:
        ...  # talk to fly.url + "/v1/apps/{app}/machines"

See docs/fly-emulator.md.
"""

from .faults import FaultSettings
from .machines import MachineState
from .server import FlyEmulator
from .settings import IDLE, SYNTHETIC, WORKER_IMAGE, EmulatorSettings, ImageCommand

__all__ = [
    "IDLE",
    "SYNTHETIC",
    "WORKER_IMAGE",
    "EmulatorSettings",
    "FaultSettings",
    "FlyEmulator",
    "ImageCommand",
    "MachineState",
]
