import base64, json
import app
from .conftest import LambdaContext, message, sqs_event, run_pass

def test_probe(services, client, fly):
    app.intake(sqs_event(message(tiffs=3, others=0)), LambdaContext(30))
    run_pass(services)
    for tok in [{"x": {"S": "y"}}, {"batch_id": {"S": "other"}, "task_id": {"S": "tiff_a"}}, {"batch_id": "batch_abc", "task_id": 5}, {}]:
        t = base64.urlsafe_b64encode(json.dumps(tok).encode()).decode()
        r = client.http.get(f"/status/batch_abc/tasks?limit=1&next={t}")
        print(tok, r.status_code, r.body[:200])
        r = client.http.get(f"/status/batch_abc/tasks?limit=1&status=pending&next={t}")
        print("st", tok, r.status_code, r.body[:200])
    r = client.http.get("/status/batch_abc/tasks?limit=%C2%B2")
    print("limit sup", r.status_code, r.body[:200])
    env = fly.requests[0]["body"]["config"]["env"]
    body = {"task_id": env["TASK_ID"], "batch_id": "batch_abc", "status": "error", "error": "x"}
    r = client.http.post(f"/callback/batch_abc/{env['TASK_ID']}?attempt=%C2%B2", headers={"Content-Type": "application/json"}, body=json.dumps(body))
    print("attempt sup", r.status_code, r.body[:200])
    r = client.http.post(f"/callback/batch_abc/{env['TASK_ID']}?attempt=99999999999999999999999", headers={"Content-Type": "application/json"}, body=json.dumps(body))
    print("attempt huge", r.status_code, r.body[:200])
    r = client.http.post(f"/callback/batch_abc/{env['TASK_ID']}", headers={"Content-Type": "application/json"}, body=b"\xff\xfe")
    print("binary", r.status_code, r.body[:200])
    assert 0
