//! Browser tests: the wasm SDK in headless Chromium against a real gateway.
//!
//! `scripts/test.sh` starts the gateway (embedded broker, demo worker) and
//! passes its URL and a token minted by the gateway binary at compile time:
//! `LIVELINE_TEST_URL`, `LIVELINE_TEST_TOKEN`.
#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Function, Object, Promise, Reflect};
use liveline::wasm::LivelineCore;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const URL: Option<&str> = option_env!("LIVELINE_TEST_URL");
const TOKEN: Option<&str> = option_env!("LIVELINE_TEST_TOKEN");

fn get(v: &JsValue, path: &[&str]) -> JsValue {
    path.iter().fold(v.clone(), |acc, k| {
        Reflect::get(&acc, &(*k).into()).unwrap_or(JsValue::UNDEFINED)
    })
}

fn client(token: &'static str) -> LivelineCore {
    let url =
        URL.expect("LIVELINE_TEST_URL is not set: run the browser tests through scripts/test.sh");
    let opts = Object::new();
    Reflect::set(&opts, &"url".into(), &url.into()).expect("set");
    let get_token = Closure::<dyn FnMut() -> JsValue>::new(move || JsValue::from(token));
    Reflect::set(&opts, &"getToken".into(), get_token.as_ref()).expect("set");
    get_token.forget();
    LivelineCore::new(opts.into()).expect("client")
}

/// A promise that rejects after `ms`, to bound a wait.
fn deadline(ms: i32, what: &'static str) -> Promise {
    Promise::new(&mut |_resolve, reject| {
        let window = web_sys::window().expect("window");
        let cb = Closure::once_into_js(move || {
            let _ = reject.call1(&JsValue::NULL, &JsValue::from(format!("timed out: {what}")));
        });
        window
            .set_timeout_with_callback_and_timeout_and_arguments_0(cb.unchecked_ref(), ms)
            .expect("setTimeout");
    })
}

async fn within(p: Promise, ms: i32, what: &'static str) -> JsValue {
    let race = Promise::race(&js_sys::Array::of2(&p, &deadline(ms, what)));
    JsFuture::from(race).await.expect(what)
}

#[wasm_bindgen_test]
async fn job_status_events_arrive_in_order_through_completed() {
    let token = TOKEN.expect("LIVELINE_TEST_TOKEN is not set: run through scripts/test.sh");
    let client = client(token);

    let seen: Rc<RefCell<Vec<(f64, String)>>> = Rc::default();
    let resolve_slot: Rc<RefCell<Option<Function>>> = Rc::default();
    let slot = resolve_slot.clone();
    let completed = Promise::new(&mut |resolve, _| *slot.borrow_mut() = Some(resolve));
    let sink = seen.clone();
    let listener = Closure::<dyn FnMut(JsValue)>::new(move |payload: JsValue| {
        let seq = get(&payload, &["seq"]).as_f64().unwrap_or(-1.0);
        let status = get(&payload, &["data", "status"])
            .as_string()
            .unwrap_or_default();
        sink.borrow_mut().push((seq, status.clone()));
        if status == "completed" {
            if let Some(r) = resolve_slot.borrow_mut().take() {
                let _ = r.call0(&JsValue::NULL);
            }
        }
    });
    let listener_id = client.on(
        "job:status:v1".into(),
        listener.as_ref().unchecked_ref::<Function>().clone(),
    );

    client.connect();
    let data =
        js_sys::JSON::parse(r#"{"kind":"research","params":{"query":"wasm in the browser"}}"#)
            .expect("json");
    let ack = within(
        client.send("job:start:v1".into(), data),
        10_000,
        "job:start:v1 ack",
    )
    .await;
    let job_id = get(&ack, &["jobId"])
        .as_string()
        .expect("ack carries jobId");
    assert!(!job_id.is_empty());
    assert_eq!(
        get(&client.snapshot(), &["current"]).as_string().as_deref(),
        Some("connected")
    );

    within(completed, 20_000, "job reaches completed").await;
    let seen = seen.borrow().clone();
    assert_eq!(
        seen.first().map(|s| s.1.as_str()),
        Some("queued"),
        "{seen:?}"
    );
    assert_eq!(
        seen.last().map(|s| s.1.as_str()),
        Some("completed"),
        "{seen:?}"
    );
    for pair in seen.windows(2) {
        assert!(pair[1].0 > pair[0].0, "seq must increase: {seen:?}");
    }

    client.off(listener_id);
    client.close();
    let stats = client.stats();
    for key in ["listeners", "timers", "sockets", "pageListeners", "pending"] {
        assert_eq!(
            get(&stats, &[key]).as_f64(),
            Some(0.0),
            "{key} left after close"
        );
    }
    assert_eq!(
        get(&client.snapshot(), &["current"]).as_string().as_deref(),
        Some("closed")
    );
}

#[wasm_bindgen_test]
async fn a_rejected_token_ends_in_failed_with_a_reason() {
    let client = client("not-a-jwt");
    let slot: Rc<RefCell<Option<Function>>> = Rc::default();
    let s = slot.clone();
    let failed = Promise::new(&mut |resolve, _| *s.borrow_mut() = Some(resolve));
    let core_snapshot = Rc::new(RefCell::new(JsValue::UNDEFINED));
    let snap = core_snapshot.clone();
    let client = Rc::new(client);
    let c = Rc::downgrade(&client);
    let on_change = Closure::<dyn FnMut()>::new(move || {
        let Some(c) = c.upgrade() else { return };
        let now = c.snapshot();
        if get(&now, &["current"]).as_string().as_deref() == Some("failed") {
            *snap.borrow_mut() = now;
            if let Some(r) = slot.borrow_mut().take() {
                let _ = r.call0(&JsValue::NULL);
            }
        }
    });
    let _unsub = client.subscribe(on_change.as_ref().unchecked_ref::<Function>().clone());
    client.connect();
    within(failed, 10_000, "state reaches failed").await;
    let error = get(&core_snapshot.borrow(), &["error"])
        .as_string()
        .unwrap_or_default();
    assert!(
        error.contains("refused"),
        "reason should say the connection was refused: {error}"
    );
    client.close();
}
