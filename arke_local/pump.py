"""The event pump: plays Lambda's part for the orchestrator's event handlers, locally.

Two loops, as AWS would run them:
- the SQS event source mapping: long-polls the job queue and invokes `app.intake(event,
  context)` with an SQS-shaped event, one message at a time; deletes the message on
  success and leaves it on failure, so the queue's redrive policy retries it and finally
  moves it to the dead-letter queue;
- the schedule: invokes `app.tick(event, context)` with a scheduled event and a
  Lambda-like context. The tick loops until its remaining time is low; when it returns
  the pump invokes it again, as a 1-minute schedule with a matching timeout would.

It never interprets a message or decides anything about a batch: that is the app's.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import boto3

from arke_local.endpoints import QUEUE_NAME, REGION

Handler = Callable[[dict, object], object]


def log(message: str) -> None:
    print(f"[Pump] {message}", flush=True)


def _where(exc: BaseException) -> str:
    """Where an exception was raised, for a one-line log: `(at file.py:12 in func)`."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f"(at {os.path.basename(last.filename)}:{last.lineno} in {last.name})"


class LambdaContext:
    """The parts of Lambda's context object the orchestrator reads."""

    def __init__(self, function_name: str, timeout_ms: int, memory_limit_in_mb: int = 512):
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:{function_name}"
        self.memory_limit_in_mb = memory_limit_in_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_ms / 1000.0

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def sqs_event(message: dict, queue_arn: str, region: str = REGION) -> dict:
    """An SQS event with one record, as Lambda's event source mapping builds it."""
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message.get("Attributes", {}),
                "messageAttributes": message.get("MessageAttributes", {}),
                "md5OfBody": message.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
        ]
    }


