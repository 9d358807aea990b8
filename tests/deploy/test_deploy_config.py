"""The deployment's configuration agrees with itself and with the code, without packaging.

`.chalice/config.json` (stages, env, per-function timeouts), the IAM policy files and the
CloudFormation merge template `infra/resources.json` name the same tables, queue and SSM
prefix; the tables match the pynamodb models; the numbers obey the rules docs/deploy.md
explains (tick timeout vs. schedule and margin, queue visibility vs. intake timeout).
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from chalicelib import models
from chalicelib.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / ".chalice" / "config.json"
MERGE_TEMPLATE = ROOT / "infra" / "resources.json"
DEPLOYED = ("dev", "prod")
TABLE_ENV = {"BatchesTable": "BATCHES_TABLE", "TasksTable": "TASKS_TABLE", "FilesTable": "FILES_TABLE"}
MODEL_OF = {"BatchesTable": models.Batch, "TasksTable": models.Task, "FilesTable": models.File}
SEED_NUMBERS = {
    "BATCH_SIZE_TIFF_CONVERSION": "1000",
    "ALARM_DELAY_TIFF_CONVERSION": "5000",
    "ALARM_DELAY_ERROR_RETRY": "30000",
    "MAX_RETRY_ATTEMPTS": "5",
    "TASK_TIMEOUT_TIFF_CONVERSION": "300000",
}
SEED_NAMES = {
    "FLY_APP_NAME": "arke-tiff-worker",
    "FLY_WORKER_IMAGE": "registry.fly.io/arke-tiff-worker:latest",
    "FLY_REGION": "ord",
    "R2_BUCKET": "arke-staging",
}
# Where each stage's final callback goes: dev never delivers into production.
WORKER_URL = {"prod": "https://ingest.arke.institute", "dev": "https://worker-url-not-set.invalid"}
SECRET_NAMES = ("FLY_API_TOKEN", "R2_ACCOUNT_ID", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY")


def load_config() -> dict:
    return json.loads(CONFIG.read_text())


def load_merge_template() -> dict:
    return json.loads(MERGE_TEMPLATE.read_text())


def stage_env(stage: str) -> dict[str, str]:
    """What chalice gives a stage's functions: top-level env overlaid by the stage's."""
    config = load_config()
    return {**config.get("environment_variables", {}),
            **config["stages"][stage].get("environment_variables", {})}


def function_config(stage: str, name: str) -> dict:
    return load_config()["stages"][stage]["lambda_functions"][name]


def policy(stage: str, function: str) -> dict:
    stage_cfg = load_config()["stages"][stage]
    filename = stage_cfg["lambda_functions"].get(function, {}).get(
        "iam_policy_file", stage_cfg.get("iam_policy_file", f"policy-{stage}.json"))
    return json.loads((ROOT / ".chalice" / filename).read_text())


def resolve_stage(value, stage: str) -> str:
    """A TableName of the merge template (`{"Fn::Sub": "...${Stage}"}`) for one stage."""
    assert isinstance(value, dict) and set(value) == {"Fn::Sub"}, value
    return value["Fn::Sub"].replace("${Stage}", stage)


def app_handlers() -> set[str]:
    """Names of app.py's decorated handler functions (without importing app.py)."""
    tree = ast.parse((ROOT / "app.py").read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            for dec in node.decorator_list:
                if isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute) \
                        and dec.func.attr in ("on_sqs_message", "schedule"):
                    names.add(node.name)
    return names


# ---- config.json -------------------------------------------------------------------------

def test_config_is_valid_json_with_the_four_stages():
    config = load_config()
    assert config["version"] == "2.0"
    assert config["app_name"] == "arke-preprocessing-orchestrator"
    assert set(config["stages"]) == {"dev", "prod", "local", "local-stack"}


