//! Browser tests: the wasm build of the core (`Core`, its allocator) in
//! headless Chromium, driven over a real `WebSocket` against a real gateway.
//!
//! The package's own driver (pkg/index.js) is tested through Playwright in
//! tests/browser-pkg/; here a minimal driver written with web-sys checks the
//! wasm handle's contract (the tagged outputs) from Rust.
//!
//! `scripts/test.sh` starts the gateway (embedded broker, demo worker) and
//! passes its URL and a token minted by the gateway binary at compile time:
//! `LIVELINE_TEST_URL`, `LIVELINE_TEST_TOKEN`.
#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{JSON, Promise, Reflect};
use liveline::wasm::Core;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;
use web_sys::{BinaryType, MessageEvent, WebSocket};

wasm_bindgen_test_configure!(run_in_browser);

const URL: Option<&str> = option_env!("LIVELINE_TEST_URL");
const TOKEN: Option<&str> = option_env!("LIVELINE_TEST_TOKEN");

// The `kind` numbers of `Core::input`.
const CONNECT: u32 = 0;
const CLOSE: u32 = 1;
const OPENED: u32 = 2;
const TEXT: u32 = 3;
const CLOSED: u32 = 4;
const TIMEOUT: u32 = 5;
const TOKEN_OK: u32 = 6;

fn now() -> f64 {
    js_sys::Date::now()
}

fn get(v: &JsValue, path: &[&str]) -> JsValue {
    path.iter().fold(v.clone(), |acc, k| {
        Reflect::get(&acc, &(*k).into()).unwrap_or(JsValue::UNDEFINED)
    })
}

fn parse(text: &str) -> JsValue {
    JSON::parse(text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

/// What the driver saw: every output, by tag.
#[derive(Default)]
struct Seen {
    states: Vec<JsValue>,
    events: Vec<JsValue>,
    acks: Vec<JsValue>,
}

struct Driver {
    core: Core,
    token: &'static str,
    ws: Option<WebSocket>,
    handlers: Vec<Closure<dyn FnMut(JsValue)>>,
    seen: Seen,
}

type Shared = Rc<RefCell<Driver>>;

fn driver(token: &'static str) -> Shared {
    let url =
        URL.expect("LIVELINE_TEST_URL is not set: run the browser tests through scripts/test.sh");
    let nan = f64::NAN;
    let core = Core::new(url.to_owned(), 7, 11, &[nan; 7]);
    Rc::new(RefCell::new(Driver {
        core,
        token,
        ws: None,
        handlers: Vec::new(),
        seen: Seen::default(),
    }))
}

fn input(d: &Shared, kind: u32, text: &str) {
    d.borrow_mut().core.input(kind, text.to_owned(), now());
    pump(d);
}

/// Runs the core's outputs until there are none.
fn pump(d: &Shared) {
    loop {
        let out = d.borrow_mut().core.poll();
        let Some(out) = out else { break };
        let (tag, rest) = out.split_at(1);
        match tag {
            "t" => {
                let token = d.borrow().token;
                d.borrow_mut().core.input(TOKEN_OK, token.to_owned(), now());
            }
            "o" => open(d, rest),
            "s" => {
                if let Some(ws) = &d.borrow().ws {
                    ws.send_with_str(rest).expect("send");
                }
            }
            "b" => {
                let bytes = d.borrow_mut().core.bytes();
                if let Some(ws) = &d.borrow().ws {
                    ws.send_with_u8_array(&bytes).expect("send");
                }
            }
            "c" => {
                if let Some(ws) = d.borrow_mut().ws.take() {
                    let _ = ws.close();
                }
            }
            "z" => d.borrow_mut().seen.states.push(parse(rest)),
            "q" => assert!(rest.parse::<u32>().is_ok(), "q carries a count: {out}"),
            "e" => d.borrow_mut().seen.events.push(parse(rest)),
            "a" => d.borrow_mut().seen.acks.push(parse(rest)),
            "i" => panic!("a contract was broken: {rest}"),
            _ => panic!("unknown output {out}"),
        }
    }
}

fn open(d: &Shared, url: &str) {
    let ws = WebSocket::new(url).expect("WebSocket");
    ws.set_binary_type(BinaryType::Arraybuffer);
    let weak = Rc::downgrade(d);
    let on_open = Closure::<dyn FnMut(JsValue)>::new(move |_| {
        if let Some(d) = weak.upgrade() {
            input(&d, OPENED, "");
        }
    });
    let weak = Rc::downgrade(d);
    let on_message = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
        let Some(d) = weak.upgrade() else { return };
        let data = e.unchecked_into::<MessageEvent>().data();
        match data.as_string() {
            Some(text) => input(&d, TEXT, &text),
            None => {
                let bytes = js_sys::Uint8Array::new(&data).to_vec();
                d.borrow_mut().core.binary(&bytes, now());
                pump(&d);
            }
        }
    });
    let weak = Rc::downgrade(d);
    let on_close = Closure::<dyn FnMut(JsValue)>::new(move |_| {
        if let Some(d) = weak.upgrade() {
            d.borrow_mut().ws = None;
            input(&d, CLOSED, "socket closed");
        }
    });
    ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    let mut drv = d.borrow_mut();
    drv.ws = Some(ws);
    drv.handlers.extend([on_open, on_message, on_close]);
}

