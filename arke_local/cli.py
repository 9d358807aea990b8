"""`arke-preprocess`: the command line of the orchestrator and its local stack.

Commands: `local up`, `infra`, `submit DIR`, `watch BATCH`, `status BATCH`,
`tasks BATCH`, `reset BATCH`, `retry BATCH`, `redeliver BATCH`, `fetch BATCH DIR`, `received [BATCH]`, `samples DIR`,
`demo`. The local stack is the default target; `--stage`, `--api-url`,
`--endpoint-url` and the usual AWS environment point it at a deployed stage.
Each command is a thin call into the module that does the work.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from arke_local.target import Target, TargetError, resolve


def log(message: str) -> None:
    print(f"[CLI] {message}", file=sys.stderr, flush=True)  # stdout is for data (JSON, ids)


def _target(args) -> Target:
    return resolve(
        stage=args.stage,
        api_url=args.api_url,
        endpoint_url=args.endpoint_url,
        r2_endpoint_url=args.r2_endpoint_url,
        bucket=args.bucket,
        queue_name=args.queue_name,
    )


def _client(args):
    from arke_local.client import OrchestratorClient

    target = _target(args)
    return OrchestratorClient(target.require_api(), admin_token=target.admin_token)


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


# --- commands ------------------------------------------------------------------------
def cmd_local(args) -> int:
    from arke_local.endpoints import Ports
    from arke_local.stack import StackOptions, run_foreground

    if args.action != "up":
        log(f"unknown action {args.action!r}")
        return 2
    options = StackOptions(
        ports=Ports.from_env(),
        worker_url=os.environ.get("WORKER_URL") or None,
        log_dir=Path(args.log_dir) if args.log_dir else None,
    )
    return run_foreground(options)


def cmd_infra(args) -> int:
    from arke_local import infra
    from arke_local.endpoints import LOCAL_STAGE

    target = _target(args)
    local = target.stage == LOCAL_STAGE
    if local:
        # The orchestrator's models read the endpoint and credentials from the environment.
        from arke_local.endpoints import LOCAL_AWS_CREDENTIALS

        # (Real credentials, if any are set, are never sent to the local endpoint.)
        os.environ["AWS_ENDPOINT_URL"] = target.aws_endpoint or ""
        os.environ.update(LOCAL_AWS_CREDENTIALS)
        os.environ.pop("AWS_PROFILE", None)
        os.environ.setdefault("AWS_DEFAULT_REGION", target.region)
        os.environ.setdefault("STAGE", target.stage)
    elif target.aws_endpoint:
        os.environ.setdefault("AWS_ENDPOINT_URL", target.aws_endpoint)
    cfg = infra.InfraConfig(
        stage=target.stage,
        endpoint_url=target.aws_endpoint,
        region=target.region,
        queue_name=target.queue_name,
        dlq_name=target.dlq_name,
        bucket=target.bucket,
        max_receive_count=args.max_receive_count,
        visibility_timeout_s=args.visibility_timeout,
        create_bucket=local if args.bucket_too is None else args.bucket_too,
        tables=not args.no_tables,
    )
    with_secrets = True if local else args.put_secrets
    try:
        report = infra.create_all(cfg, with_secrets=with_secrets)
    except infra.InfraError as exc:
        log(f"infra failed: {exc}")
        return 1
    log(
        f"stage {cfg.stage}: queue {report.queue_url}, dlq {report.dlq_url}"
        + (f", bucket {report.bucket}" if report.bucket else "")
        + (", tables" if report.tables else "")
        + (f", secrets {len(report.secrets_put)}" if report.secrets_put else "")
    )
    return 0


def cmd_submit(args) -> int:
    from arke_local.submission import submit_folder

    target = _target(args)
    message = submit_folder(
        target,
        args.folder,
        batch_id=args.batch_id,
        manifest=args.manifest,
        via_api=args.via_api,
        parent_pi=args.parent_pi,
    )
    if args.no_watch:
        print(message["batch_id"], flush=True)  # for scripts: BATCH=$(... submit --no-watch)
        return 0
    return _watch(args, message["batch_id"])


def _watch(args, batch_id: str) -> int:
    from arke_local.progress import watch

    code, _ = watch(
        _client(args), batch_id, interval_s=args.interval, timeout_s=args.timeout,
        retry_command=_retry_command(args, batch_id),
    )
    return code  # 0 DONE, 1 ERROR (or gave up), 2 DONE with failed tasks


def _retry_command(args, batch_id: str) -> str:
    """The command that retries the batch's failed tasks, with the options that name its stage."""
    words = ["arke-preprocess"]
    for option in ("stage", "api_url"):
        value = getattr(args, option, None)
        if value:
            words += [f"--{option.replace('_', '-')}", value]
    return " ".join(words + ["retry", batch_id])


