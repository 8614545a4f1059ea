//! Stored responses of the Responses API: what `store: true` keeps, who may
//! read and delete it, and when it goes. Real server, real databases.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)]

mod common;

use app::domain::time::DAY_MS;
use app::ssr::entities::stored_response;
use app::ssr::now_ms;
use app::ssr::owners::OwnerKind;
use app::ssr::responses::{self, SaveError, StoredResponse, MAX_STORED_BYTES};
use common::*;
use sea_orm::EntityTrait;
use serde_json::{json, Value};

const CONFIG: &str = "\
models:
  dummy: { provider: dummy, price: { input: 0, output: 0 } }
clients:
  default:
    max: 10
    starting: 10
    model_access: { default: whitelist }
";

/// A response as the Responses endpoint would store it for `client`.
fn stored(app: &TestApp, client: &str, expires_at: i64) -> StoredResponse {
    let id = responses::new_id().unwrap();
    let now = now_ms();
    StoredResponse {
        response: json!({
            "id": id, "object": "response", "created_at": now / 1000, "status": "completed",
            "model": "dummy",
            "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hello back"}]}],
        }),
        context: json!([{"role": "user", "content": "hello"}]),
        id,
        owner_kind: OwnerKind::Client,
        owner_id: app.client_id(client),
        model: "dummy".into(),
        created_at: now,
        expires_at,
    }
}

/// Whether the row is in the table at all, whoever owns it, expired or not.
async fn row_exists(app: &TestApp, id: &str) -> bool {
    stored_response::Entity::find_by_id(id.to_string())
        .one(&app.db)
        .await
        .unwrap()
        .is_some()
}

async fn delete(app: &TestApp, key: &str, id: &str) -> (u16, Value) {
    let r = app
        .http
        .delete(format!("{}/v1/responses/{id}", app.url()))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// The one 404 for whatever this key's owner cannot see.
fn assert_not_found(r: &(u16, Value), id: &str) {
    let (status, body) = r;
    assert_eq!(*status, 404, "{body}");
    assert_eq!(body["error"]["code"], "response_not_found", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert_eq!(
        message,
        format!(
            "no stored response `{id}` exists for this key's owner: it may never have been stored (`store: false`), or it has expired or been deleted"
        ),
        "the message must not tell another owner's id from a missing one"
    );
}

async fn only_the_owner_story(backend: Backend) {
    let app = TestApp::builder(backend)
        .config(CONFIG)
        .clients(&["alice", "bob"])
        .keys(&["alice", "bob"])
        .spawn()
        .await;
    let (alice, bob) = (&app.keys["alice"], &app.keys["bob"]);
    let r = stored(&app, "alice", now_ms() + DAY_MS);
    responses::save(&app.db, &r).await.unwrap();
    let path = format!("/v1/responses/{}", r.id);

    // The owner reads back exactly the response object.
    let (status, body) = app.get(alice, &path).await;
    assert_eq!((status, &body), (200, &r.response));

    // Another owner's key: the same 404 as for an id never stored, for
    // reading and for deleting, and the row survives both.
    assert_not_found(&app.get(bob, &path).await, &r.id);
    assert_not_found(&delete(&app, bob, &r.id).await, &r.id);
    assert_not_found(
        &app.get(bob, "/v1/responses/resp_missing").await,
        "resp_missing",
    );
    assert!(row_exists(&app, &r.id).await);
    assert_eq!(app.get(alice, &path).await.0, 200);

    // The owner is its kind and id: a user whose id equals alice's client id
    // is someone else.
    let as_user = StoredResponse {
        id: responses::new_id().unwrap(),
        owner_kind: OwnerKind::User,
        ..r.clone()
    };
    responses::save(&app.db, &as_user).await.unwrap();
    let user_path = format!("/v1/responses/{}", as_user.id);
    assert_not_found(&app.get(alice, &user_path).await, &as_user.id);
    assert_not_found(&delete(&app, alice, &as_user.id).await, &as_user.id);
    assert!(row_exists(&app, &as_user.id).await);

    // No key, no answer.
    let anonymous = app
        .http
        .get(format!("{}{path}", app.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    // Another method on the path is a 405 with `Allow`, OpenAI-shaped.
    let resp = app
        .http
        .post(format!("{}{path}", app.url()))
        .bearer_auth(alice)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(resp.headers()["allow"], "GET, HEAD, DELETE");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");

    // The owner deletes it; then it is gone for the owner too.
    let (status, body) = delete(&app, alice, &r.id).await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"id": r.id, "object": "response", "deleted": true})
        )
    );
    assert!(!row_exists(&app, &r.id).await);
    assert_not_found(&app.get(alice, &path).await, &r.id);
    assert_not_found(&delete(&app, alice, &r.id).await, &r.id);

    // An id that could not name a stored response is not looked up.
    let (status, body) = app.get(alice, "/v1/responses/a%20b").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("response_not_found")),
        "{body}"
    );
}
on_backends!(only_the_owner_reads_and_deletes, only_the_owner_story);

