//! A real full disk, end to end through the binary (docs/operations.md, "Failure behaviour").
//!
//! A 16 MiB tmpfs is mounted (tests run as root; if the mount is refused the test prints
//! `skipped: cannot mount tmpfs` and passes), a data dir is initialised and served on it,
//! keys are created and used, then a filler file takes every free byte (`ENOSPC`). From
//! then on:
//! - every call that must append answers 503 `unavailable`: create, rotate, revoke, and
//!   verify with `"valid": false` (fail closed: no 200 without a recorded use);
//! - reads still answer 200 (`GET /v1/keys/{id}`, the key list), `/healthz` answers 503;
//! - the filler is deleted, and within seconds appends succeed again **without a restart**,
//!   `/healthz` answers 200, the audit index (redb, on the same full disk) has caught up;
//! - every acknowledged operation is present, the server stops cleanly, `keyledger log
//!   verify` passes, and a restart shows the same keys.
//!
//! The tmpfs is unmounted in all cases (a drop guard, after the server is killed).

use keyledger_e2e::{Client, Resp, Server, keyledger, log_verify, path_str, poll, text};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A mounted tmpfs, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a `size`-byte tmpfs on `path`, or `None` (with the reason) if that is refused.
    fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs", path_str(path)])
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        Ok(Tmpfs { path: path.to_owned() })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.path).status().is_ok_and(|s| s.success());
        if !unmounted {
            // Something still holds a file (a server that is still exiting): detach lazily.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Writes a file until the file system refuses with `ENOSPC`; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).expect("create the filler");
    let mut written = 0u64;
    for chunk in [1 << 20, 4096, 512, 1] {
        let buf = vec![0x5a_u8; chunk];
        loop {
            match file.write_all(&buf) {
                Ok(()) => written += chunk as u64,
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling the disk: unexpected error {e}"),
            }
        }
    }
    let _ = file.sync_all();
    written
}

fn create(client: &Client, admin: &str, name: &str) -> Resp {
    client.post("/v1/workspaces/acme/keys", admin, &json!({"name": name, "scopes": ["read"]}))
}

fn verify(client: &Client, secret: &str) -> Resp {
    client.send("POST", "/v1/verify", &[], Some(&json!({"key": secret, "scopes": ["read"]})))
}

fn assert_unavailable(resp: &Resp, what: &str) {
    assert_eq!(resp.status, 503, "{what}: {}", resp.dump());
    assert_eq!(resp.body["error"], "unavailable", "{what}: {}", resp.dump());
    assert!(
        resp.body["request_id"].as_str().is_some_and(|r| r.starts_with("req_")),
        "{what}: {}",
        resp.dump()
    );
}

/// A key whose creation was acknowledged: id, secret, and whether its revocation was.
struct Acked {
    id: String,
    secret: String,
    revoked: bool,
    uses: u64,
}

