"""Drives keyledger through a client generated from its /openapi.json (scripts/openapi-client.sh).

Uses only the generated package (`keyledger_client`): its operation functions, named from the
document's operationIds, and its models, named from the document's schemas. Creates a key,
verifies it in JSON mode and in forward-auth mode (a POST without a body, then a GET),
rotates it with an overlap, revokes the old key, checks that it then verifies as invalid
(401 invalid_api_key), and reads the old key's compromise report. Any mismatch raises, so
the process exits non-zero.

Environment: KEYLEDGER_URL (e.g. http://127.0.0.1:7878), KEYLEDGER_ADMIN_KEY.
"""

import os
import sys

from keyledger_client import AuthenticatedClient, Client
from keyledger_client.api.audit import get_compromise_report
from keyledger_client.api.keys import create_key, get_key, revoke_key, rotate_key
from keyledger_client.api.verify import verify_key, verify_key_forward_auth
from keyledger_client.models import (
    CompromiseReport,
    ContextBody,
    CreateKey,
    ErrorBody,
    IssuedKey,
    KeyView,
    Reason,
    RotateKey,
    Rotation,
    Verified,
    VerifyBody,
)

WORKSPACE = "sdk"
SOURCE_IP = "203.0.113.9"


def expect(condition, what):
    if not condition:
        raise AssertionError(what)


def answer(response, status, model):
    """The parsed body of `response`, which must have `status` and parse as `model`."""
    expect(
        response.status_code == status,
        f"expected {status}, got {response.status_code}: {response.content!r}",
    )
    expect(
        isinstance(response.parsed, model),
        f"expected a {model.__name__}, got {type(response.parsed).__name__}: {response.content!r}",
    )
    return response.parsed


def verify_json(client, secret):
    body = VerifyBody(
        key=secret,
        scopes=["orders:read"],
        context=ContextBody(ip=SOURCE_IP, user_agent="generated-client", path="/orders/7"),
    )
    return verify_key.sync_detailed(client=client, body=body)


def main():
    base_url = os.environ["KEYLEDGER_URL"]
    admin = AuthenticatedClient(base_url=base_url, token=os.environ["KEYLEDGER_ADMIN_KEY"])
    gateway = Client(base_url=base_url)

    # Create.
    issued = answer(
        create_key.sync_detailed(
            ws=WORKSPACE,
            client=admin,
            body=CreateKey(name="generated client", scopes=["orders:read"], owner="sdk-test"),
        ),
        201,
        IssuedKey,
    )
    expect(issued.secret.startswith("kl_live_"), f"a live secret: {issued.key_id}")
    expect(issued.status == "active", f"a new key is active: {issued.status}")
    expect(issued.workspace == WORKSPACE, issued.workspace)
    old_id, old_secret = issued.key_id, issued.secret

    # Verify, valid before the revocation: JSON mode, then forward-auth mode by POST without
    # a body (the key in a header, the requirement in the query), then by GET.
    verified = answer(verify_json(gateway, old_secret), 200, Verified)
    expect(verified.valid is True and verified.key_id == old_id, f"JSON mode: {verified.to_dict()}")
    forward = answer(
        verify_key.sync_detailed(client=gateway, x_api_key=old_secret, scope=["orders:read"]),
        200,
        Verified,
    )
    expect(forward.valid is True and forward.key_id == old_id, f"POST without a body: {forward.to_dict()}")
    forward = answer(
        verify_key_forward_auth.sync_detailed(client=gateway, x_api_key=old_secret, scope=["orders:read"]),
        200,
        Verified,
    )
    expect(forward.key_id == old_id, f"GET: {forward.to_dict()}")
    missing = answer(
        verify_key_forward_auth.sync_detailed(client=gateway, x_api_key=old_secret, scope=["orders:write"]),
        403,
        ErrorBody,
    )
    expect(missing.error == "forbidden" and missing.valid is False, f"missing scope: {missing.to_dict()}")

    # Rotate with an overlap: a new key and secret; the old key stays valid for the hour.
    rotation = answer(
        rotate_key.sync_detailed(key_id=old_id, client=admin, body=RotateKey(overlap="1h")),
        201,
        Rotation,
    )
    new_id, new_secret = rotation.key.key_id, rotation.key.secret
    expect(new_id != old_id and new_secret != old_secret, "rotation gives a new key and secret")
    expect(rotation.key.rotated_from == old_id, f"the new key names the old: {rotation.key.rotated_from}")
    expect(rotation.previous.key_id == old_id, rotation.previous.key_id)
    expect(rotation.previous.rotated_to == new_id, f"the old key names the new: {rotation.previous.rotated_to}")
    expect(answer(verify_json(gateway, new_secret), 200, Verified).key_id == new_id, "the new key verifies")
    expect(answer(verify_json(gateway, old_secret), 200, Verified).key_id == old_id, "overlap: the old one too")

    # Revoke the old key: from then on it verifies as invalid_api_key, the new one still works.
    revoked = answer(
        revoke_key.sync_detailed(key_id=old_id, client=admin, body=Reason(reason="leaked in a log")),
        200,
        KeyView,
    )
    expect(revoked.status == "revoked" and revoked.revoked_reason == "leaked in a log", revoked.to_dict())
    denied = answer(verify_json(gateway, old_secret), 401, ErrorBody)
    expect(denied.error == "invalid_api_key" and denied.valid is False, f"after revoke: {denied.to_dict()}")
    denied = answer(verify_key.sync_detailed(client=gateway, x_api_key=old_secret), 401, ErrorBody)
    expect(denied.error == "invalid_api_key", f"after revoke, forward-auth: {denied.to_dict()}")
    expect(answer(verify_json(gateway, new_secret), 200, Verified).valid is True, "the new key still verifies")
    shown = answer(get_key.sync_detailed(key_id=old_id, client=admin), 200, KeyView)
    expect(shown.status == "revoked", shown.status)

    # The compromise report of the old key shows its uses, where from, and the attempts after
    # its revocation.
    report = answer(
        get_compromise_report.sync_detailed(key_id=old_id, client=admin, since="2000-01-01T00:00:00Z"),
        200,
        CompromiseReport,
    )
    expect(report.key.key_id == old_id and report.key.status == "revoked", report.key.to_dict())
    # Allowed: JSON mode, POST without a body, GET, and JSON mode during the overlap.
    expect(report.uses.allowed == 4, f"allowed uses: {report.uses.to_dict()}")
    # Denied: the missing scope, and the two attempts after the revocation.
    expect(report.uses.denied == 3, f"denied uses: {report.uses.to_dict()}")
    expect(SOURCE_IP in [s.value for s in report.sources], f"sources: {[s.to_dict() for s in report.sources]}")
    expect(report.after_revocation.count == 2, f"after revocation: {report.after_revocation.to_dict()}")
    kinds = [event.kind for event in report.lifecycle]
    expect("created" in kinds and "revoked" in kinds, f"lifecycle: {kinds}")
    print(f"openapi_client_flow: ok ({old_id} rotated to {new_id}, revoked; report checked)")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as problem:
        print(f"openapi_client_flow: FAILED: {problem}", file=sys.stderr)
        sys.exit(1)
