//! The browser driver: binds the sans-IO [`Client`] to a `WebSocket`, timers,
//! the `online`/`offline` and `visibilitychange` events, and JavaScript.
//!
//! The hand-written `pkg/index.js` wraps this class (`LivelineCore`) as the
//! public `Liveline` class.

use std::cell::RefCell;
use std::rc::Rc;

use gloo_timers::callback::Timeout;
use js_sys::{Function, JSON, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{BinaryType, CloseEvent, Event, MessageEvent, WebSocket};

use crate::client::{Client, Config, ConnectionState, Output, StateChange};
use crate::contract::Incoming;
use crate::outbox::{self, ActionError, SendError};
use crate::vec_map::VecMap;

type Listener = (u32, Function);

struct Socket {
    ws: WebSocket,
    _on_open: Closure<dyn FnMut(Event)>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl Socket {
    fn close(self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        self.ws.set_onerror(None);
        let _ = self.ws.close();
        // A closure may be the one running now (we close from inside
        // onmessage or onclose): drop them after the current task.
        wasm_bindgen_futures::spawn_local(async move { drop(self) });
    }
}

struct PageListeners {
    online: Closure<dyn FnMut(Event)>,
    offline: Closure<dyn FnMut(Event)>,
    visibility: Closure<dyn FnMut(Event)>,
}

struct Inner {
    core: Client,
    get_token: Function,
    socket: Option<Socket>,
    timer: Option<Timeout>,
    listeners: VecMap<String, Vec<Listener>>,
    subscribers: Vec<Listener>,
    next_listener: u32,
    snapshot: JsValue,
    last_change: StateChange,
    pending: VecMap<u64, (Function, Function)>,
    page: Option<PageListeners>,
    storage: Option<Storage>,
    /// Whether the saved outbox has been read (or there is none to read).
    loaded: bool,
    /// `connect()` was called before the saved outbox was read.
    want_connect: bool,
    /// Actions restored from storage: their promises died with the old page.
    restored: VecMap<u64, String>,
}

/// Where the outbox survives a reload: `{load(): Promise<string|null>, save(text)}`,
/// supplied by the package entry (IndexedDB, localStorage or memory).
struct Storage {
    load: Function,
    save: Function,
}

/// The raw browser client. Use `Liveline` from the package entry instead.
#[wasm_bindgen(js_name = LivelineCore)]
pub struct LivelineCore {
    inner: Rc<RefCell<Inner>>,
}

fn now() -> u64 {
    js_sys::Date::now() as u64
}

fn js_error(code: &str, message: &str) -> JsValue {
    let err = js_sys::Error::new(message);
    let _ = Reflect::set(&err, &"code".into(), &code.into());
    err.into()
}

/// Raw JSON text from the core to a JS value.
fn to_js(raw: &str) -> JsValue {
    JSON::parse(raw).unwrap_or(JsValue::NULL)
}

/// A JS value to JSON text for the core.
fn from_js(v: &JsValue) -> Result<String, JsValue> {
    let bad = || js_error("invalid_argument", "data must be JSON-serializable");
    if v.is_undefined() {
        return Ok("null".to_owned());
    }
    JSON::stringify(v)
        .ok()
        .and_then(|t| t.as_string())
        .ok_or_else(bad)
}

/// An event's payload as the app sees it: parsed by `JSON.parse`, with
/// binary placeholders replaced by `Uint8Array`s.
fn payload_of(ev: &Incoming) -> JsValue {
    let payload = to_js(&ev.payload_json());
    if ev.attachments.is_empty() {
        payload
    } else {
        fill_placeholders(payload, &ev.attachments)
    }
}

fn fill_placeholders(v: JsValue, attachments: &[Vec<u8>]) -> JsValue {
    if let Some(array) = v.dyn_ref::<js_sys::Array>() {
        for i in 0..array.length() {
            array.set(i, fill_placeholders(array.get(i), attachments));
        }
        return v;
    }
    if !v.is_object() {
        return v;
    }
    let field = |k: &str| Reflect::get(&v, &k.into()).unwrap_or(JsValue::UNDEFINED);
    if field("_placeholder").as_bool() == Some(true) {
        let bytes = field("num")
            .as_f64()
            .and_then(|n| attachments.get(n as usize));
        if let Some(bytes) = bytes {
            return Uint8Array::from(bytes.as_slice()).into();
        }
        return v;
    }
    for k in Object::keys(v.unchecked_ref::<Object>()).iter() {
        let inner = Reflect::get(&v, &k).unwrap_or(JsValue::UNDEFINED);
        let _ = Reflect::set(&v, &k, &fill_placeholders(inner, attachments));
    }
    v
}

fn opt_u64(options: &JsValue, key: &str) -> Option<u64> {
    Reflect::get(options, &key.into())
        .ok()
        .and_then(|v| v.as_f64())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| v as u64)
}

fn snapshot_of(change: &StateChange) -> JsValue {
    let o = Object::new();
    let set = |k: &str, v: JsValue| {
        let _ = Reflect::set(&o, &k.into(), &v);
    };
    set("current", change.current.name().into());
    set("previous", change.previous.into());
    set("reason", change.reason.as_str().into());
    set("queued", (change.queued as f64).into());
    let (attempt, retry_in, error) = match &change.current {
        ConnectionState::Reconnecting {
            attempt,
            retry_in_ms,
            last_error,
        } => (*attempt, Some(*retry_in_ms), Some(last_error.as_str())),
        ConnectionState::Suspended { retry_in_ms } => (0, Some(*retry_in_ms), None),
        ConnectionState::Failed { reason } => (0, None, Some(reason.as_str())),
        _ => (0, None, None),
    };
    set("attempt", f64::from(attempt).into());
    set(
        "retryIn",
        retry_in.map_or(JsValue::NULL, |v| (v as f64).into()),
    );
    set(
        "retryAt",
        retry_in.map_or(JsValue::NULL, |v| ((now() + v) as f64).into()),
    );
    set("error", error.map_or(JsValue::NULL, JsValue::from));
    Object::freeze(&o);
    o.into()
}

#[wasm_bindgen(js_class = LivelineCore)]
impl LivelineCore {
    /// `new LivelineCore({url, getToken, backoff?: {initialMs, maxMs}, ackTimeoutMs?, outboxCapacity?})`
    #[wasm_bindgen(constructor)]
    pub fn new(options: JsValue) -> Result<LivelineCore, JsValue> {
        let url = Reflect::get(&options, &"url".into())
            .ok()
            .and_then(|v| v.as_string())
            .ok_or_else(|| js_error("invalid_argument", "options.url must be a string"))?;
        let get_token: Function = Reflect::get(&options, &"getToken".into())
            .ok()
            .and_then(|v| v.dyn_into().ok())
            .ok_or_else(|| js_error("invalid_argument", "options.getToken must be a function"))?;
        let mut config = Config::new(url);
        if let Ok(b) = Reflect::get(&options, &"backoff".into()) {
            if let Some(v) = opt_u64(&b, "initialMs") {
                config.backoff.initial_ms = v;
            }
            if let Some(v) = opt_u64(&b, "maxMs") {
                config.backoff.max_ms = v.max(1);
            }
        }
        if let Some(v) = opt_u64(&options, "ackTimeoutMs") {
            config.ack_timeout_ms = v;
        }
        if let Some(v) = opt_u64(&options, "outboxCapacity") {
            config.outbox_capacity = v as usize;
        }
        if let Some(v) = opt_u64(&options, "connectTimeoutMs") {
            config.connect_timeout_ms = v;
        }
        if let Some(v) = opt_u64(&options, "probeTimeoutMs") {
            config.probe_timeout_ms = v;
        }
        if Reflect::get(&options, &"livenessProbe".into())
            .ok()
            .and_then(|v| v.as_bool())
            == Some(false)
        {
            config.liveness_probe = false;
        }
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).map_err(|_| js_error("internal", "no randomness source"))?;
        let core = Client::new(config, u64::from_le_bytes(seed));
        let storage = Reflect::get(&options, &"storage".into())
            .ok()
            .filter(|v| v.is_object())
            .and_then(|s| {
                let f = |k: &str| {
                    Reflect::get(&s, &k.into())
                        .ok()?
                        .dyn_into::<Function>()
                        .ok()
                };
                Some(Storage {
                    load: f("load")?,
                    save: f("save")?,
                })
            });
        let last_change = StateChange {
            current: ConnectionState::Idle,
            previous: "idle",
            reason: String::new(),
            queued: 0,
        };
        let initial = snapshot_of(&last_change);
        let client = LivelineCore {
            inner: Rc::new(RefCell::new(Inner {
                core,
                get_token,
                socket: None,
                timer: None,
                listeners: VecMap::default(),
                subscribers: Vec::new(),
                next_listener: 0,
                snapshot: initial,
                last_change,
                pending: VecMap::default(),
                page: None,
                loaded: storage.is_none(),
                storage,
                want_connect: false,
                restored: VecMap::default(),
            })),
        };
        client.load_outbox();
        Ok(client)
    }

    /// Reads the outbox a previous page saved and puts it back in front.
    fn load_outbox(&self) {
        let load = match &self.inner.borrow().storage {
            Some(s) => s.load.clone(),
            None => return,
        };
        let weak = Rc::downgrade(&self.inner);
        wasm_bindgen_futures::spawn_local(async move {
            let text = match load.call0(&JsValue::NULL) {
                Ok(v) => match v.dyn_into::<Promise>() {
                    Ok(p) => wasm_bindgen_futures::JsFuture::from(p).await.ok(),
                    Err(v) => Some(v),
                },
                Err(_) => None,
            }
            .and_then(|v| v.as_string());
            let Some(rc) = weak.upgrade() else { return };
            {
                let mut inner = rc.borrow_mut();
                let saved = match text.as_deref().map(outbox::decode_actions) {
                    Some(Ok(actions)) => actions,
                    Some(Err(e)) => {
                        web_sys::console::warn_1(
                            &format!("liveline: saved outbox unreadable, ignored: {e}").into(),
                        );
                        Vec::new()
                    }
                    None => Vec::new(),
                };
                let names: Vec<String> = saved.iter().map(|a| a.name.clone()).collect();
                let ids = inner.core.restore_outbox(saved, now());
                for (id, name) in ids.into_iter().zip(names) {
                    inner.restored.insert(id, name);
                }
                inner.loaded = true;
                if std::mem::take(&mut inner.want_connect) {
                    inner.core.connect(now());
                }
            }
            save_outbox(&rc);
            pump(&rc);
        });
    }

    /// Starts connecting (and reconnecting until `close()`).
    pub fn connect(&self) {
        attach_page_listeners(&self.inner);
        {
            let mut inner = self.inner.borrow_mut();
            if inner.loaded {
                inner.core.connect(now());
            } else {
                inner.want_connect = true;
            }
        }
        pump(&self.inner);
    }

    /// Closes the connection and releases every listener and timer.
    /// Queued actions stay queued.
    pub fn close(&self) {
        {
            let mut inner = self.inner.borrow_mut();
            inner.want_connect = false;
            inner.core.close(now());
        }
        pump(&self.inner);
        let mut inner = self.inner.borrow_mut();
        inner.timer = None;
        if let Some(s) = inner.socket.take() {
            s.close();
        }
        detach_page_listeners(&mut inner);
    }

    /// Sends an action; resolves with the gateway's result, rejects with an
    /// `Error` whose `code` says why.
    pub fn send(&self, name: String, data: JsValue) -> Promise {
        let data = match from_js(&data) {
            Ok(d) => d,
            Err(e) => return Promise::reject(&e),
        };
        let result = self.inner.borrow_mut().core.send(&name, &data, now());
        let promise = match result {
            Ok(id) => {
                let inner = self.inner.clone();
                Promise::new(&mut |resolve, reject| {
                    inner.borrow_mut().pending.insert(id, (resolve, reject));
                })
            }
            Err(e @ SendError::OutboxFull(_)) => {
                Promise::reject(&js_error("outbox_full", &e.to_string()))
            }
            Err(e) => Promise::reject(&js_error("invalid_argument", &e.to_string())),
        };
        pump(&self.inner);
        promise
    }

    /// Calls `fn(payload)` for every event with this name (`*` for all,
    /// called as `fn(payload, name)`). Returns an id for `off`.
    pub fn on(&self, name: String, f: Function) -> u32 {
        let mut inner = self.inner.borrow_mut();
        inner.next_listener += 1;
        let id = inner.next_listener;
        inner.listeners.get_or_default(name).push((id, f));
        id
    }

    /// Removes the listener `on` returned this id for.
    pub fn off(&self, id: u32) {
        let mut inner = self.inner.borrow_mut();
        for list in inner.listeners.values_mut() {
            list.retain(|(i, _)| *i != id);
        }
        inner.subscribers.retain(|(i, _)| *i != id);
    }

    /// Calls `fn()` on every state change. Returns an id for `off`.
    pub fn subscribe(&self, f: Function) -> u32 {
        let mut inner = self.inner.borrow_mut();
        inner.next_listener += 1;
        let id = inner.next_listener;
        inner.subscribers.push((id, f));
        id
    }

    /// The current state: the same object until the state changes.
    #[wasm_bindgen(js_name = getSnapshot)]
    pub fn snapshot(&self) -> JsValue {
        self.inner.borrow().snapshot.clone()
    }

    /// Listener and timer counts, for leak checks: `{listeners, subscribers, pending, timers, sockets, pageListeners}`.
    pub fn stats(&self) -> JsValue {
        let inner = self.inner.borrow();
        let o = Object::new();
        let set = |k: &str, v: usize| {
            let _ = Reflect::set(&o, &k.into(), &(v as f64).into());
        };
        set("listeners", inner.listeners.values().map(Vec::len).sum());
        set("subscribers", inner.subscribers.len());
        set("pending", inner.pending.len());
        set("timers", usize::from(inner.timer.is_some()));
        set("sockets", usize::from(inner.socket.is_some()));
        set("pageListeners", usize::from(inner.page.is_some()));
        o.into()
    }
}

