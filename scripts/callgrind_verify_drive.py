"""Drives a keyledger server for scripts/callgrind-verify.sh (docs/benchmarks.md, "Third pass").

    callgrind_verify_drive.py setup PORT ADMIN_KEY COUNT KEYS_FILE    # create COUNT keys
    callgrind_verify_drive.py json|forward|healthz PORT N CLIENTS KEYS_FILE
    callgrind_verify_drive.py barrier PORT ADMIN_KEY                   # wait for the projections

The requests are those of `cargo xtask load` (xtask/src/load.rs): JSON mode with a full
context, forward-auth with x-api-key and the forwarded headers, keys round-robin, and each
key's JSON requests from its own address, as in the load test (gateway request ids are
unique per request in both modes). With `SOURCES=per-request` in the environment, every JSON
request comes from an address not seen before instead: the worst case for the audit
projection, which interns each new address and gives it its own rows. Fails if any answer
is not 200. With `KEYS_WITH=sources|credits|ratelimits` in the environment, every
key gets that control, set so that it never refuses (the cost of a control on the keys that
use it, docs/benchmarks.md).
"""
import http.client
import json
import os
import sys
import threading


# What `KEYS_WITH` adds to every key: controls that never refuse the driver's requests (they
# come from 127.0.0.1).
CONTROLS = {
    "none": {},
    "sources": {"allowed_sources": ["127.0.0.0/8", "10.0.0.0/8"]},
    "credits": {"credits": {"remaining": 10**12}},
    "ratelimits": {"ratelimits": [{"name": "api", "limit": 10**9, "duration": "1h"}]},
}


def connect(port):
    return http.client.HTTPConnection("127.0.0.1", port)


def setup(port, admin, count, keys_file):
    conn, secrets = connect(port), []
    headers = {"authorization": "Bearer " + admin, "content-type": "application/json"}
    for i in range(count):
        body = {"name": f"p-{i}", "scopes": ["read", "write"], "owner": "profile"}
        body.update(CONTROLS[os.environ.get("KEYS_WITH", "none")])
        body = json.dumps(body)
        conn.request("POST", "/v1/workspaces/load/keys", body, headers)
        answer = conn.getresponse()
        created = answer.read()
        if answer.status != 201:
            sys.exit(f"creating a key answered {answer.status}: {created[:300]!r}")
        secrets.append(json.loads(created)["secret"])
    with open(keys_file, "w") as out:
        json.dump(secrets, out)


def barrier(port, admin):
    """An audit read: it answers once the projections hold every event written before it, so
    the projector's folding of a mode's events falls inside that mode's dump."""
    conn = connect(port)
    conn.request("GET", "/v1/audit/requests/req_barrier", headers={"authorization": "Bearer " + admin})
    answer = conn.getresponse()
    answer.read()
    if answer.status not in (200, 404):
        sys.exit(f"the audit read answered {answer.status}")


def run(mode, port, n, clients, keys_file):
    with open(keys_file) as keys:
        secrets = json.load(keys)
    per, failures = n // clients, []
    sources = os.environ.get("SOURCES", "per-key")
    if sources not in ("per-key", "per-request"):
        sys.exit(f"SOURCES must be per-key or per-request, not {sources!r}")
    per_request_sources = sources == "per-request"

    def client(w):
        conn = connect(port)
        for j in range(per):
            i = w * per + j
            k = i % len(secrets)
            secret = secrets[k]
            if mode == "json":
                a = i if per_request_sources else k
                context = {"ip": f"10.1.{a // 250 % 250}.{a % 250 + 1}", "user_agent": "keyledger-load/1",
                           "method": "GET", "path": "/v1/orders", "request_id": f"gw-{i}"}
                body = json.dumps({"key": secret, "scopes": ["read"], "context": context})
                conn.request("POST", "/v1/verify", body, {"content-type": "application/json"})
            elif mode == "forward":
                conn.request("GET", "/v1/verify?scope=read", headers={
                    "x-api-key": secret, "user-agent": "keyledger-load/1", "x-forwarded-method": "GET",
                    "x-forwarded-uri": "/v1/orders", "x-request-id": f"gw-{i}"})
            else:
                conn.request("GET", "/healthz")
            answer = conn.getresponse()
            answer.read()
            if answer.status != 200:
                failures.append(answer.status)

    threads = [threading.Thread(target=client, args=(w,)) for w in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        sys.exit(f"{len(failures)} answers were not 200: {sorted(set(failures))}")


if __name__ == "__main__":
    if sys.argv[1] == "setup":
        setup(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5])
    elif sys.argv[1] == "barrier":
        barrier(int(sys.argv[2]), sys.argv[3])
    else:
        run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
