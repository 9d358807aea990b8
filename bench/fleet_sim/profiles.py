"""The two worlds the simulation can stand in for, as numbers: `aws` (API Gateway + Lambda,
DynamoDB, Fly) for the reported runs, and `stack` (the local stack of bench.scale: one
`chalice local` process and one moto server, both serving one request's CPU at a time on
shared cores) for the validation against the real-time stack.

Why two: the real-time stack is not AWS. Its moto serves every DynamoDB request under one
lock at ~4 ms of CPU each (`make bench-moto`, README "Benchmarks"), and its API is one
Python process; a simulation of AWS would be faster than it and prove nothing about the
model. The `stack` profile reproduces those queues, so its makespan can be held against the
real one; the `aws` profile then changes only the numbers, not the code that runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from .api import ApiSpec
from .dynamo import DynamoLatency
from .fly_model import FlySpec


@dataclass(frozen=True)
class Profile:
    name: str
    api: ApiSpec
    dynamo: DynamoLatency
    fly: FlySpec


AWS = Profile(
    "aws",
    ApiSpec(mode="lambda", net_s=0.02, overhead_s=0.004, cold_start_s=0.8),
    # single-digit ms DynamoDB round trips in region; a transaction about twice a GetItem
    DynamoLatency(default_s=0.006, per_op_s={"TransactWriteItems": 0.012, "Query": 0.008}),
    FlySpec(api_latency_s=0.05, start_latency_s=0.4, boot_s=5.0, restart_boot_s=1.0),
)

STACK = Profile(
    "stack",
    # loopback, and one process whose request handling (routing, JSON, pynamodb) is serial
    ApiSpec(mode="process", net_s=0.0005, overhead_s=0.004, cold_start_s=0.0),
    # one moto server, one request at a time, ~4.0 ms of CPU each (bench.moto_server)
    DynamoLatency(default_s=0.001, service_s={"default": 0.004, "TransactWriteItems": 0.005}),
    # the Fly emulator: start latency 0.4 s, a worker process starts in about 0.3 s
    FlySpec(api_latency_s=0.002, start_latency_s=0.4, boot_s=5.0, restart_boot_s=0.3),
)

# The stack as above on its host's 2 cores, shared by moto, the API process (routing, JSON,
# pynamodb's client side: ~12 ms a request) and the emulator's machine threads (~3 ms a
# request they make). Under a pool of hundreds, the cores and not the protocol set the pace.
STACK_CORES = Profile(
    "stack-cores",
    ApiSpec(mode="process", net_s=0.0005, overhead_s=0.012, cold_start_s=0.0, cores=2, machine_cpu_s=0.003),
    STACK.dynamo,
    STACK.fly,
)

PROFILES = {p.name: p for p in (AWS, STACK, STACK_CORES)}
