//! `pkg/contracts.d.ts` is generated from the Rust contract types
//! (`src/contract.rs`) and client settings (`Config` in `src/client.rs`),
//! through `liveline::ts`: this test fails when the
//! checked-in file differs from what the Rust definitions give, and
//! `LIVELINE_UPDATE_TYPES=1 cargo test -p liveline --test ts_types` rewrites
//! it. It also checks that every error code the gateway and the SDK send is
//! one `LivelineErrorCode` lists, and that the tunables (`CoreOptions`) are
//! passed from `pkg/index.js` to `src/wasm.rs` in the order
//! `liveline::client::TUNABLES` gives, and that `docs/sdk.md` lists each
//! tunable with its generated default.
#![cfg(not(target_arch = "wasm32"))]

use std::fs;
use std::path::{Path, PathBuf};

use liveline::client::TUNABLES;
use liveline::contract::ERROR_CODES;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn contracts_d_ts_is_generated_from_the_rust_contracts() {
    let path = root().join("pkg/contracts.d.ts");
    let text = liveline::ts::contracts_d_ts();
    if std::env::var_os("LIVELINE_UPDATE_TYPES").is_some_and(|v| v == "1") {
        fs::write(&path, &text).expect("write pkg/contracts.d.ts");
        return;
    }
    let on_disk = fs::read_to_string(&path).unwrap_or_default();
    if on_disk != text {
        let line = on_disk
            .lines()
            .zip(text.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| on_disk.lines().count().min(text.lines().count()));
        panic!(
            "pkg/contracts.d.ts is not what src/contract.rs and src/client.rs give (first difference at line {}: \
             {:?} on disk, {:?} generated); run `LIVELINE_UPDATE_TYPES=1 cargo test -p liveline \
             --test ts_types` and commit the file",
            line + 1,
            on_disk.lines().nth(line).unwrap_or("<end>"),
            text.lines().nth(line).unwrap_or("<end>"),
        );
    }
}

/// The `.rs` and `.js` files under `dir`, recursively.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs" || e == "js") {
            out.push(path);
        }
    }
}

