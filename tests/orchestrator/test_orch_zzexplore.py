import json, time, boto3
import app
from chalicelib import intake
from .conftest import LambdaContext, message, sqs_event, run_pass

def test_manifest(services, client, env):
    from .conftest import make_services
    services = make_services(env, R2_ENDPOINT_URL="https://s3.us-east-1.amazonaws.com")
    s3 = boto3.client("s3", region_name="us-east-1")
    m = message("batch_m")
    s3.put_object(Bucket="arke-staging", Key="staging/batch_m/manifest.json", Body=json.dumps({"batch_id": "batch_m", "directories": m["directories"]}))
    del m["directories"]; m["manifest_r2_key"] = "staging/batch_m/manifest.json"
    print(intake.handle_body(services, json.dumps(m)))
    print(client.http.get("/status/batch_m").json_body)

def test_capsys(services, capsys):
    try:
        app.intake(sqs_event("not json"), LambdaContext(5))
    except Exception as e:
        print("raised", type(e))
    out = capsys.readouterr().out
    assert "[Queue]" in out, out

def test_big(services, client):
    t = time.time()
    app.intake(sqs_event(message("batch_big", tiffs=5000, others=0)), LambdaContext(30))
    print("intake", time.time() - t)
    t = time.time()
    run_pass(services)
    print("pass", time.time() - t)
    assert 0
