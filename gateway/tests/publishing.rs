//! The publishing examples of docs/publishing.md (docs/examples/) run for
//! real: Node and Python, over HTTP with a service token and over Redis with
//! the publish script; a connected socket receives what they publish.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use common::{Backend, Gateway, REDIS_URL, start_job};
use serde_json::Value;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/examples")
}

fn lua() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/broker/publish.lua")
        .display()
        .to_string()
}

/// Starts a job for alice (no worker: it stays queued), runs `program` with
/// `args(gw, job_id)`, and checks alice receives the published status.
async fn run_example(
    backend: Backend,
    program: &str,
    script: &str,
    args: impl Fn(&Gateway, &str) -> Vec<String>,
    from: &str,
) {
    let gw = Gateway::start_with(backend, |c| c.demo.enabled = false).await;
    let mut alice = gw.connect("alice").await;
    let id = start_job(&mut alice, "k-pub", "research").await;
    let (_, queued) = alice.event().await;
    assert_eq!(queued["data"]["status"], "queued");
    let output = tokio::process::Command::new(program)
        .arg(examples().join(script))
        .args(args(&gw, &id))
        .output()
        .await
        .unwrap_or_else(|e| panic!("{program} must be on PATH: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{script} failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(printed["seq"], 2, "{printed}");
    let (name, env) = alice.event().await;
    assert_eq!(name, "job:status:v1");
    assert_eq!(env["stream"], format!("job:{id}").as_str());
    assert_eq!(env["seq"], 2);
    assert_eq!(env["epoch"], queued["epoch"]);
    assert_eq!(env["data"]["status"], "running");
    assert_eq!(env["data"]["progress"], 0.5);
    assert!(
        env["data"]["message"].as_str().unwrap().contains(from),
        "{env}"
    );
    // The job record moved with the event.
    let job = gw.handle.state.broker.job(&id).await.unwrap().unwrap();
    assert_eq!(job.status.as_str(), "running");
    alice.close().await;
    gw.stop().await;
}

fn http_args(gw: &Gateway, id: &str) -> Vec<String> {
    vec![
        format!("http://{}", gw.addr),
        gw.role_token("worker-1", "service"),
        "alice".to_owned(),
        id.to_owned(),
    ]
}

fn redis_args(gw: &Gateway, id: &str) -> Vec<String> {
    vec![
        REDIS_URL.trim_start_matches("redis://").to_owned(),
        gw.config.key_prefix.clone(),
        "alice".to_owned(),
        id.to_owned(),
        lua(),
    ]
}

#[tokio::test]
async fn node_publishes_over_http() {
    run_example(
        Backend::Memory,
        "node",
        "publish-http.mjs",
        http_args,
        "Node over HTTP",
    )
    .await;
}

#[tokio::test]
async fn node_publishes_over_redis_script() {
    run_example(
        Backend::Redis,
        "node",
        "publish-redis.mjs",
        redis_args,
        "Node over Redis",
    )
    .await;
}

#[tokio::test]
async fn python_publishes_over_http() {
    run_example(
        Backend::Redis,
        "python3",
        "publish_http.py",
        http_args,
        "Python over HTTP",
    )
    .await;
}

#[tokio::test]
async fn python_publishes_over_redis_script() {
    run_example(
        Backend::Redis,
        "python3",
        "publish_redis.py",
        redis_args,
        "Python over Redis",
    )
    .await;
}

/// The Rust API of docs/publishing.md: a [`Publisher`] on a `RedisBroker`.
#[tokio::test]
async fn rust_api_publishes_over_redis() {
    use liveline_gateway::broker::RedisBroker;
    use liveline_gateway::publish::Publisher;
    use liveline_gateway::stream::Stream;
    let gw = Gateway::start_with(Backend::Redis, |c| c.demo.enabled = false).await;
    let mut alice = gw.connect("alice").await;
    let id = start_job(&mut alice, "k-rs", "research").await;
    alice.event().await;
    let broker = RedisBroker::connect(REDIS_URL, &gw.config.key_prefix, 1000)
        .await
        .unwrap();
    let publisher = Publisher::new(std::sync::Arc::new(broker));
    let data = serde_json::json!({"jobId": id, "status": "running", "progress": 0.5, "message": "from Rust"});
    let env = publisher
        .publish(&Stream::Job { id: id.clone() }, "job:status:v1", data)
        .await
        .expect("the job is live");
    assert_eq!(env.seq, 2);
    let (name, got) = alice.event().await;
    assert_eq!(name, "job:status:v1");
    assert_eq!(got["data"]["message"], "from Rust");
    alice.close().await;
    gw.stop().await;
}

/// Runs `liveline-gateway publish` for alice's job `id` with one `--data`
/// per item; the envelopes it printed, one per line.
async fn cli_publish(gw: &Gateway, id: &str, event: &str, data: &[String]) -> Vec<Value> {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_liveline-gateway"));
    cmd.args(["publish", "--redis-url", REDIS_URL, "--key-prefix"])
        .arg(&gw.config.key_prefix)
        .args(["--user", "alice", "--stream"])
        .arg(format!("job:{id}"))
        .args(["--event", event]);
    for d in data {
        cmd.arg("--data").arg(d);
    }
    let output = cmd.output().await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The CLI of docs/publishing.md: `liveline-gateway publish`.
#[tokio::test]
async fn cli_publishes_over_redis() {
    let gw = Gateway::start_with(Backend::Redis, |c| c.demo.enabled = false).await;
    let mut alice = gw.connect("alice").await;
    let id = start_job(&mut alice, "k-cli", "research").await;
    alice.event().await;
    let data =
        format!(r#"{{"jobId":"{id}","status":"running","progress":0.5,"message":"from the CLI"}}"#);
    cli_publish(&gw, &id, "job:status:v1", &[data]).await;
    let (name, got) = alice.event().await;
    assert_eq!(name, "job:status:v1");
    assert_eq!(got["seq"], 2);
    assert_eq!(got["data"]["message"], "from the CLI");
    let job = gw.handle.state.broker.job(&id).await.unwrap().unwrap();
    assert_eq!(job.status.as_str(), "running");

    // `--data` given several times: one batch, one envelope per line.
    let chunks: Vec<String> = (0..3)
        .map(|n| format!(r#"{{"jobId":"{id}","index":{n},"text":"t{n}"}}"#))
        .collect();
    let printed = cli_publish(&gw, &id, "job:chunk:v1", &chunks).await;
    let seqs: Vec<u64> = printed.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![3, 4, 5]);
    for expected in &printed {
        let (name, got) = alice.event().await;
        assert_eq!(name, "job:chunk:v1");
        assert_eq!(&got, expected, "live, in order, as printed");
    }
    alice.close().await;
    gw.stop().await;
}

/// Every key a publish writes expires (the script refreshes expiries only
/// now and then): after the first event, after more, after an epoch written
/// anew over a stream whose other keys live on, and on the cluster.
async fn every_key_of_a_stream_keeps_an_expiry(backend: Backend) {
    use liveline_gateway::stream::Stream;
    let gw = Gateway::start_with(backend, |c| c.demo.enabled = false).await;
    let url = gw.config.redis_url.clone().unwrap();
    let p = gw.config.key_prefix.clone();
    let publisher = &gw.handle.state.publisher;
    let notes = Stream::Private {
        user: "alice".to_owned(),
        name: "notes".to_owned(),
    };
    let base = format!("{p}{{u:5:alice}}:s:notes:");
    let ttls = || async {
        let mut out = Vec::new();
        for suffix in ["seq", "epoch", "hist"] {
            let ttl: i64 =
                common::redis_query(&url, redis::cmd("TTL").arg(format!("{base}{suffix}"))).await;
            out.push((suffix, ttl));
        }
        out
    };
    for round in 0..3 {
        for n in 0..5 {
            publisher
                .publish_for(
                    "alice",
                    &notes,
                    "note:added:v1",
                    serde_json::json!({"n": n}),
                )
                .await
                .unwrap();
        }
        let seen = ttls().await;
        assert!(
            seen.iter().all(|(_, ttl)| *ttl > 0),
            "round {round}: {seen:?}"
        );
        // The epoch key lost (as if expired alone): the next event writes a new one.
        let _: () = common::redis_query(&url, redis::cmd("DEL").arg(format!("{base}epoch"))).await;
    }

    // Refreshed once they have lost a hundredth of their time (here all but
    // 100 s, as after days without an event): the next event gives them all
    // of it again, and keeps the epoch.
    let ttl = liveline_gateway::broker::STREAM_TTL_SECS as i64;
    let publish = || async {
        publisher
            .publish_for("alice", &notes, "note:added:v1", serde_json::json!({}))
            .await
            .unwrap()
    };
    let expire_all = |secs: i64| {
        let (url, base) = (url.clone(), base.clone());
        async move {
            for suffix in ["seq", "hist", "epoch"] {
                let _: () = common::redis_query(
                    &url,
                    redis::cmd("EXPIRE")
                        .arg(format!("{base}{suffix}"))
                        .arg(secs),
                )
                .await;
            }
        }
    };
    let epoch = publish().await.epoch;
    expire_all(100).await;
    assert_eq!(publish().await.epoch, epoch, "the epoch kept");
    let seen = ttls().await;
    assert!(
        seen.iter().all(|(_, t)| *t > ttl - 60),
        "not refreshed: {seen:?}"
    );
    // Not on every event: keys that have lost less than a hundredth keep
    // their expiry.
    expire_all(ttl - 600).await;
    publish().await;
    let seen = ttls().await;
    assert!(
        seen.iter().all(|(_, t)| *t <= ttl - 600),
        "refreshed early: {seen:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn every_key_of_a_stream_keeps_an_expiry_on_redis() {
    every_key_of_a_stream_keeps_an_expiry(Backend::Redis).await;
}

#[tokio::test]
async fn every_key_of_a_stream_keeps_an_expiry_on_the_cluster() {
    every_key_of_a_stream_keeps_an_expiry(Backend::Cluster).await;
}

/// A batch: one step, consecutive seqs, each event live and in history in
/// order; the bounds refused with `invalid_payload`, an ended job with
/// `job_ended`.
async fn a_batch_is_published_in_one_step_with_consecutive_seqs(backend: Backend) {
    use liveline_gateway::broker::{MAX_BATCH, MAX_DATA_DEPTH};
    use liveline_gateway::publish::PublishError;
    use liveline_gateway::stream::Stream;
    let gw = Gateway::start_with(backend, |c| c.demo.enabled = false).await;
    let mut alice = gw.connect("alice").await;
    let id = common::create_running_job(&gw, "alice").await;
    let job = Stream::Job { id: id.clone() };
    let publisher = &gw.handle.state.publisher;
    let chunk = |n: usize| serde_json::json!({"jobId": id, "index": n, "text": format!("t{n} ")});
    let first = publisher
        .publish(&job, "job:chunk:v1", chunk(0))
        .await
        .unwrap();
    let batch = publisher
        .publish_batch(&job, "job:chunk:v1", (1..=20).map(chunk).collect())
        .await
        .unwrap();
    let seqs: Vec<u64> = batch.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (2..=21).collect::<Vec<u64>>());
    assert!(batch.iter().all(|e| e.epoch == first.epoch));
    for n in 0..=20 {
        let (name, env) = alice.event().await;
        assert_eq!(name, "job:chunk:v1");
        assert_eq!(env["seq"], n as u64 + 1, "live, in order");
        assert_eq!(env["data"]["index"], n);
    }
    let history = gw.handle.state.broker.history(&job, 1).await.unwrap();
    let kept: Vec<u64> = history.iter().map(|(_, e)| e.seq).collect();
    assert_eq!(kept, (2..=21).collect::<Vec<u64>>());

    let refused = |r: Result<Vec<_>, PublishError>| match r {
        Err(e) => e.code(),
        Ok(envs) => panic!("published {} events", envs.len()),
    };
    assert_eq!(
        refused(
            publisher
                .publish_batch(&job, "job:chunk:v1", Vec::new())
                .await
        ),
        "invalid_payload"
    );
    let too_many = (0..=MAX_BATCH).map(chunk).collect();
    assert_eq!(
        refused(
            publisher
                .publish_batch(&job, "job:chunk:v1", too_many)
                .await
        ),
        "invalid_payload"
    );
    let status =
        serde_json::json!({"jobId": id, "status": "running", "progress": 0.5, "message": ""});
    assert_eq!(
        refused(
            publisher
                .publish_batch(&job, "job:status:v1", vec![status.clone(), status])
                .await
        ),
        "invalid_payload"
    );
    // Data nested deeper than every reader parses, refused before the
    // broker (the script then trusts the gateway's data); as deep as they
    // parse, stored, live and in history.
    let nested = |depth: usize| {
        let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        serde_json::from_str::<Value>(&text).unwrap()
    };
    assert_eq!(
        refused(
            publisher
                .publish_batch(
                    &job,
                    "job:chunk:v1",
                    vec![chunk(22), nested(MAX_DATA_DEPTH + 1)]
                )
                .await
        ),
        "invalid_payload"
    );
    // Nothing of the refused batches was stored.
    assert_eq!(
        gw.handle
            .state
            .broker
            .head(&job)
            .await
            .unwrap()
            .unwrap()
            .seq,
        21
    );
    let deep = publisher
        .publish(&job, "job:chunk:v1", nested(MAX_DATA_DEPTH))
        .await
        .unwrap();
    assert_eq!(deep.seq, 22);
    let (_, env) = alice.event().await;
    assert_eq!(env["data"], nested(MAX_DATA_DEPTH), "live");
    let history = gw.handle.state.broker.history(&job, 21).await.unwrap();
    assert_eq!(history[0].1.data, nested(MAX_DATA_DEPTH), "in history");
    let done =
        serde_json::json!({"jobId": id, "status": "completed", "progress": 1.0, "message": ""});
    publisher
        .publish(&job, "job:status:v1", done)
        .await
        .unwrap();
    assert_eq!(
        refused(
            publisher
                .publish_batch(&job, "job:chunk:v1", vec![chunk(99)])
                .await
        ),
        "job_ended"
    );
    alice.close().await;
    gw.stop().await;
}

on_every_broker!(a_batch_is_published_in_one_step_with_consecutive_seqs);

/// `EVAL` of the publish script on the stream whose keys start with `base`
/// (`{prefix}{tag}:`), with `call` (ARGV[1]); the data is added by the caller.
/// Both as bytes, so that a test can send what is not UTF-8.
fn eval_publish(base: impl AsRef<[u8]>, call: impl AsRef<[u8]>) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(liveline_gateway::broker::PUBLISH_LUA).arg(4);
    for suffix in ["seq", "epoch", "hist", "rec"] {
        cmd.arg([base.as_ref(), suffix.as_bytes()].concat());
    }
    cmd.arg(call.as_ref());
    cmd
}

/// The head seq of the stream whose keys start with `base`, if stored.
async fn stored_seq(
    conn: &mut redis::aio::MultiplexedConnection,
    base: impl AsRef<[u8]>,
) -> Option<u64> {
    redis::cmd("GET")
        .arg([base.as_ref(), b"seq"].concat())
        .query_async(conn)
        .await
        .unwrap()
}

/// The script's own bound: a worker calling it with more than 256 events'
/// data gets `INVALID`, and nothing is stored.
#[tokio::test]
async fn the_script_refuses_a_batch_over_256_events() {
    let gw = Gateway::start_with(Backend::Redis, |c| c.demo.enabled = false).await;
    let p = &gw.config.key_prefix;
    let base = format!("{p}{{u:5:alice}}:s:big:");
    let client = redis::Client::open(REDIS_URL).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let call = r#"{"stream":"big","event":"note:added:v1","user":"alice"}"#;
    let run = |n: usize| {
        let mut cmd = eval_publish(&base, call);
        for i in 0..n {
            cmd.arg(format!("{{\"n\":{i}}}"));
        }
        cmd
    };
    let over: redis::RedisResult<String> = run(257).query_async(&mut conn).await;
    let err = over.expect_err("257 events are refused");
    assert_eq!(err.code(), Some("INVALID"), "{err}");
    assert_eq!(stored_seq(&mut conn, &base).await, None, "nothing stored");
    let most: String = run(256).query_async(&mut conn).await.unwrap();
    let envs: Vec<Value> = serde_json::from_str(&most).unwrap();
    assert_eq!(envs.len(), 256);
    assert_eq!(envs[255]["seq"], 256);
    gw.stop().await;
}

/// A batch goes live in as few messages as fit: its envelopes together,
/// at most 64 KiB of them in one message (an envelope larger than that
/// alone), in order; one event alone in the one-event layout. The gateway
/// delivers every event of them, in order.
#[tokio::test]
async fn a_batch_goes_live_in_few_messages_of_at_most_64_kib() {
    use futures_util::StreamExt;
    const LIVE_BYTES: usize = 65536;
    let gw = Gateway::start_with(Backend::Redis, |c| c.demo.enabled = false).await;
    let p = &gw.config.key_prefix;
    let mut alice = gw.connect("alice").await;
    let base = format!("{p}{{u:5:alice}}:s:big:");
    let client = redis::Client::open(REDIS_URL).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(format!("{p}{{u:5:alice}}:live"))
        .await
        .unwrap();
    let mut live = pubsub.on_message();
    let call = r#"{"stream":"big","event":"note:added:v1","user":"alice"}"#;
    let data = |kib: usize, i: usize| format!(r#"{{"i":{i},"pad":"{}"}}"#, "x".repeat(kib << 10));
    // Each batch and the events of each live message it goes in: small ones
    // together; 8 KiB ones 7 to a message (8 would pass 64 KiB); one of
    // 100 KiB alone, the small ones beside it apart from it; one event alone.
    let batches: [(Vec<usize>, Vec<usize>); 4] = [
        (vec![0; 16], vec![16]),
        (vec![8; 20], vec![7, 7, 6]),
        (vec![0, 100, 0, 0], vec![1, 1, 2]),
        (vec![0], vec![1]),
    ];
    let mut i = 0;
    for (sizes, messages) in batches {
        let mut cmd = eval_publish(&base, call);
        for &kib in &sizes {
            cmd.arg(data(kib, i));
            i += 1;
        }
        let _: String = cmd.query_async(&mut conn).await.unwrap();
        let mut counts = Vec::new();
        while counts.iter().sum::<usize>() < sizes.len() {
            let msg = live.next().await.expect("a live message");
            let wire: LiveWire = serde_json::from_slice(msg.get_payload_bytes()).unwrap();
            // One event in the one-event layout, a batch's in the batch's.
            let raw = match (wire.envelope, wire.envelopes) {
                (Some(one), None) if sizes.len() == 1 => vec![one],
                (None, Some(many)) if sizes.len() > 1 => many,
                _ => panic!(
                    "the wrong layout for {} events: {:.80}",
                    sizes.len(),
                    String::from_utf8_lossy(msg.get_payload_bytes())
                ),
            };
            let bytes: usize = raw.iter().map(|e| e.get().len()).sum();
            assert!(
                raw.len() == 1 || bytes <= LIVE_BYTES,
                "{} envelopes of {bytes} bytes in one message",
                raw.len()
            );
            counts.push(raw.len());
        }
        assert_eq!(counts, messages, "events per live message of {sizes:?}");
    }
    for n in 0..i {
        let (name, env) = alice.event().await;
        assert_eq!(name, "note:added:v1");
        assert_eq!(
            (env["seq"].as_u64(), env["data"]["i"].as_u64()),
            (Some(n as u64 + 1), Some(n as u64)),
            "delivered, in order"
        );
    }
    alice.close().await;
    gw.stop().await;
}

/// A live message as the publish script writes it, its envelopes as they
/// stand: one event's, or a batch's.
#[derive(serde::Deserialize)]
struct LiveWire {
    envelope: Option<Box<serde_json::value::RawValue>>,
    envelopes: Option<Vec<Box<serde_json::value::RawValue>>>,
}

/// A `ttl` or `history` the script could not keep is refused with
/// `INVALID` before anything is written (Redis itself refuses such a number
/// only after the seq has moved, or with a ttl of 0 drops the stream's keys
/// once the event is stored); the edges are taken.
#[tokio::test]
async fn the_script_refuses_a_ttl_or_history_it_cannot_keep() {
    let gw = Gateway::start_with(Backend::Redis, |c| c.demo.enabled = false).await;
    let p = &gw.config.key_prefix;
    let client = redis::Client::open(REDIS_URL).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let refused = [
        "0",
        "-5",
        "1.5",
        "1e300",
        "2147483648",
        "\"60\"",
        "null",
        "true",
    ];
    let taken = ["1", "2147483647"];
    let cases = ["ttl", "history"].into_iter().flat_map(|field| {
        let bad = refused.iter().map(move |v| (field, *v, false));
        bad.chain(taken.iter().map(move |v| (field, *v, true)))
    });
    for (n, (field, value, ok)) in cases.enumerate() {
        let base = format!("{p}{{u:5:alice}}:s:n{n}:");
        let call = format!(
            r#"{{"stream":"n{n}","event":"note:added:v1","user":"alice","{field}":{value}}}"#
        );
        let reply: redis::RedisResult<String> = eval_publish(&base, &call)
            .arg("1")
            .query_async(&mut conn)
            .await;
        let seq = stored_seq(&mut conn, &base).await;
        if ok {
            reply.unwrap_or_else(|e| panic!("{field} {value}: {e}"));
            assert_eq!(seq, Some(1), "{field} {value}");
            let ttl: i64 = redis::cmd("TTL")
                .arg(format!("{base}seq"))
                .query_async(&mut conn)
                .await
                .unwrap();
            let want: i64 = if field == "ttl" {
                value.parse().unwrap()
            } else {
                604_800
            };
            assert!(
                (want - 1..=want).contains(&ttl),
                "{field} {value}: ttl {ttl}"
            );
        } else {
            let err = reply.expect_err("refused");
            assert_eq!(err.code(), Some("INVALID"), "{field} {value}: {err}");
            assert!(err.to_string().contains(field), "{field} {value}: {err}");
            assert_eq!(seq, None, "{field} {value}: nothing stored");
        }
    }
    gw.stop().await;
}

/// Redis's TIME in ms, and whether its microseconds were below `below`.
async fn redis_ms(conn: &mut redis::aio::MultiplexedConnection, below: u64) -> (u64, bool) {
    let (secs, us): (u64, u64) = redis::cmd("TIME").query_async(conn).await.unwrap();
    (secs * 1000 + us / 1000, us < below)
}

/// Every event's `ts` is Redis's clock in ms, as the script cuts it from
/// TIME's text (the microseconds padded to six digits): each call is
/// bracketed by TIME before and after, until calls have run wholly within
/// the first 10 ms of a second (microseconds of at most four digits, the
/// padding at its widest).
#[tokio::test]
async fn every_event_is_stamped_with_redis_time_in_ms() {
    let gw = Gateway::start_with(Backend::Redis, |c| c.demo.enabled = false).await;
    let base = format!("{}{{u:5:alice}}:s:clock:", gw.config.key_prefix);
    let client = redis::Client::open(REDIS_URL).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let call = r#"{"stream":"clock","event":"note:added:v1","user":"alice"}"#;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut padded = 0;
    while padded < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "no call within a second's first 10 ms"
        );
        let (before, early) = redis_ms(&mut conn, 10_000).await;
        let env: String = eval_publish(&base, call)
            .arg("1")
            .query_async(&mut conn)
            .await
            .unwrap();
        let (after, still) = redis_ms(&mut conn, 10_000).await;
        let ts = serde_json::from_str::<Value>(&env).unwrap()["ts"]
            .as_u64()
            .unwrap_or_else(|| panic!("ts is a whole number: {env}"));
        assert!(
            (before..=after).contains(&ts),
            "{before} <= {ts} <= {after}"
        );
        if early && still && after - before < 10 {
            padded += 1;
        }
    }
    gw.stop().await;
}

/// The script takes as data exactly the JSON every reader takes: what it
/// stores, the gateway and the clients parse. cjson alone also takes NaN,
/// Infinity, hex and out-of-range numbers, raw control characters in
/// strings, and deeper nesting than serde_json reads; each is refused with
/// `INVALID` and nothing is stored. The verdict is held to serde_json's on
/// the data inside an event packet (what a Rust client parses whole), and
/// what is stored the SDK's reader takes in its event packet; cjson's own
/// settings are left as found.
#[tokio::test]
async fn the_script_takes_only_data_every_reader_parses() {
    use liveline_gateway::broker::{MAX_DATA_DEPTH, nested_within};
    let gw = Gateway::start_with(Backend::Redis, |c| c.demo.enabled = false).await;
    let p = &gw.config.key_prefix;
    let base = format!("{p}{{u:5:alice}}:s:strict:");
    let client = redis::Client::open(REDIS_URL).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let call = r#"{"stream":"strict","event":"note:added:v1","user":"alice"}"#;
    let publish = |data: &[u8]| {
        let mut cmd = eval_publish(&base, call);
        cmd.arg(data);
        cmd
    };
    let mut cases: Vec<Vec<u8>> = [
        r#"{"a":1}"#,
        r#"{"a":NaN}"#,
        r#"{"a":nan}"#,
        r#"{"a":-nan}"#,
        r#"{"a":Infinity}"#,
        r#"{"a":-Infinity}"#,
        r#"{"a":inf}"#,
        r#"{"a":0x10}"#,
        r#"{"a":0X1f}"#,
        "1e999",
        "-1e999",
        "1e308",
        "-0",
        "0.5e-400",
        "[1,2,]",
        r#"{"a":1}x"#,
        " {\"a\": 1} ",
        "\"x\u{10}y\"",
        "\"x\\u0010y\"",
        "\"x\ny\"",
        "\"x\ty\"",
        "\"x\ry\"",
        "\"x\u{7f}y\"",
        "{\n \"a\": \"x\\ny\",\t\"b\": [1.5e10, -0, \"q\\\"z\"]\r\n}",
        "\"\\\"\n\"",
        "\"\\\\\"",
        r#""\ud800""#,
        r#""\ud83d\ude00""#,
        "\"é ✓\"",
        "null",
        "true",
        "\"\"",
        "[]",
        "{}",
        "",
        " ",
        "01",
        "1.",
        "+1",
        "'a'",
        r#"{"a" 1}"#,
        "1.e5",
        "-.5",
        ".5",
        "1E5",
        "-0.0e-0",
        "1.5e308",
        "1.8e308",
        "-1.8e308",
        r#"{"t":"Step 1. then -.5 and 1e999, NaN or 0x10."}"#,
        r#"["a\"b", 1.]"#,
        r#"["a\\", 1.5]"#,
        r#"["a\\\"", -.5]"#,
        r#"["\\", "\"", "x."]"#,
        "[\"a\",\n\"b\\\\\",\t\"c\"]",
        "[\"a\\\\\n\"]",
        "[\"a\\\\\\n\"]",
    ]
    .iter()
    .map(|d| d.as_bytes().to_vec())
    .collect();
    for c in ["\u{0}", "\u{8}", "\u{b}", "\u{c}", "\u{1f}"] {
        cases.push(format!("\"a{c}b\"").into_bytes());
        cases.push(format!("[1,{c}2]").into_bytes());
    }
    for digits in [308, 309, 400] {
        cases.push("9".repeat(digits).into_bytes());
        cases.push(
            format!(r#"["{}", 1{}]"#, "9".repeat(digits), "0".repeat(digits - 1)).into_bytes(),
        );
    }
    for depth in 120..=130 {
        cases.push(format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes());
        cases.push(format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth)).into_bytes());
    }
    // Text that is not UTF-8 (RFC 3629), which cjson passes through: a stray
    // or missing continuation byte, overlong forms, surrogates, past
    // U+10FFFF, bytes that never start a character, and a bad lead before a
    // good character (no two pieces may join into one). Then the edges that
    // are UTF-8.
    for bytes in [
        &b"\"\xff\""[..],
        b"\"\x80\"",
        b"\"a\xc3\"",
        b"\"\xc3(\"",
        b"\"\xc0\xaf\"",
        b"\"\xc1\xbf\"",
        b"\"\xe0\x80\x80\"",
        b"\"\xe0\x9f\xbf\"",
        b"\"\xed\xa0\x80\"",
        b"\"\xed\xbf\xbf\"",
        b"\"\xf0\x8f\xbf\xbf\"",
        b"\"\xf4\x90\x80\x80\"",
        b"\"\xf5\x80\x80\x80\"",
        b"\"\xf8\x88\x80\x80\x80\"",
        b"\"\xe2\x82\"",
        b"\"\xf0\x9f\x98\"",
        b"\"\xe0\xc3\xa9\xa0\x80\"",
        b"{\"\xff\":1}",
        b"[\"ok\",\"\xfe\"]",
        b"\"\xc2\x80\"",
        b"\"\xdf\xbf\"",
        b"\"\xe0\xa0\x80\"",
        b"\"\xed\x9f\xbf\"",
        b"\"\xee\x80\x80\"",
        b"\"\xef\xbf\xbf\"",
        b"\"\xf0\x90\x80\x80\"",
        b"\"\xf4\x8f\xbf\xbf\"",
        b"{\"\xc3\xa9\":[\"\xe2\x9c\x93\",\"\xf0\x9f\x98\x80\"]}",
    ] {
        cases.push(bytes.to_vec());
    }
    let mut stored = 0;
    for data in &cases {
        let shown = String::from_utf8_lossy(data);
        let mut packet = br#"["note:added:v1",{"seq":1,"data":"#.to_vec();
        packet.extend_from_slice(data);
        packet.extend_from_slice(b"}]");
        let parses = serde_json::from_slice::<Value>(&packet).is_ok();
        // The gateway's own check of the data it sends `checked` (it writes
        // them itself, so only their depth is left to check) agrees.
        if let Ok(alone) = serde_json::from_slice::<Value>(data) {
            assert_eq!(nested_within(&alone, MAX_DATA_DEPTH), parses, "{shown:?}");
        }
        let reply: redis::RedisResult<Vec<u8>> = publish(data).query_async(&mut conn).await;
        match reply {
            Ok(envelope) => {
                assert!(
                    parses,
                    "stored what serde_json refuses: {data:?} ({shown:?})"
                );
                let envelope = String::from_utf8(envelope).expect("stored as UTF-8");
                let env: Value = serde_json::from_str(&envelope)
                    .unwrap_or_else(|e| panic!("{shown:?} stored as {envelope:?}: {e}"));
                // What the SDK reads: the event packet around the envelope.
                let packet = format!(r#"["note:added:v1",{envelope}]"#);
                liveline::json::validate(&packet)
                    .unwrap_or_else(|e| panic!("the SDK refuses {shown:?}: {e}"));
                stored += 1;
                assert_eq!(env["seq"], stored, "{shown:?}");
            }
            Err(e) => {
                assert!(!parses, "refused what serde_json parses: {shown:?}: {e}");
                assert_eq!(e.code(), Some("INVALID"), "{shown:?}: {e}");
            }
        }
    }
    assert_eq!(
        stored_seq(&mut conn, &base).await,
        Some(stored),
        "only the data taken is stored"
    );
    // `checked: true` (and only `true`) takes the caller's word for the
    // data: the script does not decode it, so what the caller vouched for
    // is stored as is. The call and the keys are still checked.
    let vouched = |checked: &str, base: &str, event: &str, data: &str| {
        let call = format!(
            r#"{{"stream":"strict","event":"{event}","user":"alice","checked":{checked}}}"#
        );
        let mut cmd = eval_publish(base, &call);
        cmd.arg(data);
        cmd
    };
    let taken: String = vouched("true", &base, "note:added:v1", "NaN")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(taken.ends_with(r#","data":NaN}"#), "{taken}");
    let wrong_keys = format!("{p}{{u:3:bob}}:s:strict:");
    for (checked, base, event) in [
        ("\"yes\"", base.as_str(), "note:added:v1"),
        ("1", base.as_str(), "note:added:v1"),
        ("true", wrong_keys.as_str(), "note:added:v1"),
        ("true", base.as_str(), "Note:added"),
    ] {
        let err = vouched(checked, base, event, "NaN")
            .query_async::<String>(&mut conn)
            .await
            .expect_err("refused");
        assert_eq!(
            err.code(),
            Some("INVALID"),
            "{checked} {base} {event}: {err}"
        );
    }
    assert_eq!(stored_seq(&mut conn, &base).await, Some(stored + 1));
    // cjson's settings (shared by every script of this Redis) as found.
    for (numbers, depth) in [("false", 7), ("true", 1000)] {
        let _: () = redis::cmd("EVAL")
            .arg(format!(
                "cjson.decode_invalid_numbers({numbers}) cjson.decode_max_depth({depth})"
            ))
            .arg(0)
            .query_async(&mut conn)
            .await
            .unwrap();
        let _: String = publish(b"[[1]]").query_async(&mut conn).await.unwrap();
        let _: redis::RedisResult<String> = publish(b"NaN").query_async(&mut conn).await;
        let now: String = redis::cmd("EVAL")
            .arg("return tostring(cjson.decode_invalid_numbers()) .. ' ' .. cjson.decode_max_depth()")
            .arg(0)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            now,
            format!("{numbers} {depth}"),
            "the script changed cjson's settings"
        );
    }
    gw.stop().await;
}

/// The stream's and the user's names go into every envelope as they are,
/// and cjson takes any byte: a name that is not UTF-8 is refused and nothing
/// is stored; names that are, multibyte ones included, are taken (checked or
/// not: a checked call's caller vouches for its names, as the gateway's
/// Rust strings do).
#[tokio::test]
async fn the_script_refuses_names_that_are_not_utf8() {
    let gw = Gateway::start_with(Backend::Redis, |c| c.demo.enabled = false).await;
    let p = gw.config.key_prefix.as_bytes();
    let client = redis::Client::open(REDIS_URL).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for (stream, user, checked, utf8) in [
        (&b"n\xffotes"[..], &b"alice"[..], false, false),
        (b"notes", b"al\xc3ice", false, false),
        (b"n\xed\xa0\x80tes", b"alice", false, false),
        (b"notes", b"\xc0\xafalice", false, false),
        (b"n\xc3\xb6tes", b"\xc3\xa4lice", false, true),
        (b"notes\xf0\x9f\x98\x80", b"alice\xe2\x9c\x93", true, true),
    ] {
        let shown = (
            String::from_utf8_lossy(stream),
            String::from_utf8_lossy(user),
        );
        let mut base = p.to_vec();
        base.extend_from_slice(format!("{{u:{}:", user.len()).as_bytes());
        base.extend_from_slice(user);
        base.extend_from_slice(b"}:s:");
        base.extend_from_slice(stream);
        base.push(b':');
        let mut call = br#"{"stream":""#.to_vec();
        call.extend_from_slice(stream);
        call.extend_from_slice(br#"","event":"note:added:v1","user":""#);
        call.extend_from_slice(user);
        call.extend_from_slice(if checked {
            br#"","checked":true}"#.as_slice()
        } else {
            br#""}"#
        });
        let reply: redis::RedisResult<Vec<u8>> = eval_publish(&base, &call)
            .arg(r#"{"a":1}"#)
            .query_async(&mut conn)
            .await;
        let seq = stored_seq(&mut conn, &base).await;
        if utf8 {
            let envelope = String::from_utf8(reply.unwrap()).expect("stored as UTF-8");
            let env: Value = serde_json::from_str(&envelope).unwrap();
            assert_eq!(
                env["stream"].as_str().unwrap().as_bytes(),
                stream,
                "{shown:?}"
            );
            assert_eq!(seq, Some(1), "{shown:?}");
        } else {
            let err = reply.expect_err("refused");
            assert_eq!(err.code(), Some("INVALID"), "{shown:?}: {err}");
            assert!(err.to_string().contains("UTF-8"), "{shown:?}: {err}");
            assert_eq!(seq, None, "{shown:?}: nothing stored");
        }
    }
    gw.stop().await;
}

/// A group (ARGV[1] an array of calls, what the gateway's group commit
/// sends): each call is stored or refused alone, the reply has one outcome
/// per call, and a group of the wrong shape is refused whole, storing nothing.
#[tokio::test]
async fn the_script_publishes_a_group_each_call_alone() {
    use liveline_gateway::stream::Stream;
    let gw = Gateway::start_with(Backend::Redis, |c| c.demo.enabled = false).await;
    let p = gw.config.key_prefix.clone();
    let mut alice = gw.connect("alice").await;
    let ended = common::create_running_job(&gw, "alice").await;
    let done =
        serde_json::json!({"jobId": ended, "status": "completed", "progress": 1, "message": ""});
    let job = Stream::Job { id: ended.clone() };
    gw.handle
        .state
        .publisher
        .publish(&job, "job:status:v1", done)
        .await
        .unwrap();
    assert_eq!(alice.event().await.1["data"]["status"], "completed");

    let client = redis::Client::open(REDIS_URL).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let tags = [
        "{u:5:alice}:s:notes".to_owned(),
        format!("{{job:{ended}}}"),
        "{topic:room:7}".to_owned(),
    ];
    let group = |tags: &[String], calls: &str, data: usize| {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(liveline_gateway::broker::PUBLISH_LUA)
            .arg(4 * tags.len());
        for tag in tags {
            for suffix in ["seq", "epoch", "hist", "rec"] {
                cmd.arg(format!("{p}{tag}:{suffix}"));
            }
        }
        cmd.arg(calls);
        for n in 1..=data {
            cmd.arg(format!("{{\"n\":{n}}}"));
        }
        cmd
    };
    let calls = format!(
        r#"[{{"stream":"notes","event":"note:added:v1","user":"alice","count":2}},
            {{"stream":"job:{ended}","event":"job:chunk:v1"}},
            {{"stream":"room:7","event":"room:said:v1","topic":true}}]"#
    );
    let reply: String = group(&tags, &calls, 4)
        .query_async(&mut conn)
        .await
        .unwrap();
    let outcomes: Vec<Value> = serde_json::from_str(&reply).unwrap();
    assert_eq!(outcomes.len(), 3, "{reply}");
    assert_eq!(outcomes[0]["seq"], 1, "{reply}");
    assert!(
        outcomes[1]["error"].as_str().unwrap().starts_with("ENDED "),
        "{reply}"
    );
    assert_eq!(outcomes[2]["seq"], 1, "{reply}");
    assert_eq!(outcomes[0]["ts"], outcomes[2]["ts"], "one clock per group");
    // Alice's private stream went live with the first two data, in order.
    for n in 1..=2 {
        let (name, env) = alice.event().await;
        assert_eq!(name, "note:added:v1");
        assert_eq!(env["seq"], n);
        assert_eq!(env["epoch"], outcomes[0]["epoch"]);
        assert_eq!(env["data"]["n"], n);
    }
    let broker = &gw.handle.state.broker;
    let notes = Stream::Private {
        user: "alice".into(),
        name: "notes".into(),
    };
    let room = Stream::Topic {
        name: "room:7".into(),
    };
    let kept: Vec<Value> = broker
        .history(&notes, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.data)
        .collect();
    assert_eq!(
        kept,
        vec![serde_json::json!({"n": 1}), serde_json::json!({"n": 2})]
    );
    let topic = broker.history(&room, 0).await.unwrap();
    assert_eq!(topic.len(), 1);
    assert_eq!(
        topic[0].1.data["n"], 4,
        "the topic's call took the last data"
    );
    assert_eq!(
        broker.head(&job).await.unwrap().unwrap().seq,
        1,
        "the ended job got nothing"
    );

    // Shapes refused whole: counts that do not match the data, keys that do
    // not match the calls, a count that is not a whole number from 1.
    let two = &tags[..2];
    let shapes = [
        (
            two,
            r#"[{"stream":"notes","event":"note:added:v1","user":"alice","count":2},{"stream":"room:7","event":"room:said:v1","topic":true}]"#,
            2,
        ),
        (
            &tags[..1],
            r#"[{"stream":"notes","event":"note:added:v1","user":"alice"},{"stream":"room:7","event":"room:said:v1","topic":true}]"#,
            2,
        ),
        (
            two,
            r#"[{"stream":"notes","event":"note:added:v1","user":"alice","count":0},{"stream":"room:7","event":"room:said:v1","topic":true}]"#,
            1,
        ),
        (
            two,
            r#"[{"stream":"notes","event":"note:added:v1","user":"alice","count":1.5},{"stream":"room:7","event":"room:said:v1","topic":true}]"#,
            2,
        ),
    ];
    for (tags, calls, data) in shapes {
        let refused: redis::RedisResult<String> =
            group(tags, calls, data).query_async(&mut conn).await;
        let err = refused.expect_err(calls);
        assert_eq!(err.code(), Some("INVALID"), "{calls}: {err}");
    }
    assert_eq!(
        broker.head(&notes).await.unwrap().unwrap().seq,
        2,
        "nothing stored"
    );
    assert_eq!(
        broker.head(&room).await.unwrap().unwrap().seq,
        1,
        "nothing stored"
    );
    // The one-call form checks a count it is given, too.
    let one: redis::RedisResult<String> = group(
        &tags[..1],
        r#"{"stream":"notes","event":"note:added:v1","user":"alice","count":3}"#,
        2,
    )
    .query_async(&mut conn)
    .await;
    assert_eq!(one.expect_err("count 3 for 2 data").code(), Some("INVALID"));
    assert_eq!(
        broker.head(&notes).await.unwrap().unwrap().seq,
        2,
        "nothing stored"
    );
    alice.close().await;
    gw.stop().await;
}

/// Group commit: appends made at the same time share calls of the publish
/// script, no call carries more than the script's 256 events (it would
/// refuse it), and every append still gets its own seqs and data. On a
/// private Redis, so its command counts are this test's alone.
#[tokio::test]
async fn concurrent_appends_share_script_calls_within_the_bound() {
    use liveline_gateway::broker::{Appended, EventLog, MAX_BATCH, RedisBroker};
    use liveline_gateway::stream::Stream;
    let port = common::spare_port();
    let _server = common::RedisServer::start(port).await;
    let url = format!("redis://127.0.0.1:{port}");
    let broker = RedisBroker::connect(&url, "group:", 1000).await.unwrap();
    let stream = |name: String| Stream::Private {
        user: "alice".into(),
        name,
    };
    let singles = (0..300).map(|i| {
        let s = stream(format!("s{i}"));
        let broker = &broker;
        async move {
            broker
                .append(&s, "note:added:v1", vec![serde_json::json!({"i": i})], None)
                .await
        }
    });
    let big = stream("big".into());
    let items = (0..MAX_BATCH)
        .map(|i| serde_json::json!({"i": i}))
        .collect();
    let (singles, batch) = tokio::join!(
        futures_util::future::join_all(singles),
        broker.append(&big, "note:added:v1", items, None)
    );
    for (i, one) in singles.into_iter().enumerate() {
        let Appended::Events(envs) = one.unwrap() else {
            panic!("single {i} not stored")
        };
        assert_eq!(envs.len(), 1);
        assert_eq!(
            (envs[0].seq, &envs[0].data),
            (1, &serde_json::json!({"i": i}))
        );
        assert_eq!(envs[0].stream, format!("s{i}"));
    }
    let Appended::Events(envs) = batch.unwrap() else {
        panic!("batch not stored")
    };
    let seqs: Vec<u64> = envs.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=MAX_BATCH as u64).collect::<Vec<_>>());
    assert_eq!(envs[255].data["i"], 255);
    // What was stored matches what the appends returned.
    let kept = broker.history(&big, 250).await.unwrap();
    assert_eq!(kept.len(), 6);
    assert_eq!(kept[5].1, envs[255]);

    let stats: String = common::redis_query(&url, redis::cmd("INFO").arg("commandstats")).await;
    let calls: u64 = stats
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    // 556 events need 3 calls at least (256 each at most); one call each
    // would be 301.
    assert!((3..=20).contains(&calls), "{calls} script calls\n{stats}");
}