fn attach_page_listeners(rc: &Rc<RefCell<Inner>>) {
    if rc.borrow().page.is_some() {
        return;
    }
    let Some(window) = web_sys::window() else {
        return;
    };
    let make = |f: fn(&mut Client, u64)| {
        let weak = Rc::downgrade(rc);
        Closure::<dyn FnMut(Event)>::new(move |_e: Event| {
            if let Some(rc) = weak.upgrade() {
                f(&mut rc.borrow_mut().core, now());
                pump(&rc);
            }
        })
    };
    let online = make(|c, t| c.handle_network(true, t));
    let offline = make(|c, t| c.handle_network(false, t));
    let visibility = make(|c, t| {
        let visible = web_sys::window()
            .and_then(|w| w.document())
            .is_none_or(|d| !d.hidden());
        c.handle_visibility(visible, t);
    });
    let _ = window.add_event_listener_with_callback("online", online.as_ref().unchecked_ref());
    let _ = window.add_event_listener_with_callback("offline", offline.as_ref().unchecked_ref());
    if let Some(doc) = window.document() {
        let _ = doc.add_event_listener_with_callback(
            "visibilitychange",
            visibility.as_ref().unchecked_ref(),
        );
    }
    rc.borrow_mut().page = Some(PageListeners {
        online,
        offline,
        visibility,
    });
}

