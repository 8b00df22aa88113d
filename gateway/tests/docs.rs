//! The user docs stay accurate: every `serve` flag and variable is in
//! docs/configuration.md, the Grafana dashboard only queries metrics the
//! gateway exposes, and the shell blocks marked runnable run as written.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

fn doc(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn configuration_doc_lists_every_serve_flag_and_variable() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_liveline-gateway"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let config = doc("configuration.md");
    let mut flags = 0;
    for word in help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']') {
        let word = word.trim_end_matches(['=', ':']);
        let flag = word.starts_with("--") && word.len() > 2 && word != "--help";
        let var = word.starts_with("env=LIVELINE_") || word.starts_with("LIVELINE_");
        if flag {
            flags += 1;
            let name = word.split('=').next().unwrap();
            assert!(
                config.contains(&format!("`{name}")),
                "{name} missing from configuration.md"
            );
        }
        if var {
            let name = word.trim_start_matches("env=");
            assert!(
                config.contains(name),
                "{name} missing from configuration.md"
            );
        }
    }
    assert!(flags > 25, "parsed {flags} flags from:\n{help}");
}

#[test]
fn grafana_dashboard_queries_only_exposed_metrics() {
    let dash: serde_json::Value = serde_json::from_str(&doc("grafana-dashboard.json")).unwrap();
    // A labelled family shows once it has a sample.
    let node = liveline_gateway::metrics::Metrics::default();
    node.action("job:start:v1", "ok");
    node.job_finished("research", "completed", 1.0);
    let metrics = node.render();
    let mut exposed: Vec<String> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    // OpenMetrics names a counter's family without the `_total` of its samples.
    for base in exposed.clone() {
        for suffix in ["_bucket", "_sum", "_count", "_total"] {
            exposed.push(format!("{base}{suffix}"));
        }
    }
    let mut used = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("liveline_") {
                    used += 1;
                    assert!(exposed.iter().any(|m| m == word), "{word} is not exposed");
                }
            }
        }
    }
    assert!(used >= 10);
}

/// The fenced blocks of the user docs marked ```` ```sh runnable ````, with
/// the file they are in.
fn runnable_blocks() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![dir.join("README.md")];
    for entry in std::fs::read_dir(dir.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    let mut blocks = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("```sh runnable\n") {
            let body = &rest[start + "```sh runnable\n".len()..];
            let end = body.find("```").expect("an unclosed block");
            blocks.push((file.display().to_string(), body[..end].to_owned()));
            rest = &body[end + 3..];
        }
    }
    blocks
}

/// Every block marked runnable runs as written (with `liveline-gateway` on
/// the PATH, as `cargo install --path gateway` puts it), against the Redis
/// at 127.0.0.1:6379, and does what the docs say: a gateway on that Redis
/// delivers the published note to alice live.
#[tokio::test]
async fn runnable_doc_blocks_run_verbatim() {
    let gw = common::Gateway::start(common::Backend::Redis).await;
    let mut alice = gw.connect("alice").await;
    let blocks = runnable_blocks();
    assert!(blocks.len() >= 2, "{blocks:?}");
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_liveline-gateway"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    for (file, block) in &blocks {
        let out = std::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", block])
            .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))
            .env("PATH", &path)
            // The test's own key prefix, so nothing lands in the shared `ll:` keys.
            .env("LIVELINE_KEY_PREFIX", &gw.config.key_prefix)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}:\n{block}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if block.contains("note:added:v1") {
            let (name, env) = alice.event().await;
            assert_eq!(name, "note:added:v1", "{file}");
            assert_eq!(env["data"]["text"], "hello", "{file}");
        }
    }
    alice.close().await;
    gw.stop().await;
}
