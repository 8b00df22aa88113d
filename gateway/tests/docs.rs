//! The user docs stay accurate: every `serve` flag and variable is in
//! docs/configuration.md, and the Grafana dashboard only queries metrics the
//! gateway exposes.
#![allow(clippy::unwrap_used)]

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
    let metrics = liveline_gateway::metrics::Metrics::default().render();
    let mut exposed: Vec<String> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    for base in exposed.clone() {
        for suffix in ["_bucket", "_sum", "_count"] {
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