fn detach_page_listeners(inner: &mut Inner) {
    let Some(page) = inner.page.take() else {
        return;
    };
    let Some(window) = web_sys::window() else {
        return;
    };
    let _ =
        window.remove_event_listener_with_callback("online", page.online.as_ref().unchecked_ref());
    let _ = window
        .remove_event_listener_with_callback("offline", page.offline.as_ref().unchecked_ref());
    if let Some(doc) = window.document() {
        let _ = doc.remove_event_listener_with_callback(
            "visibilitychange",
            page.visibility.as_ref().unchecked_ref(),
        );
    }
}

/// Runs the core's output until it is empty, then re-arms the timer.
/// Never holds the borrow while calling into JavaScript.
fn pump(rc: &Rc<RefCell<Inner>>) {
    loop {
        let out = rc.borrow_mut().core.poll_output();
        let Some(out) = out else { break };
        match out {
            Output::FetchToken => fetch_token(rc),
            Output::Open(url) => open_socket(rc, &url),
            Output::SendText(text) => {
                if let Some(s) = &rc.borrow().socket {
                    let _ = s.ws.send_with_str(&text);
                }
            }
            Output::SendBinary(bytes) => {
                if let Some(s) = &rc.borrow().socket {
                    let _ = s.ws.send_with_u8_array(&bytes);
                }
            }
            Output::Close => {
                let socket = rc.borrow_mut().socket.take();
                if let Some(s) = socket {
                    s.close();
                }
            }
            Output::State(change) => publish_state(rc, change),
            Output::Queue(n) => {
                save_outbox(rc);
                let mut change = rc.borrow().last_change.clone();
                change.queued = n;
                publish_state(rc, change);
            }
            Output::Event(ev, _ack) => {
                let name = ev.name.clone();
                let payload = payload_of(&ev);
                let (named, all): (Vec<Function>, Vec<Function>) = {
                    let inner = rc.borrow();
                    let get = |n: &str| {
                        inner
                            .listeners
                            .get(n)
                            .map(|l| l.iter().map(|(_, f)| f.clone()).collect())
                            .unwrap_or_default()
                    };
                    (get(&name), get("*"))
                };
                for f in named {
                    let _ = f.call1(&JsValue::NULL, &payload);
                }
                for f in all {
                    let _ = f.call2(&JsValue::NULL, &payload, &name.as_str().into());
                }
            }
            Output::Invalid(e) => {
                web_sys::console::warn_1(&format!("liveline: dropped event: {e}").into());
            }
            Output::Ack(id, result) => {
                let pending = rc.borrow_mut().pending.remove(&id);
                let restored = rc.borrow_mut().restored.remove(&id);
                if let Some(name) = restored {
                    settled_restored(rc, &name, result);
                } else if let Some((resolve, reject)) = pending {
                    let _ = match result {
                        Ok(v) => resolve.call1(&JsValue::NULL, &to_js(&v)),
                        Err(ActionError::Rejected { code, message }) => {
                            reject.call1(&JsValue::NULL, &js_error(&code, &message))
                        }
                        Err(e) => {
                            reject.call1(&JsValue::NULL, &js_error("expired", &e.to_string()))
                        }
                    };
                }
            }
        }
    }
    arm_timer(rc);
}