/// What follows each `needle` in `text`: a string literal's value, or an
/// identifier in capitals (a constant); `None` for anything else (a variable).
fn arguments<'a>(text: &'a str, needle: &str) -> Vec<Arg<'a>> {
    text.match_indices(needle)
        .filter_map(|(i, _)| {
            let rest = text[i + needle.len()..].trim_start();
            match rest.chars().next()? {
                q @ ('"' | '\'') => rest[1..].split(q).next().map(Arg::Literal),
                _ => {
                    let ident = rest
                        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .next()?;
                    let constant = !ident.is_empty()
                        && ident.chars().all(|c| c.is_ascii_uppercase() || c == '_');
                    constant.then_some(Arg::Const(ident))
                }
            }
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
enum Arg<'a> {
    Literal(&'a str),
    Const(&'a str),
}

/// The value of `const NAME: &str = "value";` in `text`.
fn const_value<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let rest = text.split(&format!("const {name}: &str = \"")).nth(1)?;
    rest.split('"').next()
}

#[test]
fn every_error_code_the_gateway_and_the_sdk_send_is_listed() {
    let mut files = Vec::new();
    sources(&root().join("gateway/src"), &mut files);
    files.push(root().join("src/wasm.rs"));
    sources(&root().join("pkg"), &mut files);
    files.retain(|f| !f.starts_with(root().join("pkg/wasm")));
    let texts: Vec<(PathBuf, String)> = files
        .into_iter()
        .map(|f| {
            let text = fs::read_to_string(&f).expect("read source");
            (f, text)
        })
        .collect();
    let everything: String = texts.iter().map(|(_, t)| t.as_str()).collect();
    let mut seen = 0;
    for (file, text) in &texts {
        for needle in [
            "AckReply::err(",
            "js_error(",
            "livelineError(",
            "err.code = ",
        ] {
            for arg in arguments(text, needle) {
                let code = match arg {
                    Arg::Literal(code) => code,
                    Arg::Const(name) => const_value(&everything, name).unwrap_or_else(|| {
                        panic!("{}: no `const {name}: &str = \"...\"`", file.display())
                    }),
                };
                assert!(
                    ERROR_CODES.contains(&code),
                    "{}: error code {code:?} is not in liveline::contract::ERROR_CODES; add it \
                     (with its doc) in src/contract.rs and regenerate pkg/contracts.d.ts",
                    file.display()
                );
                if file.starts_with(root().join("gateway")) {
                    seen += 1;
                }
            }
        }
    }
    assert!(
        seen >= 10,
        "found only {seen} ack error codes in gateway/src: did `AckReply::err(` change?"
    );
}

/// The elements of the first `new Float64Array([...])` in `text`, trimmed.
fn float64_array_elements(text: &str) -> Vec<&str> {
    let start = text
        .find("new Float64Array([")
        .expect("pkg/index.js: no `new Float64Array([` (the tunables passed to `new Core`)")
        + "new Float64Array([".len();
    let mut depth = 0usize;
    let mut elements = Vec::new();
    let mut from = start;
    for (i, c) in text[start..].char_indices() {
        let i = start + i;
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | '}' => depth -= 1,
            ']' if depth == 0 => {
                elements.push(text[from..i].trim());
                break;
            }
            ']' => depth -= 1,
            ',' if depth == 0 => {
                elements.push(text[from..i].trim());
                from = i + 1;
            }
            _ => {}
        }
    }
    elements.retain(|e| !e.is_empty());
    elements
}

/// The option an element reads: `num(opts.backoff?.initialMs)` reads
/// `backoff.initialMs`.
fn option_read(element: &str) -> String {
    let rest = element
        .split_once("opts.")
        .unwrap_or_else(|| panic!("pkg/index.js: tunable {element:?} reads no `opts.` option"))
        .1;
    rest.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.' | '?'))
        .filter(|c| *c != '?')
        .collect()
}

#[test]
fn pkg_index_js_passes_the_tunables_in_order() {
    let js = fs::read_to_string(root().join("pkg/index.js")).expect("read pkg/index.js");
    let passed: Vec<String> = float64_array_elements(&js)
        .into_iter()
        .map(option_read)
        .collect();
    assert_eq!(
        passed, TUNABLES,
        "pkg/index.js passes the tunables to `new Core` in another order than \
         liveline::client::TUNABLES (src/client.rs)"
    );
}

#[test]
fn src_wasm_rs_reads_the_tunables_in_order() {
    let wasm = fs::read_to_string(root().join("src/wasm.rs")).expect("read src/wasm.rs");
    let tunables = liveline::ts::tunables();
    let field_of = |name: &str| {
        tunables
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.field.clone())
            .unwrap_or_else(|| panic!("liveline::ts::tunables() does not describe {name}"))
    };
    // The code: `t(i)` sets `config.<the field of TUNABLES[i]>`.
    for (i, name) in TUNABLES.iter().enumerate() {
        let at = wasm
            .find(&format!("t({i})"))
            .unwrap_or_else(|| panic!("src/wasm.rs never reads tunable {i} ({name})"));
        let field: String = wasm[at..]
            .split_once("config.")
            .expect("a `config.` field after the read")
            .1
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.'))
            .collect();
        assert_eq!(
            field,
            field_of(name),
            "src/wasm.rs: tunable {i} sets `config.{field}`, but TUNABLES[{i}] is {name}"
        );
    }
    assert!(
        !wasm.contains(&format!("t({})", TUNABLES.len())),
        "src/wasm.rs reads a tunable that liveline::client::TUNABLES does not list"
    );
    // The docs of `Core::new`: `tunables` is `[initialMs, maxMs, ...]`.
    let documented = wasm
        .split_once("`tunables` is")
        .and_then(|(_, rest)| rest.split_once("`["))
        .and_then(|(_, rest)| rest.split_once("]`"))
        .expect("src/wasm.rs: the docs of `Core::new` list no `tunables` [...]")
        .0
        .replace("///", " ");
    let documented: Vec<&str> = documented
        .split(',')
        .filter_map(|d| d.split_whitespace().next())
        .collect();
    let leaves: Vec<&str> = TUNABLES
        .iter()
        .map(|n| n.rsplit('.').next().unwrap_or(n))
        .collect();
    assert_eq!(
        documented, leaves,
        "src/wasm.rs documents the tunables in another order than liveline::client::TUNABLES"
    );
}

#[test]
fn docs_sdk_md_lists_every_tunable_with_its_default() {
    let docs = fs::read_to_string(root().join("docs/sdk.md")).expect("read docs/sdk.md");
    for t in liveline::ts::tunables() {
        let row = format!("| `{}` | {} |", t.name, t.default);
        assert!(
            docs.contains(&row),
            "docs/sdk.md has no row starting {row:?}: the options table differs from \
             CoreOptions (liveline::ts::tunables, defaults from Config::new)"
        );
    }
}