def test_local_stack_stage_pins_nothing_but_the_stage():
    # `chalice local` copies the stage's environment_variables (top level merged with the
    # stage's) into os.environ before importing app.py, overwriting what the local stack
    # exported (AWS_ENDPOINT_URL, FLY_API_HOSTNAME, its ports, ...). So nothing at the top
    # level, and the stage the stack runs its API with sets STAGE only.
    from arke_local.endpoints import STACK_CHALICE_STAGE

    config = load_config()
    assert "environment_variables" not in config
    assert "lambda_functions" not in config
    assert stage_env(STACK_CHALICE_STAGE) == {"STAGE": "local"}
    assert "lambda_functions" not in config["stages"][STACK_CHALICE_STAGE]


def test_local_stage_is_the_stack_at_its_default_ports():
    # A hand-run `chalice local --stage local` beside `make up` needs no variable: its stage
    # names the stack's default endpoints and dummy credentials, and no secret (they are in
    # the stack's SSM, which infra fills).
    from arke_local.endpoints import LOCAL_SECRETS, Endpoints, Ports, orchestrator_env

    expected = {k: v for k, v in orchestrator_env(Endpoints(Ports())).items() if k not in LOCAL_SECRETS}
    assert stage_env("local") == expected
    assert stage_env("local")["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000"
    assert "lambda_functions" not in load_config()["stages"]["local"]


@pytest.mark.parametrize("stage", DEPLOYED)
def test_stage_env_names_its_own_resources(stage):
    env = stage_env(stage)
    assert env["STAGE"] == stage
    assert env["BATCHES_TABLE"] == f"arke-preprocess-batches-{stage}"
    assert env["TASKS_TABLE"] == f"arke-preprocess-tasks-{stage}"
    assert env["FILES_TABLE"] == f"arke-preprocess-files-{stage}"
    assert env["SSM_PREFIX"] == f"/arke-preprocess/{stage}/"
    assert env["QUEUE_NAME"] == "arke-preprocess-jobs"
    assert env["DLQ_NAME"] == "preprocess-dlq"
    assert "ORCHESTRATOR_URL" in env
    for name, value in {**SEED_NUMBERS, **SEED_NAMES}.items():
        assert env[name] == value, name
    assert env["WORKER_URL"] == WORKER_URL[stage]
    assert all(isinstance(v, str) for v in env.values())
    # Secrets never sit in config.json: they come from SSM.
    assert not set(SECRET_NAMES) & set(env)
    assert "AWS_ENDPOINT_URL" not in env and "R2_ENDPOINT_URL" not in env


@pytest.mark.parametrize("stage", DEPLOYED)
def test_stage_env_parses_into_settings(stage):
    settings = Settings.from_env(stage_env(stage))
    assert settings.stage == stage
    assert settings.batches_table == f"arke-preprocess-batches-{stage}"
    assert settings.ssm_prefix == f"/arke-preprocess/{stage}/"
    assert settings.batch_size_tiff_conversion == 1000
    assert settings.task_timeout_tiff_conversion_ms == 300000


@pytest.mark.parametrize("stage", DEPLOYED)
def test_functions_have_deliberate_timeouts_and_memory(stage):
    functions = load_config()["stages"][stage]["lambda_functions"]
    assert set(functions) == {"api_handler"} | app_handlers() == {"api_handler", "intake", "tick"}
    for name, cfg in functions.items():
        assert isinstance(cfg["lambda_timeout"], int), name
        assert isinstance(cfg["lambda_memory_size"], int), name
    assert functions["api_handler"]["lambda_timeout"] <= 29 + 1  # API Gateway's limit is 29 s
    tick = functions["tick"]
    assert tick["reserved_concurrency"] == 1
    margin_s = int(stage_env(stage).get("TICK_MARGIN_MS", Settings.tick_margin_ms)) / 1000
    # EventBridge fires the tick every 60 s; it works until `margin` before its timeout,
    # so it must outlive the minute (no gap between invocations) with the margin to spare.
    assert tick["lambda_timeout"] - margin_s >= 60
    assert tick["lambda_timeout"] <= 120
    assert "reserved_concurrency" not in functions["intake"]


# ---- IAM policies ---------------------------------------------------------------------------

def _statements(doc: dict) -> list[dict]:
    assert doc["Version"] == "2012-10-17"
    return doc["Statement"]


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("stage", DEPLOYED)
@pytest.mark.parametrize("function", ["api_handler", "intake", "tick"])
def test_policy_covers_exactly_the_stage_resources(stage, function):
    env = stage_env(stage)
    statements = _statements(policy(stage, function))
    actions: dict[str, set[str]] = {}
    for st in statements:
        assert st["Effect"] == "Allow"
        for action in _as_list(st["Action"]):
            assert "*" not in action, action
            actions.setdefault(action.split(":")[0], set()).add(action)
        for resource in _as_list(st["Resource"]):
            # Account-agnostic: chalice's policy file takes no CloudFormation substitutions.
            assert resource.startswith("arn:aws:"), resource
    # BatchGetItem: the console's batch list (GET /batches); the API and the tick share a file.
    reads = {"BatchGetItem"} if function != "intake" else set()
    assert actions["dynamodb"] == {f"dynamodb:{a}" for a in (
        "GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "BatchWriteItem",
        "ConditionCheckItem", *reads)}
    assert actions["ssm"] == {"ssm:GetParametersByPath", "ssm:GetParameters", "ssm:GetParameter"}
    assert actions["kms"] == {"kms:Decrypt"}
    assert actions["logs"] == {"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"}
    if function == "intake":
        assert actions["sqs"] == {"sqs:ReceiveMessage", "sqs:DeleteMessage",
                                  "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"}
    else:
        assert "sqs" not in actions
    assert set(actions) <= {"dynamodb", "ssm", "kms", "logs", "sqs"}

    by_service = {_as_list(st["Action"])[0].split(":")[0]: st for st in statements}
    tables = {env[v] for v in TABLE_ENV.values()}
    assert set(by_service["dynamodb"]["Resource"]) == (
        {f"arn:aws:dynamodb:*:*:table/{t}" for t in tables}
        | {f"arn:aws:dynamodb:*:*:table/{t}/index/*" for t in tables})
    prefix = env["SSM_PREFIX"].rstrip("/")
    assert set(_as_list(by_service["ssm"]["Resource"])) == {
        f"arn:aws:ssm:*:*:parameter{prefix}", f"arn:aws:ssm:*:*:parameter{prefix}/*"}
    kms_condition = by_service["kms"]["Condition"]["StringLike"]
    assert kms_condition["kms:ViaService"] == "ssm.*.amazonaws.com"
    assert kms_condition["kms:EncryptionContext:PARAMETER_ARN"] == f"arn:aws:ssm:*:*:parameter{prefix}/*"
    if function == "intake":
        assert by_service["sqs"]["Resource"] == f"arn:aws:sqs:*:*:{env['QUEUE_NAME']}"


# ---- merge template -----------------------------------------------------------------------

def test_merge_template_tables_match_the_pynamodb_models():
    resources = load_merge_template()["Resources"]
    for logical, model in MODEL_OF.items():
        props = resources[logical]["Properties"]
        schema = model._get_schema()
        assert resources[logical]["Type"] == "AWS::DynamoDB::Table"
        assert props["BillingMode"] == "PAY_PER_REQUEST" == model.Meta.billing_mode
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        key = lambda d: sorted(d, key=json.dumps)  # noqa: E731
        assert key(props["AttributeDefinitions"]) == key(schema["attribute_definitions"])
        assert key(props["KeySchema"]) == key(schema["key_schema"])
        for kind, cfn_name in (("global_secondary_indexes", "GlobalSecondaryIndexes"),
                               ("local_secondary_indexes", "LocalSecondaryIndexes")):
            want = {ix["index_name"]: (key(ix["key_schema"]), ix["projection"]) for ix in schema[kind]}
            got = {ix["IndexName"]: (key(ix["KeySchema"]), ix["Projection"])
                   for ix in props.get(cfn_name, [])}
            assert got == want, (logical, kind)
    assert resources["BatchesTable"]["Properties"]["GlobalSecondaryIndexes"][0]["IndexName"] == "active-index"
    assert {ix["IndexName"] for ix in resources["TasksTable"]["Properties"]["LocalSecondaryIndexes"]} == {
        "open-index", "status-index"}


@pytest.mark.parametrize("stage", DEPLOYED)
def test_merge_template_table_names_equal_the_stage_env(stage):
    template = load_merge_template()
    assert stage in template["Parameters"]["Stage"]["AllowedValues"]
    env = stage_env(stage)
    for logical, env_name in TABLE_ENV.items():
        assert resolve_stage(template["Resources"][logical]["Properties"]["TableName"], stage) == env[env_name]


def test_merge_template_points_the_functions_at_its_tables():
    resources = load_merge_template()["Resources"]
    tables = {env: {"Ref": logical} for logical, env in TABLE_ENV.items()}
    api_url = {"Fn::Sub": "https://${RestAPI}.execute-api.${AWS::Region}.${AWS::URLSuffix}/api"}
    # The tick builds the machines' CALLBACK_URL, so it (and intake) get the API's URL from
    # the stack itself. The API function cannot: RestAPI already refers to it (a cycle).
    for function in ("Intake", "Tick"):
        variables = resources[function]["Properties"]["Environment"]["Variables"]
        assert variables == {**tables, "ORCHESTRATOR_URL": api_url}
    assert resources["APIHandler"]["Properties"]["Environment"]["Variables"] == tables
    stage_name = load_config()["stages"]["dev"]["api_gateway_stage"]
    assert api_url["Fn::Sub"].endswith(f"/{stage_name}")
    assert resources["Intake"]["DependsOn"] == ["JobsQueue"]


@pytest.mark.parametrize("stage", DEPLOYED)
def test_queues_follow_the_contract_and_the_intake_timeout(stage):
    resources = load_merge_template()["Resources"]
    env = stage_env(stage)
    queue = resources["JobsQueue"]["Properties"]
    dlq = resources["JobsDeadLetterQueue"]["Properties"]
    assert queue["QueueName"] == env["QUEUE_NAME"] == "arke-preprocess-jobs"
    assert dlq["QueueName"] == env["DLQ_NAME"] == "preprocess-dlq"
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]}, "maxReceiveCount": 5}
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert dlq["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]
    # AWS: an SQS event source's visibility timeout should be >= 6 x the function timeout.
    assert queue["VisibilityTimeout"] >= 6 * function_config(stage, "intake")["lambda_timeout"]
    assert queue["VisibilityTimeout"] <= 12 * 3600


def test_no_placeholder_is_mistaken_for_a_url():
    # The API URL is known only after the first deploy; until then ORCHESTRATOR_URL is a
    # name under the reserved `.invalid` TLD (RFC 2606), which can never resolve.
    for stage in DEPLOYED:
        url = stage_env(stage)["ORCHESTRATOR_URL"]
        assert re.fullmatch(r"https://\S+", url)
        if "execute-api" not in url:
            assert url.endswith(".invalid")


def test_dev_worker_url_is_a_placeholder_that_refuses_to_deliver():
    from chalicelib.errors import DeliveryNotConfiguredError
    from chalicelib.ingest import WORKER_URL_UNSET, deliver

    assert stage_env("dev")["WORKER_URL"] == WORKER_URL_UNSET
    assert stage_env("dev")["WORKER_URL"] != stage_env("prod")["WORKER_URL"]

    class NoNetwork:
        def post(self, *a, **kw):
            raise AssertionError("a placeholder WORKER_URL must not be called")

    with pytest.raises(DeliveryNotConfiguredError, match="WORKER_URL is not set for stage dev"):
        deliver(Settings.from_env(stage_env("dev")), NoNetwork(), "batch_x", [], "batch_x:1:1")