fn publish_state(rc: &Rc<RefCell<Inner>>, change: StateChange) {
    let snap = snapshot_of(&change);
    let subs: Vec<Function> = {
        let mut inner = rc.borrow_mut();
        inner.snapshot = snap;
        inner.last_change = change;
        inner.subscribers.iter().map(|(_, f)| f.clone()).collect()
    };
    for f in subs {
        let _ = f.call0(&JsValue::NULL);
    }
}

/// Writes the outbox to storage (once the saved one has been read, so an
/// early save never overwrites what the last page left).
fn save_outbox(rc: &Rc<RefCell<Inner>>) {
    let (save, text) = {
        let inner = rc.borrow();
        let Some(storage) = inner.storage.as_ref().filter(|_| inner.loaded) else {
            return;
        };
        let text = outbox::encode_actions(&inner.core.outbox_snapshot());
        (storage.save.clone(), text)
    };
    let _ = save.call1(&JsValue::NULL, &text.into());
}

/// An action restored after a reload ended: its promise is gone with the old
/// page, so tell `on('action:settled')` listeners instead.
fn settled_restored(rc: &Rc<RefCell<Inner>>, name: &str, result: Result<String, ActionError>) {
    let o = Object::new();
    let set = |k: &str, v: &JsValue| {
        let _ = Reflect::set(&o, &k.into(), v);
    };
    set("action", &name.into());
    set("ok", &result.is_ok().into());
    match result {
        Ok(v) => set("data", &to_js(&v)),
        Err(ActionError::Rejected { code, message }) => set("error", &js_error(&code, &message)),
        Err(e) => set("error", &js_error("expired", &e.to_string())),
    }
    let listeners: Vec<Function> = rc
        .borrow()
        .listeners
        .get("action:settled")
        .map(|l| l.iter().map(|(_, f)| f.clone()).collect())
        .unwrap_or_default();
    let payload: JsValue = o.into();
    for f in listeners {
        let _ = f.call1(&JsValue::NULL, &payload);
    }
}