def cmd_watch(args) -> int:
    return _watch(args, args.batch_id)


def cmd_status(args) -> int:
    from arke_local.client import ApiError

    try:
        _print_json(_client(args).status(args.batch_id))
    except ApiError as exc:
        log(str(exc))
        return 1
    return 0


def cmd_tasks(args) -> int:
    from arke_local.client import ApiError

    status = "failed" if args.failed else args.status
    try:
        tasks = _client(args).tasks(args.batch_id, status=status)
    except ApiError as exc:
        log(str(exc))
        return 1
    if args.json:
        _print_json({"batch_id": args.batch_id, "tasks": tasks})
        return 0
    for t in tasks:
        err = f"  error: {t.get('last_error')}" if t.get("last_error") else ""
        out = f" -> {t.get('output_r2_key')}" if t.get("output_r2_key") else ""
        print(f"{t.get('status', '?'):<10} attempts={t.get('attempts', 0)}  {t.get('input_r2_key')}{out}{err}")
    log(f"{len(tasks)} task(s)" + (f" with status {status}" if status else ""))
    return 0


def cmd_admin(args) -> int:
    """reset, retry (re-run failed tasks) and redeliver (the final callback)."""
    from arke_local.client import ApiError

    try:
        _print_json(_client(args).admin(args.action, args.batch_id))
    except ApiError as exc:
        log(str(exc))
        return 1
    return 0


def cmd_fetch(args) -> int:
    from arke_local.fetch import fetch_jpegs

    target = _target(args)
    paths = fetch_jpegs(target.r2(), target.bucket, args.batch_id, Path(args.folder))
    log(f"{len(paths)} JPEG(s) of {args.batch_id} in {Path(args.folder).resolve()}")
    return 0


def cmd_received(args) -> int:
    import requests

    from arke_local.endpoints import Endpoints, Ports

    base = args.receiver_url or Endpoints(Ports.from_env()).ingest
    path = f"/received/{args.batch_id}" if args.batch_id else "/received"
    resp = requests.get(base.rstrip("/") + path, timeout=10)
    _print_json(resp.json())
    return 0 if resp.ok else 1


def cmd_samples(args) -> int:
    from arke_local.samples import generate_batch

    samples = generate_batch(args.folder, args.count, seed=args.seed, broken=args.broken)
    tiffs = sum(1 for s in samples if s.is_tiff)
    log(f"{len(samples)} files ({tiffs} TIFFs, {args.broken} broken) in {Path(args.folder).resolve()}")
    return 0


def cmd_demo(args) -> int:
    from arke_local.demo import run_demo

    return run_demo(count=args.count, out_dir=Path(args.out), keep_logs=True)


