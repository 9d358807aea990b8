"""`chalice package` with the merge template gives a template cfn-lint passes, with the
tables, queues, functions, the tick's reserved concurrency and its schedule.

Runs exactly the command docs/deploy.md gives. Slow-ish: chalice pip-downloads the
Lambda's wheels on a first run (pip's own cache, ~/.cache/pip or PIP_CACHE_DIR, keeps
later runs fast) and caches the built bundle under .chalice/deployments/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TABLE_ENV = {"BatchesTable": "BATCHES_TABLE", "TasksTable": "TASKS_TABLE", "FilesTable": "FILES_TABLE"}

pytestmark = pytest.mark.slow


def _tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed (requirements-dev.txt)")
    return found


def _stage_env(stage: str) -> dict[str, str]:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    return {**config.get("environment_variables", {}),
            **config["stages"][stage]["environment_variables"]}


@pytest.fixture(scope="module")
def packaged(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("package") / "out"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "ARKE_")) and k not in ("STAGE", "QUEUE_NAME")}
    env["AWS_DEFAULT_REGION"] = "us-east-1"
    cmd = [_tool("chalice"), "package", "--pkg-format", "cloudformation", "--stage", "dev",
           "--merge-template", "infra/resources.json", str(out)]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


@pytest.fixture(scope="module")
def template(packaged) -> dict:
    return json.loads((packaged / "sam.json").read_text())


def test_cfn_lint_finds_nothing(packaged):
    result = subprocess.run(
        [_tool("cfn-lint"), "--format", "json", str(packaged / "sam.json")],
        capture_output=True, text=True, timeout=120,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], json.dumps(findings, indent=1)
    assert result.returncode == 0, result.stderr


def test_bundle_holds_the_app_and_not_the_local_stack(packaged):
    import zipfile

    names = zipfile.ZipFile(packaged / "deployment.zip").namelist()
    assert "app.py" in names
    assert "chalicelib/store/__init__.py" in names and "chalicelib/store/tasks.py" in names
    assert "chalicelib/console.html" in names  # the console page is read from the bundle
    assert any(n.startswith("pynamodb/") for n in names)
    assert not any(n.startswith(("arke_local/", "tests/", "worker/", "infra/")) for n in names)


def test_template_has_tables_and_queues(template):
    resources = template["Resources"]
    for logical in TABLE_ENV:
        assert resources[logical]["Type"] == "AWS::DynamoDB::Table"
    assert resources["TasksTable"]["Properties"]["LocalSecondaryIndexes"]
    assert resources["BatchesTable"]["Properties"]["GlobalSecondaryIndexes"]
    queue, dlq = resources["JobsQueue"], resources["JobsDeadLetterQueue"]
    assert queue["Type"] == dlq["Type"] == "AWS::SQS::Queue"
    assert queue["Properties"]["QueueName"] == "arke-preprocess-jobs"
    assert dlq["Properties"]["QueueName"] == "preprocess-dlq"
    assert queue["Properties"]["RedrivePolicy"]["maxReceiveCount"] == 5
    assert queue["Properties"]["VisibilityTimeout"] >= 6 * resources["Intake"]["Properties"]["Timeout"]


def test_template_has_the_three_functions(template):
    resources = template["Resources"]
    handlers = {name: resources[name]["Properties"]["Handler"] for name in ("APIHandler", "Intake", "Tick")}
    assert handlers == {"APIHandler": "app.app", "Intake": "app.intake", "Tick": "app.tick"}
    for name in handlers:
        props = resources[name]["Properties"]
        assert resources[name]["Type"] == "AWS::Serverless::Function"
        assert props["Runtime"].startswith("python3.")
        variables = props["Environment"]["Variables"]
        for logical, env_name in TABLE_ENV.items():
            assert variables[env_name] == {"Ref": logical}
        assert variables["STAGE"] == "dev"
        assert variables["SSM_PREFIX"] == "/arke-preprocess/dev/"
    for name in ("Tick", "Intake"):
        url = resources[name]["Properties"]["Environment"]["Variables"]["ORCHESTRATOR_URL"]
        assert url["Fn::Sub"] == template["Outputs"]["EndpointURL"]["Value"]["Fn::Sub"].rstrip("/")
    assert resources["APIHandler"]["Properties"]["Timeout"] == 30
    assert resources["Intake"]["Properties"]["Timeout"] == 300
    assert resources["Tick"]["Properties"]["Timeout"] == 75


def test_tick_has_reserved_concurrency_one_and_the_schedule(template):
    tick = template["Resources"]["Tick"]["Properties"]
    assert tick["ReservedConcurrentExecutions"] == 1
    schedules = [e["Properties"]["Schedule"] for e in tick["Events"].values() if e["Type"] == "Schedule"]
    assert schedules == ["rate(1 minute)"]
    assert tick["EventInvokeConfig"] == {"MaximumEventAgeInSeconds": 60, "MaximumRetryAttempts": 0}


def test_intake_reads_the_queue_after_it_exists(template):
    intake = template["Resources"]["Intake"]
    assert intake["DependsOn"] == ["JobsQueue"]
    (event,) = intake["Properties"]["Events"].values()
    assert event["Type"] == "SQS"
    assert event["Properties"]["BatchSize"] == 1
    assert event["Properties"]["Queue"]["Fn::Sub"].endswith(":arke-preprocess-jobs")


def test_template_table_names_equal_the_config(template):
    env = _stage_env("dev")
    for logical, env_name in TABLE_ENV.items():
        name = template["Resources"][logical]["Properties"]["TableName"]["Fn::Sub"]
        assert name.replace("${Stage}", "dev") == env[env_name]
    assert "dev" in template["Parameters"]["Stage"]["AllowedValues"]


def test_roles_carry_the_policy_files(template):
    resources = template["Resources"]
    chalice_dir = ROOT / ".chalice"
    expected = {
        "ApiHandlerRole": chalice_dir / "policy-dev.json",
        "TickRole": chalice_dir / "policy-dev.json",
        "IntakeRole": chalice_dir / "policy-dev-intake.json",
    }
    for role, path in expected.items():
        (doc,) = resources[role]["Properties"]["Policies"]
        assert doc["PolicyDocument"] == json.loads(path.read_text()), role
    assert resources["Tick"]["Properties"]["Role"] == {"Fn::GetAtt": ["TickRole", "Arn"]}
    assert resources["Intake"]["Properties"]["Role"] == {"Fn::GetAtt": ["IntakeRole", "Arn"]}


def test_api_answers_what_lambda_cannot_in_the_contract_shape(template):
    """issue 11 §7 deployed: a path with no route is API Gateway's to answer (403 "Missing
    Authentication Token" by default); the gateway responses make it a 404 `{"error"}` with
    CORS, and every other gateway error `{"error"}` with CORS. A wrong method reaches the
    app (every route declares every method), which answers the contract's 405."""
    from arke_local.gateway_responses import gateway_responses

    body = template["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    answers = body["x-amazon-apigateway-gateway-responses"]
    assert answers == gateway_responses()  # what chalice local answers with, too
    assert answers["MISSING_AUTHENTICATION_TOKEN"]["statusCode"] == "404"
    for kind in ("MISSING_AUTHENTICATION_TOKEN", "DEFAULT_4XX", "DEFAULT_5XX"):
        params = answers[kind]["responseParameters"]
        assert params["gatewayresponse.header.Access-Control-Allow-Origin"] == "'*'"
        allowed = params["gatewayresponse.header.Access-Control-Allow-Headers"].strip("'")
        assert {"Authorization", "X-Admin-Token", "Content-Type"} <= {h.strip() for h in allowed.split(",")}
        rendered = answers[kind]["responseTemplates"]["application/json"]
        sample = rendered.replace("$context.error.messageString", '"x"').replace("$context.requestId", "r")
        assert set(json.loads(sample)) == {"error", "request_id"}
    for path, methods in body["paths"].items():
        assert {"get", "post", "put", "patch", "delete", "options"} <= set(methods), path
        for method in methods.values():
            assert method["consumes"] == ["*/*"], path