fn arm_timer(rc: &Rc<RefCell<Inner>>) {
    let deadline = rc.borrow().core.poll_timeout();
    let timer = deadline.map(|at| {
        let delay = at.saturating_sub(now()).min(u64::from(u32::MAX >> 1)) as u32;
        let weak = Rc::downgrade(rc);
        Timeout::new(delay, move || {
            if let Some(rc) = weak.upgrade() {
                rc.borrow_mut().core.handle_timeout(now());
                pump(&rc);
            }
        })
    });
    rc.borrow_mut().timer = timer;
}

fn fetch_token(rc: &Rc<RefCell<Inner>>) {
    let get_token = rc.borrow().get_token.clone();
    let weak = Rc::downgrade(rc);
    wasm_bindgen_futures::spawn_local(async move {
        let result = match get_token.call0(&JsValue::NULL) {
            Ok(v) => {
                let v = match v.dyn_into::<Promise>() {
                    Ok(p) => wasm_bindgen_futures::JsFuture::from(p).await,
                    Err(v) => Ok(v),
                };
                match v {
                    Ok(t) => t
                        .as_string()
                        .ok_or_else(|| "getToken must return a string".to_owned()),
                    Err(e) => Err(error_message(&e)),
                }
            }
            Err(e) => Err(error_message(&e)),
        };
        if let Some(rc) = weak.upgrade() {
            rc.borrow_mut().core.handle_token(result, now());
            pump(&rc);
        }
    });
}