# --- parser --------------------------------------------------------------------------
def _target_options(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument("--stage", default=default, help="stage (default: ARKE_STAGE or local)")
    parser.add_argument("--api-url", default=default, help="the orchestrator's API (default: local stack)")
    parser.add_argument("--endpoint-url", default=default, help="AWS endpoint (SQS, DynamoDB, SSM)")
    parser.add_argument("--r2-endpoint-url", default=default, help="R2 endpoint (default: from the stage)")
    parser.add_argument("--bucket", default=default, help="R2 bucket (default: R2_BUCKET or arke-staging)")
    parser.add_argument("--queue-name", default=default, help="job queue (default: arke-preprocess-jobs)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arke-preprocess",
        description="Arke preprocessing orchestrator: local stack and batch tools.",
    )
    _target_options(parser, default=None)
    common = argparse.ArgumentParser(add_help=False)
    _target_options(common, default=argparse.SUPPRESS)  # also accepted after the command
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("local", parents=[common], help="the local stack: `local up` runs it in the foreground")
    p.add_argument("action", choices=["up"])
    p.add_argument("--log-dir", default=None, help="write each component's output to a file here")
    p.set_defaults(func=cmd_local)

    p = sub.add_parser("infra", parents=[common], help="create the stage's tables, queues, bucket and secrets")
    p.add_argument("--put-secrets", action="store_true", help="non-local stages: put the secrets from the environment")
    p.add_argument("--max-receive-count", type=int, default=int(os.environ.get("ARKE_MAX_RECEIVE_COUNT", "3")))
    p.add_argument("--visibility-timeout", type=int, default=int(os.environ.get("ARKE_QUEUE_VISIBILITY_S", "60")))
    p.add_argument("--bucket-too", dest="bucket_too", action="store_true", default=None,
                   help="create the bucket on a non-local stage as well")
    p.add_argument("--no-tables", action="store_true")
    p.set_defaults(func=cmd_infra)

    def watch_options(q):
        q.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
        q.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")

    p = sub.add_parser("submit", parents=[common], help="upload a folder as a batch and send its queue message")
    p.add_argument("folder")
    p.add_argument("--batch-id", default=None)
    p.add_argument("--parent-pi", default=None)
    p.add_argument("--manifest", choices=["auto", "always", "never"], default="auto")
    p.add_argument("--via-api", action="store_true", help="POST /test instead of the queue")
    p.add_argument("--no-watch", action="store_true")
    watch_options(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("watch", parents=[common], help="progress of a batch: exit 0 DONE, 1 ERROR, 2 DONE with failed tasks")
    p.add_argument("batch_id")
    watch_options(p)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("status", parents=[common], help="GET /status/{batch}")
    p.add_argument("batch_id")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("tasks", parents=[common], help="GET /status/{batch}/tasks")
    p.add_argument("batch_id")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--failed", action="store_true")
    g.add_argument("--status", choices=["failed", "pending", "processing", "completed"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tasks)

    for action, text in (("reset", "stop a batch for good"), ("retry", "re-run a batch's failed tasks"),
                         ("redeliver", "re-send a batch's final callback")):
        p = sub.add_parser(action, parents=[common], help=f"POST /admin/{action}/{{batch}}: {text}")
        p.add_argument("batch_id")
        p.set_defaults(func=cmd_admin, action=action)

    p = sub.add_parser("fetch", parents=[common], help="download a batch's JPEGs")
    p.add_argument("batch_id")
    p.add_argument("folder")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("received", parents=[common], help="what the local ingest receiver got")
    p.add_argument("batch_id", nargs="?")
    p.add_argument("--receiver-url", default=None)
    p.set_defaults(func=cmd_received)

    p = sub.add_parser("samples", parents=[common], help="generate sample TIFFs of every kind")
    p.add_argument("folder")
    p.add_argument("--count", type=int, default=24)
    p.add_argument("--broken", type=int, default=1)
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=cmd_samples)

    p = sub.add_parser("demo", parents=[common], help="start the stack, run sample TIFFs through it, stop it")
    p.add_argument("--count", type=int, default=24, help="TIFFs in the batch (one is broken)")
    p.add_argument("--out", default="out/demo", help="where the samples, JPEGs and logs go")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TargetError as exc:
        log(str(exc))
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `arke-preprocess status B | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