async fn sleep(ms: i32) {
    let p = Promise::new(&mut |resolve, _| {
        web_sys::window()
            .expect("window")
            .set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms)
            .expect("setTimeout");
    });
    JsFuture::from(p).await.expect("sleep");
}

/// Polls `check` every 20 ms until it holds, for at most `ms`; fires the
/// core's timer when it is due (the driver's only timer).
async fn wait_until(d: &Shared, ms: i32, what: &str, check: impl Fn(&Seen) -> bool) {
    let mut waited = 0;
    while !check(&d.borrow().seen) {
        assert!(waited < ms, "timed out: {what}");
        sleep(20).await;
        waited += 20;
        let due = d.borrow().core.deadline();
        if due >= 0.0 && now() >= due {
            input(d, TIMEOUT, "");
        }
    }
}

fn state_of(v: &JsValue) -> String {
    get(v, &["current"]).as_string().unwrap_or_default()
}

#[wasm_bindgen_test]
async fn a_job_streams_its_status_in_order_through_completed() {
    let token = TOKEN.expect("LIVELINE_TEST_TOKEN is not set: run through scripts/test.sh");
    let d = driver(token);
    input(&d, CONNECT, "");
    let id = d
        .borrow_mut()
        .core
        .send(
            "job:start:v1",
            r#"{"kind":"research","params":{"query":"wasm in the browser"}}"#,
            now(),
        )
        .expect("queued");
    pump(&d);
    wait_until(&d, 10_000, "job:start:v1 is acked", |s| !s.acks.is_empty()).await;
    let ack = d.borrow().seen.acks[0].clone();
    // `[id, true, result]`
    assert_eq!(get(&ack, &["0"]).as_f64(), Some(id));
    assert_eq!(get(&ack, &["1"]).as_bool(), Some(true));
    let job_id = get(&ack, &["2", "jobId"]).as_string().expect("jobId");
    assert!(
        d.borrow()
            .seen
            .states
            .iter()
            .any(|s| state_of(s) == "connected")
    );

    let status_of = |e: &JsValue| get(e, &["3", "0", "data", "status"]).as_string();
    wait_until(&d, 20_000, "the job reaches completed", |s| {
        s.events
            .iter()
            .any(|e| status_of(e).as_deref() == Some("completed"))
    })
    .await;
    // `[ackId, attachments, name, [args...]]`
    let statuses: Vec<(f64, String)> = d
        .borrow()
        .seen
        .events
        .iter()
        .filter(|e| get(e, &["2"]).as_string().as_deref() == Some("job:status:v1"))
        .filter(|e| get(e, &["3", "0", "data", "jobId"]).as_string().as_deref() == Some(&job_id))
        .map(|e| {
            let seq = get(e, &["3", "0", "seq"]).as_f64().unwrap_or(-1.0);
            (seq, status_of(e).unwrap_or_default())
        })
        .collect();
    assert_eq!(statuses.first().map(|s| s.1.as_str()), Some("queued"));
    assert_eq!(statuses.last().map(|s| s.1.as_str()), Some("completed"));
    for pair in statuses.windows(2) {
        assert!(pair[1].0 > pair[0].0, "seq must increase: {statuses:?}");
    }
    input(&d, CLOSE, "");
    assert!(d.borrow().ws.is_none(), "close drops the socket");
    let last = d.borrow().seen.states.last().cloned().expect("a state");
    assert_eq!(state_of(&last), "closed");
}

#[wasm_bindgen_test]
async fn a_rejected_token_ends_in_failed_with_a_reason() {
    let d = driver("not-a-jwt");
    input(&d, CONNECT, "");
    let failed = |s: &Seen| s.states.iter().any(|s| state_of(s) == "failed");
    wait_until(&d, 10_000, "state reaches failed", failed).await;
    let seen = &d.borrow().seen;
    let state = seen
        .states
        .iter()
        .find(|s| state_of(s) == "failed")
        .expect("failed");
    let error = get(state, &["error"]).as_string().unwrap_or_default();
    assert!(
        error.contains("refused"),
        "reason should say the connection was refused: {error}"
    );
}

/// The wasm build's allocator (src/wasm_alloc.rs) under churn: blocks of
/// every class, freed in a scrambled order and reused, never overlap.
#[wasm_bindgen_test]
fn the_allocator_keeps_blocks_apart_under_churn() {
    let mut live: Vec<Vec<u8>> = Vec::new();
    let mut x: u32 = 12345;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    for round in 0..20_000u32 {
        let r = next();
        if r % 3 == 0 && !live.is_empty() {
            let i = (next() as usize) % live.len();
            let v = live.swap_remove(i);
            let tag = v.first().copied().unwrap_or(0);
            assert!(v.iter().all(|b| *b == tag), "block overwritten");
        } else {
            let size = match r % 7 {
                0 => (next() % 70_000) as usize,
                _ => (next() % 300) as usize,
            };
            let tag = (round % 251) as u8;
            let mut v = vec![tag; size];
            if r % 5 == 0 {
                // Grow in place or move: realloc keeps the contents.
                v.resize(size * 2 + 1, tag);
            }
            live.push(v);
        }
    }
    for v in &live {
        let tag = v.first().copied().unwrap_or(0);
        assert!(v.iter().all(|b| *b == tag), "block overwritten");
    }
}