fn error_message(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| "unknown error".to_owned())
}

fn open_socket(rc: &Rc<RefCell<Inner>>, url: &str) {
    let ws = match WebSocket::new(url) {
        Ok(ws) => ws,
        Err(e) => {
            rc.borrow_mut()
                .core
                .handle_closed(&error_message(&e), now());
            return;
        }
    };
    ws.set_binary_type(BinaryType::Arraybuffer);
    let weak = Rc::downgrade(rc);
    let on_open = Closure::<dyn FnMut(Event)>::new(move |_| {
        if let Some(rc) = weak.upgrade() {
            rc.borrow_mut().core.handle_open(now());
            pump(&rc);
        }
    });
    let weak = Rc::downgrade(rc);
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
        let Some(rc) = weak.upgrade() else { return };
        let data = e.data();
        if let Some(text) = data.as_string() {
            rc.borrow_mut().core.handle_text(&text, now());
        } else if let Some(buf) = data.dyn_ref::<js_sys::ArrayBuffer>() {
            let bytes = Uint8Array::new(buf).to_vec();
            rc.borrow_mut().core.handle_binary(&bytes, now());
        }
        pump(&rc);
    });
    let weak = Rc::downgrade(rc);
    let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |e: CloseEvent| {
        if let Some(rc) = weak.upgrade() {
            let reason = format!("socket closed ({})", e.code());
            let socket = rc.borrow_mut().socket.take();
            if let Some(s) = socket {
                s.close();
            }
            rc.borrow_mut().core.handle_closed(&reason, now());
            pump(&rc);
        }
    });
    ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    let previous = rc.borrow_mut().socket.replace(Socket {
        ws,
        _on_open: on_open,
        _on_message: on_message,
        _on_close: on_close,
    });
    if let Some(s) = previous {
        s.close();
    }
}
