//! REST: job list and events, worker publishing, analytics, metrics; and the
//! Redis actions stream workers consume.
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{Backend, Gateway, is_completed, start_job};
use serde_json::{Value, json};
use tower::ServiceExt;

async fn call(
    gw: &Gateway,
    method: &str,
    uri: &str,
    token: Option<String>,
    body: Option<Value>,
) -> (StatusCode, Value, String) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string()))
            .unwrap(),
        None => req.body(Body::empty()).unwrap(),
    };
    let res = gw.router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    )
}

/// The seqs of the events a `GET /api/v1/jobs/{id}/events` answered, in order.
fn event_seqs(body: &Value) -> Vec<u64> {
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["envelope"]["seq"].as_u64().unwrap())
        .collect()
}

async fn jobs_list_events_after_publish_analytics_and_metrics(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let mut alice = gw.connect("alice").await;
    let id = start_job(&mut alice, "k-api", "research").await;
    let events = alice.events_until(is_completed).await;
    let alice_t = || Some(gw.token("alice"));

    let (status, list, _) = call(&gw, "GET", "/api/v1/jobs", alice_t(), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["jobs"][0]["id"], id.as_str());
    let (_, bobs, _) = call(&gw, "GET", "/api/v1/jobs", Some(gw.token("bob")), None).await;
    assert_eq!(bobs["jobs"], json!([]));

    let uri = format!("/api/v1/jobs/{id}/events?after=2");
    let (status, after, _) = call(&gw, "GET", &uri, alice_t(), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(after["complete"], true);
    assert_eq!(after["seq"], events.len() as u64);
    assert_eq!(
        event_seqs(&after),
        (3..=events.len() as u64).collect::<Vec<_>>()
    );
    let (status, _, _) = call(&gw, "GET", &uri, Some(gw.token("bob")), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Publishing needs a service token; the event reaches the user live.
    // (A stream that is neither a job, an order nor a public topic goes to the
    // named user; `market:` topics are covered in tests/topics.rs.)
    let body = json!({"user": "alice", "stream": "note:alice", "event": "note:added:v1", "data": {"text": "hi"}});
    let (status, _, _) = call(
        &gw,
        "POST",
        "/api/v1/publish",
        alice_t(),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let service = || Some(gw.role_token("worker-1", "service"));
    let (status, env, _) = call(&gw, "POST", "/api/v1/publish", service(), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{env}");
    assert_eq!(env["seq"], 1);
    let (name, live) = alice.event().await;
    assert_eq!(name, "note:added:v1");
    assert_eq!(live, env);
    let ended = json!({"user": "alice", "stream": format!("job:{id}"), "event": "job:chunk:v1", "data": {}});
    let (status, _, _) = call(&gw, "POST", "/api/v1/publish", service(), Some(ended)).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a completed job takes no more events"
    );
    let bad = json!({"user": "alice", "stream": "s", "event": "Not An Event", "data": {}});
    let (status, _, _) = call(&gw, "POST", "/api/v1/publish", service(), Some(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, _, _) = call(&gw, "GET", "/api/v1/analytics/summary", alice_t(), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, summary, _) = call(&gw, "GET", "/api/v1/analytics/summary", service(), None).await;
    assert_eq!(status, StatusCode::OK, "{summary}");
    assert_eq!(summary["dau"], 1);
    assert_eq!(summary["jobs"]["research"]["started"]["count"], 1);
    assert_eq!(summary["jobs"]["research"]["completed"]["count"], 1);
    assert!(
        summary["jobs"]["research"]["completed"]["seconds"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(summary["latency"]["p99"].is_number(), "{summary}");
    // The analytics role reads the summary and nothing else.
    let viewer = || Some(gw.role_token("dashboard", "analytics"));
    let (status, same, _) = call(&gw, "GET", "/api/v1/analytics/summary", viewer(), None).await;
    assert_eq!(status, StatusCode::OK, "{same}");
    assert_eq!(same["dau"], summary["dau"]);
    let note = json!({"user": "alice", "stream": format!("job:{id}"), "event": "note:added:v1", "data": {}});
    let (status, _, _) = call(&gw, "POST", "/api/v1/publish", viewer(), Some(note)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "analytics cannot publish");
    let (status, _, _) = call(
        &gw,
        "POST",
        "/api/v1/admin/revoke",
        viewer(),
        Some(json!({"user": "alice"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "analytics cannot revoke");

    let (status, _, text) = call(&gw, "GET", "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("liveline_connections 1"), "{text}");
    assert!(text.contains("liveline_actions_total{action=\"job:start:v1\",outcome=\"ok\"} 1"));
    assert!(text.contains("liveline_delivery_latency_seconds_bucket{le=\"+Inf\"}"));
    assert!(text.contains(
        "liveline_job_duration_seconds_count{kind=\"research\",outcome=\"completed\"} 1"
    ));
    assert!(!text.contains("alice"), "no per-user labels");
    alice.close().await;
    // The session is counted once it ends.
    common::eventually("the ended session is counted once", || async {
        let (_, s, _) = call(&gw, "GET", "/api/v1/analytics/summary", service(), None).await;
        s["sessions"].as_u64() == Some(1)
    })
    .await;
    gw.stop().await;
}

/// `POST /api/v1/publish/batch`: the items go out in order with consecutive
/// seqs and reach the user live; the bounds (no item, 257 items, a body of
/// 100,000 tiny items) and a `job:status:v1` are refused with
/// `invalid_payload` and store nothing; a user's token is refused.
async fn a_batch_is_published_over_http(backend: Backend) {
    let gw = Gateway::start_with(backend, |c| c.demo.enabled = false).await;
    let mut alice = gw.connect("alice").await;
    let id = common::create_running_job(&gw, "alice").await;
    let service = || Some(gw.role_token("worker-1", "service"));
    let chunk = |n: usize| json!({"jobId": id, "index": n, "text": format!("t{n} ")});
    let batch = |data: Value| json!({"user": "alice", "stream": format!("job:{id}"), "event": "job:chunk:v1", "data": data});
    let uri = "/api/v1/publish/batch";
    let items: Vec<Value> = (0..5).map(chunk).collect();
    let (status, body, text) = call(&gw, "POST", uri, service(), Some(batch(json!(items)))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let seqs: Vec<u64> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    for n in 0..5 {
        let (name, env) = alice.event().await;
        assert_eq!(name, "job:chunk:v1");
        assert_eq!(env, body["events"][n], "live, in order, as answered");
    }

    let refused = |(status, body, text): (StatusCode, Value, String)| {
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert_eq!(body["error"]["code"], "invalid_payload");
        body["error"]["message"].as_str().unwrap().to_owned()
    };
    refused(call(&gw, "POST", uri, service(), Some(batch(json!([])))).await);
    let too_many: Vec<Value> = (0..257).map(chunk).collect();
    let message = refused(call(&gw, "POST", uri, service(), Some(batch(json!(too_many)))).await);
    assert!(message.contains("256"), "{message}");
    let tiny = vec![0; 100_000];
    refused(call(&gw, "POST", uri, service(), Some(batch(json!(tiny)))).await);
    let status = json!({"jobId": id, "status": "running", "progress": 0.5, "message": ""});
    let two = json!({"user": "alice", "stream": format!("job:{id}"), "event": "job:status:v1", "data": [status, status]});
    refused(call(&gw, "POST", uri, service(), Some(two)).await);
    let stream = liveline_gateway::stream::Stream::Job { id: id.clone() };
    let head = gw.handle.state.broker.head(&stream).await.unwrap().unwrap();
    assert_eq!(head.seq, 5, "nothing of the refused batches was stored");

    let items: Vec<Value> = (5..7).map(chunk).collect();
    let (status, _, _) = call(
        &gw,
        "POST",
        uri,
        Some(gw.token("alice")),
        Some(batch(json!(items))),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    alice.close().await;
    gw.stop().await;
}

on_every_broker!(
    jobs_list_events_after_publish_analytics_and_metrics,
    a_batch_is_published_over_http
);

/// The Redis broker gathers analytics and stores them together: they reach
/// Redis by themselves soon after (no summary read needed), and a graceful
/// shutdown stores the sessions its own close ended.
#[tokio::test]
async fn analytics_reach_redis_by_themselves_and_at_shutdown() {
    let gw = Gateway::start_with(Backend::Redis, |c| c.demo.enabled = false).await;
    let mut clients = Vec::new();
    for user in ["ann", "bob", "cy"] {
        clients.push(gw.connect(user).await);
    }
    let day = liveline_gateway::broker::today();
    let key = |what: &str| format!("{}{{an:{day}}}:{what}", gw.config.key_prefix);
    let dau = redis::cmd("PFCOUNT").arg(key("dau")).clone();
    common::eventually("3 active users in Redis", || {
        let dau = dau.clone();
        async move { common::redis_query::<u64>(common::REDIS_URL, &dau).await == 3 }
    })
    .await;
    let sessions = redis::cmd("HGET").arg(key("sessions")).arg("count").clone();
    let before: Option<u64> = common::redis_query(common::REDIS_URL, &sessions).await;
    assert_eq!(before, None, "no session ended yet");
    // The drain closes the three sessions and stores them before it returns.
    assert_eq!(gw.handle.drain().await, 3);
    let after: Option<u64> = common::redis_query(common::REDIS_URL, &sessions).await;
    assert_eq!(after, Some(3));
    drop(clients);
    gw.stop().await;
}

#[tokio::test]
async fn started_job_goes_to_the_redis_actions_stream_once_per_idempotency_key() {
    let gw = Gateway::start_with(Backend::Redis, |c| c.demo.enabled = false).await;
    let mut alice = gw.connect("alice").await;
    let first = start_job(&mut alice, "k-stream", "llm").await;
    let again = start_job(&mut alice, "k-stream", "llm").await;
    assert_eq!(first, again);
    let client = redis::Client::open(common::REDIS_URL).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}actions", gw.config.key_prefix);
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&key)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let action: Value = serde_json::from_str(&entries[0].1[0].1).unwrap();
    assert_eq!(action["action"], "job:start:v1");
    assert_eq!(action["user"], "alice");
    assert_eq!(action["data"]["id"], first.as_str());
    let groups: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(groups.len(), 1, "the `workers` consumer group exists");
    alice.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn metrics_need_the_scrape_token_or_a_service_token_when_one_is_set() {
    let gw = Gateway::start_with(Backend::Memory, |c| {
        c.metrics_token = Some("scrape-secret".into());
    })
    .await;
    let status = |token: Option<String>| {
        let gw = &gw;
        async move { call(gw, "GET", "/metrics", token, None).await.0 }
    };
    assert_eq!(status(None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        status(Some("scrape-secreT".into())).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status(Some(gw.token("alice"))).await, StatusCode::FORBIDDEN);
    assert_eq!(status(Some("scrape-secret".into())).await, StatusCode::OK);
    assert_eq!(
        status(Some(gw.role_token("prom", "service"))).await,
        StatusCode::OK
    );
    gw.stop().await;
}

/// A history entry no reader takes (written by an older script, or by a
/// worker that marked bad data `checked`) is left out of history, not an
/// error: a resume across it reports the history lost, from the head (an
/// error closed the socket on every resume of the stream for as long as the
/// entry was kept), a resume after it replays, and REST says the events
/// across it are not complete.
#[tokio::test]
async fn an_unreadable_history_entry_reads_as_history_lost_across_it() {
    use liveline_gateway::stream::Stream;
    let gw = Gateway::start_with(Backend::Redis, |c| c.demo.enabled = false).await;
    let id = common::create_running_job(&gw, "alice").await;
    let job = Stream::Job { id: id.clone() };
    let publisher = &gw.handle.state.publisher;
    let chunk = |n: u64| json!({"jobId": id, "index": n, "text": "t"});
    for n in 1..=3 {
        publisher
            .publish(&job, "job:chunk:v1", chunk(n))
            .await
            .unwrap();
    }
    let head = gw.handle.state.broker.head(&job).await.unwrap().unwrap();
    let epoch = head.epoch;
    // Seq 4 holds bytes that are not UTF-8, seq 5 a NaN; both stored as an
    // older script did, past every check.
    let base = format!("{}{{job:{id}}}:", gw.config.key_prefix);
    let start = format!(r#"{{"stream":"job:{id}","epoch":"{epoch}","seq":"#);
    let entries = [
        [start.as_bytes(), br#"4,"ts":1,"data":"caf"#, b"\xe9\"}"].concat(),
        [start.as_bytes(), br#"5,"ts":1,"data":NaN}"#].concat(),
    ];
    let mut conn = common::RedisConn::open(common::REDIS_URL).await;
    for (seq, env) in [4, 5].into_iter().zip(entries) {
        let mut xadd = redis::cmd("XADD");
        xadd.arg(format!("{base}hist")).arg(format!("0-{seq}"));
        xadd.arg("event").arg("job:chunk:v1").arg("env").arg(env);
        let _: String = conn.query(&xadd).await;
    }
    let _: u64 = conn
        .query(redis::cmd("INCRBY").arg(format!("{base}seq")).arg(2))
        .await;
    let six = publisher
        .publish(&job, "job:chunk:v1", chunk(6))
        .await
        .unwrap();
    assert_eq!(six.seq, 6);

    let history = gw.handle.state.broker.history(&job, 0).await.unwrap();
    let seqs: Vec<u64> = history.iter().map(|(_, e)| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 6], "the unreadable entries left out");

    let stream = format!("job:{id}");
    let resume = |seq: u64| json!({"token": gw.token("alice"), "resume": {&stream: {"epoch": &epoch, "seq": seq}}});
    let mut across = common::Client::connect(gw.addr, resume(2)).await.unwrap();
    let (name, rec) = across.event().await;
    assert_eq!(name, "stream:recovered:v1");
    assert_eq!(
        (&rec["recovered"], &rec["seq"], &rec["epoch"]),
        (&json!(false), &json!(6), &json!(epoch)),
        "{rec}"
    );
    across.close().await;
    let mut after = common::Client::connect(gw.addr, resume(5)).await.unwrap();
    let (name, env) = after.event().await;
    assert_eq!((name.as_str(), &env["seq"]), ("job:chunk:v1", &json!(6)));
    let (name, rec) = after.event().await;
    assert_eq!(name, "stream:recovered:v1");
    assert_eq!((&rec["recovered"], &rec["seq"]), (&json!(true), &json!(6)));
    after.close().await;

    let token = Some(gw.token("alice"));
    for (after, complete, seqs) in [(2, false, vec![3, 6]), (5, true, vec![6])] {
        let uri = format!("/api/v1/jobs/{id}/events?after={after}");
        let (status, body, _) = call(&gw, "GET", &uri, token.clone(), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["complete"], complete, "after {after}: {body}");
        assert_eq!(event_seqs(&body), seqs, "after {after}");
    }
    gw.stop().await;
}