async fn expiry_story(backend: Backend) {
    let mut app = TestApp::builder(backend)
        .config(CONFIG)
        .clients(&["alice"])
        .keys(&["alice"])
        .build()
        .await;
    let now = now_ms();
    let expired = stored(&app, "alice", now - 1);
    let live = stored(&app, "alice", now + DAY_MS);
    responses::save(&app.db, &expired).await.unwrap();
    responses::save(&app.db, &live).await.unwrap();

    // The store: visible until `expires_at`, not at it.
    let at = |t| responses::load(&app.db, OwnerKind::Client, live.owner_id, &live.id, t);
    assert_eq!(at(live.expires_at - 1).await.unwrap().as_ref(), Some(&live));
    assert_eq!(at(live.expires_at).await.unwrap(), None);

    // The server purges expired rows as it starts, and says how many.
    app.start();
    app.wait_for("the expired response purged at start-up", || async {
        (!row_exists(&app, &expired.id).await).then_some(())
    })
    .await;
    app.wait_for("the purge logged", || async {
        app.log()
            .contains("purged 1 expired stored responses")
            .then_some(())
    })
    .await;
    let key = &app.keys["alice"];
    assert_eq!(
        app.get(key, &format!("/v1/responses/{}", live.id)).await.0,
        200
    );

    // A row past its time is invisible before any purge takes it ...
    let late = stored(&app, "alice", now_ms() - 1);
    responses::save(&app.db, &late).await.unwrap();
    assert_not_found(
        &app.get(key, &format!("/v1/responses/{}", late.id)).await,
        &late.id,
    );
    assert_not_found(&delete(&app, key, &late.id).await, &late.id);
    assert!(row_exists(&app, &late.id).await);

    // ... and the purge takes only what has expired.
    assert_eq!(responses::purge(&app.db, now_ms()).await.unwrap(), 1);
    assert!(!row_exists(&app, &late.id).await);
    assert!(row_exists(&app, &live.id).await);
    assert_eq!(responses::purge(&app.db, now_ms()).await.unwrap(), 0);
}
on_backends!(expired_responses_are_invisible_and_purged, expiry_story);

async fn size_cap_story(backend: Backend) {
    let app = TestApp::builder(backend)
        .config(CONFIG)
        .clients(&["alice"])
        .build()
        .await;
    // A context that brings the row to exactly the cap is stored ...
    let mut r = stored(&app, "alice", now_ms() + DAY_MS);
    let fixed = serde_json::to_string(&r.response).unwrap().len()
        + serde_json::to_string(&json!([{"role": "user", "content": ""}]))
            .unwrap()
            .len();
    r.context = json!([{"role": "user", "content": "x".repeat(MAX_STORED_BYTES - fixed)}]);
    responses::save(&app.db, &r).await.unwrap();
    let back = responses::load(&app.db, OwnerKind::Client, r.owner_id, &r.id, now_ms())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.context, r.context);

    // ... one byte more is refused, with a message for the caller, and not stored.
    let mut over = stored(&app, "alice", now_ms() + DAY_MS);
    over.context = json!([{"role": "user", "content": "x".repeat(MAX_STORED_BYTES - fixed + 1)}]);
    match responses::save(&app.db, &over).await {
        Err(e @ SaveError::TooLarge { bytes }) => {
            assert_eq!(bytes, MAX_STORED_BYTES + 1);
            assert!(e.to_string().contains("store: false"), "{e}");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(!row_exists(&app, &over.id).await);
}
on_backends!(a_response_over_the_size_cap_is_refused, size_cap_story);

#[tokio::test]
async fn a_bad_retention_is_refused_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.yaml");
    for (bad, says) in [
        ("0", "retention must be a positive duration"),
        ("-5m", "retention must be a positive duration"),
        ("10s", "retention must be at least 1 minute"),
        ("a while", "got `a while`"),
    ] {
        write(
            &cfg,
            &format!("server:\n  responses:\n    retention: {bad}\n{CONFIG}"),
        );
        let out = tollgate(&["check-config"], &cfg, "sqlite::memory:");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}: {stderr}");
        assert!(
            stderr.contains("bad.yaml:3:16: server.responses.retention: ") && stderr.contains(says),
            "{bad}: {stderr}"
        );
    }
    write(
        &cfg,
        &format!("server:\n  responses:\n    retention: 7d\n{CONFIG}"),
    );
    let out = tollgate(&["check-config"], &cfg, "sqlite::memory:");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
