"""Pool mode (docs/pool.md): machines that each pull tasks until none is left.

- `machine_api`: the machines' two requests, pull and heartbeat, behind their token.
- `candidates`: ready tasks read many at once, one handed to each pull.
- `creator`: a pass's share of the pool, sized by `pool_sizing` and created at the bucket's pace.
- `liveness`: machines gone silent, destroyed and retired.
- `request`: what Fly is asked to create for a pool machine.
"""