#[test]
fn a_full_disk_fails_closed_and_recovers_without_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tmpfs = match Tmpfs::mount(&tmp.path().join("mnt"), "16m") {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            println!("skipped: cannot mount tmpfs ({reason})");
            return;
        }
    };
    let data_dir = tmpfs.path.join("data");
    let init = keyledger(&["init", "--data-dir", path_str(&data_dir)]);
    assert!(init.success(), "init on the tmpfs: {}", init.stderr);
    let init: Value = serde_json::from_str(init.stdout.trim()).expect("init prints JSON");
    let admin = text(&init, "admin_key");

    let server = Server::start(&data_dir, &[]);
    let client = server.client();
    let mut acked: Vec<Acked> = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        let resp = create(&client, &admin, name);
        assert_eq!(resp.status, 201, "{}", resp.dump());
        acked.push(Acked {
            id: text(&resp.body, "key_id"),
            secret: text(&resp.body, "secret"),
            revoked: false,
            uses: 0,
        });
    }
    for key in &mut acked {
        let resp = verify(&client, &key.secret);
        assert_eq!(resp.status, 200, "{}", resp.dump());
        key.uses += 1;
    }

    // Fill the disk. Appends may still fit in the last partly used pages of the log's
    // files; they are acknowledged normally until the first refusal.
    let filler = tmpfs.path.join("filler");
    let filled = fill(&filler);
    println!("filler: {filled} bytes");
    let first_refusal = (0..200)
        .find_map(|i| {
            let resp = create(&client, &admin, &format!("fill-{i}"));
            match resp.status {
                201 => {
                    acked.push(Acked {
                        id: text(&resp.body, "key_id"),
                        secret: text(&resp.body, "secret"),
                        revoked: false,
                        uses: 0,
                    });
                    None
                }
                _ => Some(resp),
            }
        })
        .expect("200 creates fit on a full 16 MiB disk");
    assert_unavailable(&first_refusal, "create on a full disk");

    // Everything that must append is refused; reads still answer.
    let alpha = (acked[0].id.clone(), acked[0].secret.clone());
    let beta_id = acked[1].id.clone();
    assert_unavailable(&create(&client, &admin, "refused"), "create");
    assert_unavailable(
        &client.post(&format!("/v1/keys/{beta_id}/rotate"), &admin, &json!({"overlap": "0s"})),
        "rotate",
    );
    assert_unavailable(&client.post(&format!("/v1/keys/{beta_id}/revoke"), &admin, &json!({})), "revoke");
    let refused = verify(&client, &alpha.1);
    assert_unavailable(&refused, "verify");
    assert_eq!(refused.body["valid"], false, "{}", refused.dump());
    let forward = client.send(
        "GET",
        "/v1/verify?scope=read",
        &[("authorization", &format!("Bearer {}", alpha.1))],
        None,
    );
    assert_unavailable(&forward, "forward-auth verify");
    let shown = client.get(&format!("/v1/keys/{}", alpha.0), &admin);
    assert_eq!(shown.status, 200, "{}", shown.dump());
    assert_eq!(shown.body["use_count"], 1, "{}", shown.dump());
    let listed = client.get("/v1/workspaces/acme/keys", &admin);
    assert_eq!(listed.status, 200, "{}", listed.dump());
    assert_eq!(listed.body["keys"].as_array().map(Vec::len), Some(acked.len()), "{}", listed.dump());
    assert_eq!(client.send("GET", "/healthz", &[], None).status, 503);
    // The background recovery keeps failing while the disk is full.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(client.send("GET", "/healthz", &[], None).status, 503);
    assert_unavailable(&verify(&client, &alpha.1), "verify, still full");

    // Space returns: appends succeed again without a restart.
    std::fs::remove_file(&filler).expect("remove the filler");
    let freed = Instant::now();
    let after = poll(Duration::from_secs(10), "a create after space returned", || {
        let resp = create(&client, &admin, "after");
        (resp.status == 201).then_some(resp)
    });
    println!("recovered {:?} after the filler was removed", freed.elapsed());
    acked.push(Acked {
        id: text(&after.body, "key_id"),
        secret: text(&after.body, "secret"),
        revoked: false,
        uses: 0,
    });
    assert_eq!(client.send("GET", "/healthz", &[], None).status, 200);
    for key in &mut acked {
        let resp = verify(&client, &key.secret);
        assert_eq!(resp.status, 200, "{}", resp.dump());
        key.uses += 1;
    }
    let revoked = client.post(
        &format!("/v1/keys/{beta_id}/revoke"),
        &admin,
        &json!({"reason": "after the disk filled"}),
    );
    assert_eq!(revoked.status, 200, "{}", revoked.dump());
    acked[1].revoked = true;
    assert_eq!(verify(&client, &acked[1].secret).status, 401);
    // The audit index (redb on the same disk) has caught up: every acknowledged use.
    let events = client.get(&format!("/v1/keys/{}/events?kind=usage", alpha.0), &admin);
    assert_eq!(events.status, 200, "{}", events.dump());
    assert_eq!(events.body["events"].as_array().map(Vec::len), Some(2), "{}", events.dump());

    let check = |client: &Client, acked: &[Acked], what: &str| {
        for key in acked {
            let shown = client.get(&format!("/v1/keys/{}", key.id), &admin);
            assert_eq!(shown.status, 200, "{what}: {}", shown.dump());
            let status = if key.revoked { "revoked" } else { "active" };
            assert_eq!(shown.body["status"], status, "{what}: {}", shown.dump());
            assert_eq!(shown.body["use_count"], key.uses, "{what}: {}", shown.dump());
        }
        let listed = client.get("/v1/workspaces/acme/keys", &admin);
        let names: Vec<String> =
            listed.body["keys"].as_array().expect("keys").iter().map(|k| text(k, "name")).collect();
        assert_eq!(names.len(), acked.len(), "{what}: {names:?}");
        assert!(!names.iter().any(|n| n == "refused"), "{what}: a refused create left a key: {names:?}");
    };
    check(&client, &acked, "after the recovery");
    let logs = server.stop();
    assert!(logs.contains("recovered"), "the recovery is logged:\n{logs}");
    let verified = log_verify(&data_dir);
    assert!(verified.success(), "log verify after the recovery: {}{}", verified.stdout, verified.stderr);

    let server = Server::start(&data_dir, &[]);
    check(&server.client(), &acked, "after a restart");
    server.stop();
    drop(tmpfs);
}