def scheduled_event(rule_name: str, region: str = REGION) -> dict:
    """An EventBridge scheduled event, as the 1-minute rule delivers it."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:123456789012:rule/{rule_name}"],
        "detail": {},
    }


class EventPump:
    def __init__(
        self,
        intake: Handler | None,
        tick: Handler | None,
        *,
        sqs=None,
        queue_url: str | None = None,
        queue_name: str = QUEUE_NAME,
        function_prefix: str = "arke-preprocessing-orchestrator-local",
        intake_timeout_ms: int = 60_000,
        tick_timeout_ms: int = 60_000,
        tick_min_interval_s: float = 1.0,
        wait_time_s: int = 2,
        retry_visibility_s: int | None = None,
    ):
        self.intake = intake
        self.tick = tick
        self.sqs = sqs
        self.queue_url = queue_url
        self.queue_name = queue_name
        self.function_prefix = function_prefix
        self.intake_timeout_ms = intake_timeout_ms
        self.tick_timeout_ms = tick_timeout_ms
        self.tick_min_interval_s = tick_min_interval_s
        self.wait_time_s = wait_time_s
        self.retry_visibility_s = retry_visibility_s
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.queue_arn = ""
        self.stats = {"intake_ok": 0, "intake_failed": 0, "ticks": 0, "tick_failed": 0}

    # --- the queue -----------------------------------------------------------------
    def _resolve_queue(self) -> None:
        if self.sqs is None:
            self.sqs = boto3.client("sqs")
        while self.queue_url is None and not self.stopping.is_set():
            try:
                self.queue_url = self.sqs.get_queue_url(QueueName=self.queue_name)["QueueUrl"]
            except Exception as exc:  # the queue may not exist yet while infra runs
                log(f"waiting for queue {self.queue_name}: {type(exc).__name__}")
                self.stopping.wait(1.0)
        if self.queue_url and not self.queue_arn:
            attrs = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
            self.queue_arn = attrs["Attributes"]["QueueArn"]

    def poll_once(self, wait_time_s: int | None = None) -> int:
        """Receive at most one message and invoke intake with it. Returns 0 or 1."""
        self._resolve_queue()
        if self.queue_url is None:
            return 0
        resp = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=1,
            WaitTimeSeconds=self.wait_time_s if wait_time_s is None else wait_time_s,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = resp.get("Messages", [])
        for message in messages:
            self._deliver(message)
        return len(messages)

    def _deliver(self, message: dict) -> None:
        mid = message["MessageId"]
        receives = message.get("Attributes", {}).get("ApproximateReceiveCount", "?")
        context = LambdaContext(f"{self.function_prefix}-intake", self.intake_timeout_ms)
        started = time.monotonic()
        try:
            self.intake(sqs_event(message, self.queue_arn), context)
        except Exception as exc:
            self.stats["intake_failed"] += 1
            took = (time.monotonic() - started) * 1000
            log(
                f"intake message {mid} failed (receive {receives}, {took:.0f} ms): "
                f"{type(exc).__name__}: {exc} {_where(exc)}; left on the queue for redrive"
            )
            if self.retry_visibility_s is not None:
                try:
                    self.sqs.change_message_visibility(
                        QueueUrl=self.queue_url,
                        ReceiptHandle=message["ReceiptHandle"],
                        VisibilityTimeout=self.retry_visibility_s,
                    )
                except Exception as vexc:
                    log(f"could not shorten visibility of {mid}: {vexc}")
            return
        self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        self.stats["intake_ok"] += 1
        took = (time.monotonic() - started) * 1000
        log(f"intake message {mid} ok (receive {receives}, {took:.0f} ms); deleted")

    def queue_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.poll_once()
            except Exception as exc:
                log(f"queue poll failed: {type(exc).__name__}: {exc}")
                self.stopping.wait(1.0)

    # --- the schedule --------------------------------------------------------------
    def tick_once(self) -> None:
        context = LambdaContext(f"{self.function_prefix}-tick", self.tick_timeout_ms)
        started = time.monotonic()
        try:
            self.tick(scheduled_event(f"{self.function_prefix}-tick"), context)
        except Exception as exc:
            self.stats["tick_failed"] += 1
            log(f"tick {context.aws_request_id} failed: {type(exc).__name__}: {exc} {_where(exc)}")
        else:
            self.stats["ticks"] += 1
            took = time.monotonic() - started
            log(f"tick {context.aws_request_id} returned after {took:.1f} s")

    def tick_loop(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            self.tick_once()
            rest = self.tick_min_interval_s - (time.monotonic() - started)
            if rest > 0:
                self.stopping.wait(rest)

    # --- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        if self.intake is not None:
            self.threads.append(threading.Thread(target=self.queue_loop, name="pump-queue", daemon=True))
        if self.tick is not None:
            self.threads.append(threading.Thread(target=self.tick_loop, name="pump-tick", daemon=True))
        for t in self.threads:
            t.start()
        log(
            f"started: intake {'on' if self.intake else 'off'}, tick {'on' if self.tick else 'off'} "
            f"(timeout {self.tick_timeout_ms} ms)"
        )

    def stop(self, timeout_s: float = 5.0) -> None:
        self.stopping.set()
        deadline = time.monotonic() + timeout_s
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        log("stopped")


def load_handlers(module_name: str) -> tuple[Handler, Handler]:
    module = importlib.import_module(module_name)
    return module.intake, module.tick


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m arke_local.pump", description=__doc__.split("\n")[0])
    parser.add_argument("--app-module", default=os.environ.get("ARKE_PUMP_APP", "app"))
    parser.add_argument("--queue-name", default=os.environ.get("QUEUE_NAME", QUEUE_NAME))
    parser.add_argument(
        "--tick-timeout-ms", type=int, default=int(os.environ.get("ARKE_PUMP_TICK_TIMEOUT_MS", "75000"))
    )
    parser.add_argument(
        "--wait-time-s", type=int, default=int(os.environ.get("ARKE_PUMP_WAIT_S", "2"))
    )
    parser.add_argument(
        "--retry-visibility-s",
        type=int,
        default=int(os.environ.get("ARKE_PUMP_RETRY_VISIBILITY_S", "5")),
        help="visibility timeout given to a message whose intake failed (-1: the queue's own)",
    )
    parser.add_argument("--no-intake", action="store_true")
    parser.add_argument("--no-tick", action="store_true")
    args = parser.parse_args(argv)

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    intake, tick = load_handlers(args.app_module)
    pump = EventPump(
        None if args.no_intake else intake,
        None if args.no_tick else tick,
        queue_name=args.queue_name,
        tick_timeout_ms=args.tick_timeout_ms,
        wait_time_s=args.wait_time_s,
        retry_visibility_s=None if args.retry_visibility_s < 0 else args.retry_visibility_s,
    )
    done = threading.Event()

    def on_signal(signum, _frame):
        log(f"signal {signum}: stopping")
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    pump.start()
    done.wait()
    pump.stop(timeout_s=0.5)
    # A tick still inside the app (or its thread pools) must not hold the exit up: Lambda
    # would freeze it too. Everything it wrote is already in DynamoDB or lost with it.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
