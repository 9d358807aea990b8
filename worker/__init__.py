"""The Fly worker: converts one TIFF from R2 to a JPEG and calls the orchestrator back.

Its own deployable (see Dockerfile, fly.toml): it must never import from `chalicelib/`,
and it must keep working with exactly the environment of contracts §3.
"""
