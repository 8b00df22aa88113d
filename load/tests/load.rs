//! The load test in CI (docs/benchmarks.md): `liveline-load` holds 1000
//! SDK connections (the native driver over the same core as the browser)
//! against a gateway process on the memory broker, and again on Redis, and
//! must see every event exactly once and in order, also across a `kill -9` of
//! the gateway mid-stream (on Redis); it also holds connections alone
//! (`--events 0`) and refuses flags that contradict. Figures are printed, not
//! asserted (tests do not time them).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;

/// The two runs share two cores: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The gateway binary the tool starts: the workspace's, built next to this
/// package's binary (`cargo test --workspace` builds it for the gateway's own
/// tests; `cargo build -p liveline-gateway` otherwise).
fn gateway_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_liveline-load")).with_file_name("liveline-gateway");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p liveline-gateway` first",
        bin.display()
    );
    bin
}

/// Runs the tool with `args` against a gateway it starts; its RESULT, once
/// it exited with success.
fn run_tool(args: &[&str]) -> Value {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(env!("CARGO_BIN_EXE_liveline-load"))
        .arg("--gateway-bin")
        .arg(gateway_bin())
        .args(["--duration-limit", "60"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    let result: Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|j| serde_json::from_str(j).unwrap())
        .unwrap_or_else(|| panic!("no RESULT line; stdout:\n{stdout}\nstderr:\n{stderr}"));
    assert!(out.status.success(), "liveline-load failed: {result}");
    result
}

/// 1000 connections, 10 events each, every one delivered once and in order.
fn run_load(extra: &[&str]) -> Value {
    let mut args = vec!["--connections", "1000", "--events", "10", "--rate", "2000"];
    args.extend_from_slice(extra);
    let result = run_tool(&args);
    assert_eq!(result["connections_held"], 1000, "{result}");
    assert_eq!(result["events_expected"], 10_000, "{result}");
    assert_eq!(result["delivered"], 10_000, "{result}");
    assert_eq!(result["lost"], 0, "{result}");
    assert_eq!(result["duplicated"], 0, "{result}");
    assert_eq!(result["reordered"], 0, "{result}");
    result
}

#[test]
fn holds_1000_connections_on_the_memory_broker_without_loss() {
    let r = run_load(&[]);
    assert_eq!(r["broker"], "memory");
}

#[test]
fn holds_1000_connections_on_redis_without_loss() {
    let r = run_load(&["--redis-url", "redis://127.0.0.1:6379"]);
    assert_eq!(r["broker"], "redis");
}

/// A gateway `kill -9`ed mid-stream and started again on its port: every
/// connection comes back and resumes from Redis, and every event still
/// arrives once and in order (`--kill-after-secs`, as in bench/compare.sh).
#[test]
fn a_gateway_killed_mid_stream_loses_nothing_on_redis() {
    let r = run_load(&[
        "--redis-url",
        "redis://127.0.0.1:6379",
        "--kill-after-secs",
        "1.5",
        "--drain-secs",
        "30",
    ]);
    assert!(r["restart_ms"].is_number(), "{r}");
    assert!(r["reconnects"].as_u64().unwrap() >= 1000, "{r}");
    assert!(r["reconnect_all_ms"].is_number(), "{r}");
}

/// `--events 0` holds the connections only (what `bench/callgrind.sh` counts
/// per handshake): no job is started, nothing is published, and the run
/// passes once every connection was held; the server's CPU per handshake
/// comes with its kernel part.
#[test]
fn holds_connections_without_jobs_or_events() {
    let r = run_tool(&["--connections", "300", "--events", "0"]);
    assert_eq!(r["connections_held"], 300, "{r}");
    assert_eq!(r["jobs_failed"], 0, "{r}");
    assert_eq!(r["events_published"], 0, "{r}");
    assert_eq!(r["events_expected"], 0, "{r}");
    assert_eq!(r["delivered"], 0, "{r}");
    let all = r["server_cpu_us_per_handshake"].as_f64().unwrap();
    let kernel = r["server_kernel_us_per_handshake"].as_f64().unwrap();
    assert!(all > 0.0 && kernel <= all, "{r}");
}

/// Flags that cannot make a run are refused before anything starts, with
/// exit code 2 and the reason.
#[test]
fn contradicting_flags_are_refused() {
    for (args, reason) in [
        (
            &["--events", "0", "--kill-after-secs", "1"][..],
            "--kill-after-secs needs events",
        ),
        (
            &["--connections", "0"][..],
            "--connections must be at least 1",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_liveline-load"))
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
}
