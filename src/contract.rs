//! Versioned event and action contracts shared by the SDK and the gateway.
//!
//! Event names are `domain:name:vN`. Within a version fields are only added; a
//! breaking change is a new version. Every server-to-client event carries one
//! argument, an [`Envelope`], whose `data` is the contract's payload.
//!
//! [`decode_event`] turns a name and its argument into a typed [`ServerEvent`];
//! an unknown name or version becomes [`ServerEvent::Unsupported`], never an error.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::json;

/// Declares the contract types. Each struct or enum is emitted exactly as
/// written (derives, serde attributes, docs), and, outside wasm32, with its
/// TypeScript declaration ([`crate::ts`]) built from the same tokens: the doc
/// comments become JSDoc, the field types map through
/// [`TsType`](crate::ts::TsType), and the wire names are read from serde. So
/// `pkg/contracts.d.ts` cannot drift from these definitions.
///
/// What it accepts: `pub struct`s with named `pub` fields (at most one type
/// parameter, named `T`) and `pub enum`s of unit variants. On a field,
/// `#[serde(default)]` and `#[serde(skip_serializing_if = "...")]` make the
/// TypeScript property optional (`Option::is_none` also drops its `| null`),
/// `#[serde(rename = "...")]` is read from serde, any other serde attribute
/// is a compile error (teach this macro first), and `#[ts(as = Type)]` (not
/// emitted on the Rust field) declares the field as `Type` does in TypeScript,
/// for a field whose Rust type is looser than its contract.
macro_rules! contract_types {
    // Items, one at a time; the names declared so far are collected for
    // `ts_declarations`.
    (@items [$(($name:ident $($g:ident)?))*]) => {
        /// TypeScript declarations of every contract type, in source order.
        #[cfg(not(target_arch = "wasm32"))]
        pub(crate) fn ts_declarations() -> Vec<String> {
            vec![$(
                <$name $(<contract_types!(@param $g)>)? as $crate::ts::TsDecl>::decl()
            ),*]
        }
    };
    (@items [$($names:tt)*]
        $(#[$($attr:tt)*])*
        pub struct $name:ident $(<$g:ident>)? { $($body:tt)* }
        $($rest:tt)*
    ) => {
        contract_types!(@struct [$(#[$($attr)*])*] $name [$($g)?] [] [] [] [] $($body)*);
        contract_types!(@items [$($names)* ($name $($g)?)] $($rest)*);
    };
    (@items [$($names:tt)*]
        $(#[$($attr:tt)*])*
        pub enum $name:ident { $( $(#[$($vattr:tt)*])* $variant:ident ),* $(,)? }
        $($rest:tt)*
    ) => {
        $(#[$($attr)*])*
        pub enum $name { $( $(#[$($vattr)*])* $variant ),* }

        #[cfg(not(target_arch = "wasm32"))]
        impl $crate::ts::TsType for $name {
            fn ts() -> String {
                stringify!($name).to_owned()
            }
        }

        #[cfg(not(target_arch = "wasm32"))]
        impl $crate::ts::TsDecl for $name {
            fn decl() -> String {
                $crate::ts::union::<Self>(
                    contract_types!(@docs [] $(#[$($attr)*])*),
                    &[$(contract_types!(@docs [] $(#[$($vattr)*])*)),*],
                )
            }
        }

        contract_types!(@items [$($names)* ($name)] $($rest)*);
    };

    // A struct's fields, one attribute at a time. State: [struct attributes]
    // name [type parameter] [Rust fields so far] [(type, [attributes]) of each
    // field, for TypeScript] [the current field's Rust attributes (all but
    // `#[ts]`)] [all its attributes].
    (@struct $attrs:tt $name:ident $g:tt [$($rf:tt)*] [$($tf:tt)*] [$($ca:tt)*] [$($cl:tt)*]
        #[ts $($t:tt)*] $($rest:tt)*
    ) => {
        contract_types!(@struct $attrs $name $g [$($rf)*] [$($tf)*] [$($ca)*] [$($cl)* [ts $($t)*]] $($rest)*);
    };
    (@struct $attrs:tt $name:ident $g:tt [$($rf:tt)*] [$($tf:tt)*] [$($ca:tt)*] [$($cl:tt)*]
        #[$($a:tt)*] $($rest:tt)*
    ) => {
        contract_types!(@struct $attrs $name $g [$($rf)*] [$($tf)*] [$($ca)* #[$($a)*]] [$($cl)* [$($a)*]] $($rest)*);
    };
    (@struct $attrs:tt $name:ident $g:tt [$($rf:tt)*] [$($tf:tt)*] [$($ca:tt)*] [$($cl:tt)*]
        pub $field:ident : $fty:ty $(, $($rest:tt)*)?
    ) => {
        contract_types!(@struct $attrs $name $g
            [$($rf)* $($ca)* pub $field: $fty,] [$($tf)* ($fty, [$($cl)*])] [] []
            $($($rest)*)?);
    };
    (@struct [$($attr:tt)*] $name:ident [$($g:ident)?] [$($rf:tt)*] [$(($fty:ty, [$($fa:tt)*]))*] [] []) => {
        $($attr)*
        pub struct $name $(<$g>)? { $($rf)* }

        #[cfg(not(target_arch = "wasm32"))]
        impl $(<$g: $crate::ts::TsType>)? $crate::ts::TsType for $name $(<$g>)? {
            fn ts() -> String {
                #[allow(unused_mut)]
                let mut ts = stringify!($name).to_owned();
                $(ts = format!("{ts}<{}>", <$g as $crate::ts::TsType>::ts());)?
                ts
            }
        }

        #[cfg(not(target_arch = "wasm32"))]
        impl $(<$g: $crate::ts::TsType>)? $crate::ts::TsDecl for $name $(<$g>)?
        where
            Self: serde::de::DeserializeOwned,
        {
            fn decl() -> String {
                let fields = vec![$({
                    #[allow(unused_mut)]
                    let mut field = $crate::ts::Field::new::<$fty>();
                    contract_types!(@field field; $($fa)*);
                    field
                }),*];
                $crate::ts::interface::<Self>(contract_types!(@docs [] $($attr)*), fields)
            }
        }
    };

    // The doc comments among attributes, as a `&[&str]`.
    (@docs [$($d:literal)*]) => {
        &[$($d),*] as &[&'static str]
    };
    (@docs [$($d:literal)*] #[doc = $line:literal] $($rest:tt)*) => {
        contract_types!(@docs [$($d)* $line] $($rest)*)
    };
    (@docs [$($d:literal)*] #[$($other:tt)*] $($rest:tt)*) => {
        contract_types!(@docs [$($d)*] $($rest)*)
    };

    // A field's attributes into `$f`, a `ts::Field`.
    (@field $f:ident;) => {};
    (@field $f:ident; [doc = $d:literal] $($rest:tt)*) => {
        $f.docs.push($d);
        contract_types!(@field $f; $($rest)*);
    };
    (@field $f:ident; [ts(as = $t:ty)] $($rest:tt)*) => {
        $f.declare_as::<$t>();
        contract_types!(@field $f; $($rest)*);
    };
    (@field $f:ident; [ts $($other:tt)*] $($rest:tt)*) => {
        compile_error!(concat!("contract_types!: unknown #[ts", stringify!($($other)*), "]; only #[ts(as = Type)]"));
    };
    (@field $f:ident; [serde($($s:tt)*)] $($rest:tt)*) => {
        contract_types!(@serde $f; $($s)*);
        contract_types!(@field $f; $($rest)*);
    };
    (@field $f:ident; [$($other:tt)*] $($rest:tt)*) => {
        contract_types!(@field $f; $($rest)*);
    };

    // The serde field attributes TypeScript understands.
    (@serde $f:ident;) => {};
    (@serde $f:ident; default $(= $path:literal)? $(, $($rest:tt)*)?) => {
        $f.default = true;
        contract_types!(@serde $f; $($($rest)*)?);
    };
    (@serde $f:ident; skip_serializing_if = $path:literal $(, $($rest:tt)*)?) => {
        $f.skip_serializing_if = Some($path);
        contract_types!(@serde $f; $($($rest)*)?);
    };
    (@serde $f:ident; rename = $wire:literal $(, $($rest:tt)*)?) => {
        contract_types!(@serde $f; $($($rest)*)?);
    };
    (@serde $f:ident; $($other:tt)*) => {
        compile_error!(concat!(
            "contract_types!: the TypeScript generator does not know #[serde(",
            stringify!($($other)*),
            ")]; teach contract_types! and src/ts.rs what it does to the wire shape"
        ));
    };

    (@param $g:ident) => { $crate::ts::TsParam };

    ($($items:tt)*) => {
        contract_types!(@items [] $($items)*);
    };
}

/// Event name of [`JobStatus`].
pub const JOB_STATUS_V1: &str = "job:status:v1";
/// Event name of [`JobChunk`].
pub const JOB_CHUNK_V1: &str = "job:chunk:v1";
/// Event name of [`JobResult`].
pub const JOB_RESULT_V1: &str = "job:result:v1";
/// Event name of [`JobError`].
pub const JOB_ERROR_V1: &str = "job:error:v1";
/// Event name of [`TradeOrder`].
pub const TRADE_ORDER_V1: &str = "trade:order:v1";
/// Event name of [`MarketTick`].
pub const MARKET_TICK_V1: &str = "market:tick:v1";
/// Event name of [`StreamRecovered`].
pub const STREAM_RECOVERED_V1: &str = "stream:recovered:v1";

/// The gateway is about to close this socket because its token expired:
/// `{reason: "token_expired", exp}`. The SDK reconnects with a fresh token.
pub const SESSION_EXPIRED_V1: &str = "session:expired:v1";
/// The user's sessions were revoked by an admin: `{reason: "revoked"}`.
pub const SESSION_REVOKED_V1: &str = "session:revoked:v1";
/// The first event a Liveline gateway sends on every connection, before any
/// other packet: `{"protocol":1}`. It tells the SDK that this server speaks
/// Liveline's contracts (the `{ok, data}` ack shape, the stream envelope,
/// replays, probes); a connection whose first event is anything else is an
/// ordinary Socket.IO server, whose acks and events the SDK passes on as
/// they are. The SDK does not hand it to the app.
pub const SESSION_WELCOME_V1: &str = "session:welcome:v1";
/// The gateway node is shutting down: `{retryInMs}` says when to reconnect
/// (jittered per socket, so clients spread over the other nodes).
pub const SESSION_SHUTDOWN_V1: &str = "session:shutdown:v1";

/// A liveness probe the SDK sends with an ack id when the page wakes or the
/// network returns; the gateway acks it at once with `{"ok":true,"data":{}}`.
pub const PROBE_V1: &str = "probe:v1";

/// Action name of [`JobStart`].
pub const ACTION_JOB_START_V1: &str = "job:start:v1";
/// Action name of [`JobCancel`].
pub const ACTION_JOB_CANCEL_V1: &str = "job:cancel:v1";
/// Event the client sends when it sees a gap: `{stream, epoch, seq}` (the
/// last seq it has); the gateway replays what follows.
pub const ACTION_STREAM_REPLAY_V1: &str = "stream:replay:v1";
/// Action name of [`TopicSubscribe`] (subscribe).
pub const ACTION_TOPIC_SUBSCRIBE_V1: &str = "topic:subscribe:v1";
/// Action name of [`TopicSubscribe`] (unsubscribe).
pub const ACTION_TOPIC_UNSUBSCRIBE_V1: &str = "topic:unsubscribe:v1";

/// The connection states an app can show, as
/// [`ConnectionState::name`](crate::client::ConnectionState::name) spells them
/// (the JS API's `current` and `previous`). `pkg/contracts.d.ts` declares
/// them as `ConnectionStateName`.
pub const STATE_NAMES: &[&str] = &[
    "idle",
    "connecting",
    "connected",
    "reconnecting",
    "offline",
    "suspended",
    "closed",
    "failed",
];

/// Declares the stable error codes: a constant each in [`error_code`],
/// [`ERROR_CODES`] with all of them, and (outside wasm32) their docs for the
/// TypeScript union `LivelineErrorCode`.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $name:ident = $code:literal;)*) => {
        /// The stable error codes an app sees as `LivelineError.code`: the
        /// SDK's own, and those the gateway answers a refused action or
        /// connection with (docs/states.md, docs/errors.md). Codes are
        /// stable; messages are for humans and may change.
        pub mod error_code {
            $($(#[doc = $doc])* pub const $name: &str = $code;)*
        }

        /// Every code in [`error_code`], in order.
        pub const ERROR_CODES: &[&str] = &[$($code),*];

        /// The docs of [`ERROR_CODES`], line by line, in the same order.
        #[cfg(not(target_arch = "wasm32"))]
        pub(crate) const ERROR_CODE_DOCS: &[&[&str]] = &[$(&[$($doc),*]),*];
    };
}

error_codes! {
    /// SDK: the WebAssembly module could not be loaded (the state is
    /// `failed` too); serve the package's `.wasm`, or pass it to `init()`.
    NOT_INITIALIZED = "not_initialized";
    /// SDK: a method called after `dispose()`; create a new client.
    DISPOSED = "disposed";
    /// SDK: bad constructor options or `send()` data (`url` a string,
    /// `getToken` a function, data JSON-serializable); fix the argument.
    INVALID_ARGUMENT = "invalid_argument";
    /// SDK: `send()` while the outbox holds `outboxCapacity` actions; wait
    /// for acks, or raise `outboxCapacity`.
    OUTBOX_FULL = "outbox_full";
    /// SDK: an action not acknowledged before its expiry (5 minutes); show
    /// it failed, send it again if still wanted.
    EXPIRED = "expired";
    /// SDK: `send()` while the client is `failed` (credentials refused
    /// twice, no WebSocket, the module not loaded); nothing is queued. Fix
    /// the cause, call `connect()`, then send again.
    FAILED = "failed";
    /// SDK: `emit()` while the client is not connected and its buffer of
    /// unsent emits already holds `emitBuffer` of them; wait until it is
    /// connected, or send it as a durable action with `send()`.
    BUFFER_FULL = "buffer_full";
    /// SDK: an `emitWithAck()` was sent and the connection was lost (or the
    /// client closed) before its ack came; the server may or may not have
    /// handled it. Raw emits are at most once: use `send()` for an action
    /// that must be applied exactly once.
    DISCONNECTED = "disconnected";
    /// SDK: `timeout(ms).emitWithAck()` had no ack within `ms`.
    TIMEOUT = "timeout";
    /// SDK: a `liveline-client/react` hook used outside `<LivelineProvider>`.
    NO_PROVIDER = "no_provider";
    /// Gateway ack: the action's payload is not `{key, data}` or a field of
    /// `data` is wrong; the message names the field. Do not retry as is.
    INVALID_PAYLOAD = "invalid_payload";
    /// Gateway ack: no such job for this user (another user's job is
    /// `not_found` too, so ids leak nothing).
    NOT_FOUND = "not_found";
    /// Gateway ack: too many actions per second from this user; repeated,
    /// the socket is closed. Slow down, retry later.
    RATE_LIMITED = "rate_limited";
    /// Gateway ack: the connection already holds the most topics allowed;
    /// unsubscribe from one first.
    TOO_MANY_TOPICS = "too_many_topics";
    /// Gateway ack: the gateway could not reach Redis; retry later (the
    /// outbox does, with the same key).
    UNAVAILABLE = "unavailable";
    /// Gateway ack: this gateway has no action of that name; fix the name,
    /// do not retry.
    UNKNOWN_ACTION = "unknown_action";
    /// Gateway REST 408: the request body did not arrive within the
    /// gateway's body timeout; the connection is closed.
    REQUEST_TIMEOUT = "request_timeout";
    /// SDK `send()`: the action is larger than the server's `maxPayload`
    /// (learned from its handshake); it is not queued, and one queued before
    /// the limit was known ends with this code. Gateway REST 413: the request
    /// body is larger than the route accepts.
    PAYLOAD_TOO_LARGE = "payload_too_large";
    /// Gateway: the token was refused (CONNECT, or REST 401). The SDK asks
    /// `getToken()` once more, then enters `failed`.
    UNAUTHORIZED = "unauthorized";
    /// Gateway: REST, the route needs a `service` or `admin` token; or
    /// `topic:subscribe:v1`, a topic that is not public and that the token's
    /// `topics` claim does not list.
    FORBIDDEN = "forbidden";
}

// The contract types: see `contract_types!` above; their TypeScript twins are
// `pkg/contracts.d.ts`.
contract_types! {
    /// The wrapper of every server-to-client event.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Envelope<T> {
        /// The stream the event belongs to, e.g. `job:42` or `market:BTC-USD`.
        pub stream: String,
        /// Changes whenever the stream's history was lost; positions from another
        /// epoch cannot be resumed.
        pub epoch: String,
        /// Contiguous per stream: 1, 2, 3, ... with no holes.
        pub seq: u64,
        /// Publish time, milliseconds since the Unix epoch.
        pub ts: u64,
        /// The contract's payload.
        pub data: T,
    }

    /// Lifecycle of a job.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    #[non_exhaustive]
    pub enum JobState {
        /// Accepted, waiting for a worker.
        Queued,
        /// A worker is on it.
        Running,
        /// Finished successfully; a `job:result:v1` carries the result.
        Completed,
        /// Finished with an error; a `job:error:v1` carries it.
        Failed,
        /// Cancelled by its owner.
        Cancelled,
    }

    /// `job:status:v1`: a job's status changed.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct JobStatus {
        /// The job.
        pub job_id: String,
        /// Its new status.
        pub status: JobState,
        /// 0.0 to 1.0.
        #[serde(default)]
        pub progress: f64,
        /// A human-readable line about what is happening.
        #[serde(default)]
        pub message: String,
    }

    /// `job:chunk:v1`: a piece of streamed text.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct JobChunk {
        /// The job.
        pub job_id: String,
        /// 0-based position of this chunk in the answer.
        pub index: u64,
        /// The text.
        pub text: String,
    }

    /// `job:result:v1`: the job's final result.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct JobResult {
        /// The job.
        pub job_id: String,
        /// Kind-specific result.
        pub result: Value,
    }

    /// `job:error:v1`: the job failed.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct JobError {
        /// The job.
        pub job_id: String,
        /// Stable machine-readable code.
        pub code: String,
        /// Human-readable explanation.
        pub message: String,
    }

    /// Order lifecycle.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    #[non_exhaustive]
    pub enum OrderState {
        /// Accepted by the venue.
        Accepted,
        /// Some quantity filled.
        PartiallyFilled,
        /// Completely filled.
        Filled,
        /// Refused.
        Rejected,
        /// Cancelled by its owner.
        Cancelled,
    }

    /// `trade:order:v1`: an order changed (the demo's: an order is a job of
    /// kind `order`, and this event comes on its stream `job:{orderId}`).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct TradeOrder {
        /// The order.
        pub order_id: String,
        /// e.g. `BTC-USD`.
        pub symbol: String,
        /// `buy` or `sell`.
        #[ts(as = Side)]
        pub side: String,
        /// Ordered quantity.
        pub qty: f64,
        /// Filled so far.
        #[serde(default)]
        pub filled_qty: f64,
        /// Limit or average fill price.
        #[serde(default)]
        pub price: f64,
        /// New state.
        pub status: OrderState,
    }

    /// `market:tick:v1`: a price on a public topic.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct MarketTick {
        /// e.g. `BTC-USD`.
        pub symbol: String,
        /// Last price.
        pub price: f64,
    }

    /// `stream:recovered:v1`: the outcome of a resume for one stream.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct StreamRecovered {
        /// The stream.
        pub stream: String,
        /// True when every missed event was replayed; false when the client must
        /// reload a snapshot.
        pub recovered: bool,
        /// The stream's current epoch.
        pub epoch: String,
        /// The stream's head sequence number.
        pub seq: u64,
    }

    /// `job:start:v1` action payload.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct JobStart {
        /// What to run: any kind the app's workers handle (1 to 64 of
        /// `a-z 0-9 . _ -`; a gateway may list the kinds it accepts).
        pub kind: String,
        /// Kind-specific parameters (e.g. `{"query": "..."}`).
        #[serde(default)]
        pub params: Value,
    }

    /// `job:start:v1` ack payload.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct JobStarted {
        /// The new job's id; its events come on stream `job:{jobId}`.
        pub job_id: String,
    }

    /// `job:cancel:v1` action payload.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct JobCancel {
        /// The job to cancel.
        pub job_id: String,
    }

    /// `job:cancel:v1` ack payload.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct JobCancelled {
        /// The job.
        pub job_id: String,
        /// Its status afterwards: `cancelled`, or the terminal status it reached
        /// first.
        pub status: JobState,
    }

    /// Buy or sell.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum Side {
        /// Buy.
        Buy,
        /// Sell.
        Sell,
    }

    /// `topic:subscribe:v1` / `topic:unsubscribe:v1` payload: a public topic such
    /// as `market:BTC-USD`. Subscribing acks `{topic, epoch, seq}` (the head).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct TopicSubscribe {
        /// The topic, which is also its stream.
        pub topic: String,
    }

    /// `topic:subscribe:v1` ack payload: the topic's head when the socket joined
    /// (an empty epoch and 0 before the first event); every later event arrives
    /// live.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct TopicSubscribed {
        /// The topic.
        pub topic: String,
        /// The topic stream's epoch.
        pub epoch: String,
        /// The topic stream's head sequence number.
        pub seq: u64,
    }

    /// `topic:unsubscribe:v1` ack payload.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct TopicUnsubscribed {
        /// The topic.
        pub topic: String,
    }
}

impl<T> Envelope<T> {
    /// The same envelope with its payload mapped.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Envelope<U> {
        Envelope {
            stream: self.stream,
            epoch: self.epoch,
            seq: self.seq,
            ts: self.ts,
            data: f(self.data),
        }
    }
}

impl JobState {
    /// Whether no further status can follow.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// The wire name (`queued`, `running`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// The reply to every action: `{"ok":true,"data":...}` or
/// `{"ok":false,"error":{"code":...,"message":...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AckReply {
    /// The action was taken (or had been taken before under the same key).
    Ok {
        /// Always true.
        ok: True,
        /// Action-specific result.
        data: Value,
    },
    /// The action was refused.
    Err {
        /// Always false.
        ok: False,
        /// Why.
        error: AckError,
    },
}

impl AckReply {
    /// A successful reply.
    pub fn ok(data: Value) -> Self {
        Self::Ok { ok: True, data }
    }

    /// A refusal.
    pub fn err(code: &str, message: impl Into<String>) -> Self {
        Self::Err {
            ok: False,
            error: AckError {
                code: code.to_owned(),
                message: message.into(),
            },
        }
    }
}

/// The error in a refused action's ack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AckError {
    /// Stable machine-readable code, e.g. `invalid_payload`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

/// Serializes as the JSON literal `true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct True;
/// Serializes as the JSON literal `false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct False;

macro_rules! bool_literal {
    ($ty:ident, $value:literal) => {
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bool($value)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if bool::deserialize(d)? == $value {
                    Ok($ty)
                } else {
                    Err(serde::de::Error::custom(concat!("expected ", $value)))
                }
            }
        }
    };
}
bool_literal!(True, true);
bool_literal!(False, false);

/// A decoded server-to-client event.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// `job:status:v1`
    JobStatus(Envelope<JobStatus>),
    /// `job:chunk:v1`
    JobChunk(Envelope<JobChunk>),
    /// `job:result:v1`
    JobResult(Envelope<JobResult>),
    /// `job:error:v1`
    JobError(Envelope<JobError>),
    /// `trade:order:v1`
    TradeOrder(Envelope<TradeOrder>),
    /// `market:tick:v1`
    MarketTick(Envelope<MarketTick>),
    /// `stream:recovered:v1` (not enveloped: it speaks about a stream).
    StreamRecovered(StreamRecovered),
    /// A name or version this SDK does not know. Kept whole so the app can
    /// still look at it.
    Unsupported {
        /// The event name as received.
        name: String,
        /// The arguments as received.
        args: Vec<Value>,
    },
}

impl ServerEvent {
    /// The contract name of this event.
    pub fn name(&self) -> &str {
        match self {
            Self::JobStatus(_) => JOB_STATUS_V1,
            Self::JobChunk(_) => JOB_CHUNK_V1,
            Self::JobResult(_) => JOB_RESULT_V1,
            Self::JobError(_) => JOB_ERROR_V1,
            Self::TradeOrder(_) => TRADE_ORDER_V1,
            Self::MarketTick(_) => MARKET_TICK_V1,
            Self::StreamRecovered(_) => STREAM_RECOVERED_V1,
            Self::Unsupported { name, .. } => name,
        }
    }

    /// The event's argument as JSON: the envelope for enveloped events, the
    /// notice for `stream:recovered:v1`, the first argument (or all of them
    /// when there are several) for unsupported ones.
    pub fn to_json(&self) -> Value {
        fn v<T: Serialize>(t: &T) -> Value {
            serde_json::to_value(t).unwrap_or(Value::Null)
        }
        match self {
            Self::JobStatus(e) => v(e),
            Self::JobChunk(e) => v(e),
            Self::JobResult(e) => v(e),
            Self::JobError(e) => v(e),
            Self::TradeOrder(e) => v(e),
            Self::MarketTick(e) => v(e),
            Self::StreamRecovered(r) => v(r),
            Self::Unsupported { args, .. } if args.len() == 1 => args[0].clone(),
            Self::Unsupported { args, .. } => Value::Array(args.clone()),
        }
    }

    /// `(stream, epoch, seq)` of an enveloped event.
    pub fn position(&self) -> Option<(&str, &str, u64)> {
        fn p<T>(e: &Envelope<T>) -> Option<(&str, &str, u64)> {
            Some((&e.stream, &e.epoch, e.seq))
        }
        match self {
            Self::JobStatus(e) => p(e),
            Self::JobChunk(e) => p(e),
            Self::JobResult(e) => p(e),
            Self::JobError(e) => p(e),
            Self::TradeOrder(e) => p(e),
            Self::MarketTick(e) => p(e),
            Self::StreamRecovered(_) | Self::Unsupported { .. } => None,
        }
    }
}

/// An event as it came off the wire: its name, its arguments as raw JSON
/// text, and any binary attachments (which stand in the arguments as
/// `{"_placeholder":true,"num":N}`).
///
/// The core reads only what it needs from it ([`Incoming::position`],
/// [`Incoming::recovered`]); the browser hands the raw arguments to
/// `JSON.parse`, and Rust users call [`Incoming::decode`] for the typed
/// contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The event name.
    pub name: String,
    /// The arguments, each a validated JSON text.
    pub args: Vec<String>,
    /// Binary attachments, in order.
    pub attachments: Vec<Vec<u8>>,
}

/// Where an enveloped event stands in its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The stream.
    pub stream: String,
    /// The stream's epoch.
    pub epoch: String,
    /// The event's sequence number.
    pub seq: u64,
}

impl Incoming {
    /// Whether this is one of the v1 contracts that carry an envelope.
    pub fn is_enveloped_contract(&self) -> bool {
        matches!(
            self.name.as_str(),
            JOB_STATUS_V1
                | JOB_CHUNK_V1
                | JOB_RESULT_V1
                | JOB_ERROR_V1
                | TRADE_ORDER_V1
                | MARKET_TICK_V1
        )
    }

    /// The envelope's position: `Ok(None)` for an event without an envelope,
    /// an error for a v1 contract whose envelope is broken. An event of a
    /// name this SDK does not know still has its position tracked when its
    /// first argument is an envelope, so a newer contract on the same stream
    /// does not look like a gap.
    pub fn position(&self) -> Result<Option<Position>, DecodeError> {
        let broken = |reason: &str| DecodeError {
            name: self.name.clone(),
            reason: reason.to_owned(),
        };
        if self.name == STREAM_RECOVERED_V1 {
            return Ok(None);
        }
        let first = self.args.first().map(String::as_str);
        let field = |k: &str| first.and_then(|a| json::get(a, k));
        let stream = field("stream").and_then(json::string);
        let epoch = field("epoch").and_then(json::string);
        let seq = field("seq").and_then(json::u64);
        match (stream, epoch, seq) {
            (Some(stream), Some(epoch), Some(seq)) => Ok(Some(Position { stream, epoch, seq })),
            _ if self.is_enveloped_contract() => {
                if first.is_none() {
                    Err(broken("missing argument"))
                } else {
                    Err(broken(
                        "the envelope needs stream and epoch (strings) and seq (an integer)",
                    ))
                }
            }
            _ => Ok(None),
        }
    }

    /// The notice of a `stream:recovered:v1` event.
    pub fn recovered(&self) -> Option<Result<StreamRecovered, DecodeError>> {
        if self.name != STREAM_RECOVERED_V1 {
            return None;
        }
        let first = self.args.first().map(String::as_str);
        let field = |k: &str| first.and_then(|a| json::get(a, k));
        Some(
            match (
                field("stream").and_then(json::string),
                field("recovered").and_then(json::bool),
                field("epoch").and_then(json::string),
                field("seq").and_then(json::u64),
            ) {
                (Some(stream), Some(recovered), Some(epoch), Some(seq)) => Ok(StreamRecovered {
                    stream,
                    recovered,
                    epoch,
                    seq,
                }),
                _ => Err(DecodeError {
                    name: self.name.clone(),
                    reason: "needs stream, recovered, epoch and seq".to_owned(),
                }),
            },
        )
    }

    /// What an app's listener gets, as JSON text: the first argument (the
    /// envelope) for a contract, every argument as an array for an unknown
    /// event with several.
    pub fn payload_json(&self) -> String {
        match self.args.as_slice() {
            [] => "null".to_owned(),
            [one] => one.clone(),
            [first, ..] if self.is_enveloped_contract() || self.name == STREAM_RECOVERED_V1 => {
                first.clone()
            }
            many => format!("[{}]", many.join(",")),
        }
    }

    /// Decodes into the typed contract (binary placeholders become arrays of
    /// byte values).
    pub fn decode(&self) -> Result<ServerEvent, DecodeError> {
        let args = self
            .args
            .iter()
            .map(|a| {
                serde_json::from_str::<Value>(a)
                    .map(|v| fill_placeholders(v, &self.attachments))
                    .map_err(|e| DecodeError {
                        name: self.name.clone(),
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        decode_event(&self.name, args)
    }
}

/// Replaces `{"_placeholder":true,"num":N}` with the bytes of attachment N,
/// as an array of numbers.
fn fill_placeholders(v: Value, attachments: &[Vec<u8>]) -> Value {
    match v {
        Value::Object(map) => {
            if map.get("_placeholder") == Some(&Value::Bool(true)) {
                if let Some(bytes) = map
                    .get("num")
                    .and_then(Value::as_u64)
                    .and_then(|n| attachments.get(usize::try_from(n).ok()?))
                {
                    return Value::Array(bytes.iter().map(|b| Value::from(*b)).collect());
                }
                return Value::Object(map);
            }
            Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k, fill_placeholders(v, attachments)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| fill_placeholders(v, attachments))
                .collect(),
        ),
        other => other,
    }
}

/// A known event whose payload does not match its contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {name} does not match its contract: {reason}")]
pub struct DecodeError {
    /// The event name.
    pub name: String,
    /// What did not match.
    pub reason: String,
}

/// Decodes a Socket.IO EVENT (name and arguments) into a typed event.
///
/// Unknown names are not an error: they become [`ServerEvent::Unsupported`].
/// A known name whose payload breaks its contract is a [`DecodeError`].
pub fn decode_event(name: &str, mut args: Vec<Value>) -> Result<ServerEvent, DecodeError> {
    fn one<T: serde::de::DeserializeOwned>(
        name: &str,
        args: &mut Vec<Value>,
    ) -> Result<T, DecodeError> {
        // A server with connection-state recovery appends an offset argument;
        // the contract is always the first one.
        if args.is_empty() {
            return Err(DecodeError {
                name: name.to_owned(),
                reason: "missing argument".to_owned(),
            });
        }
        serde_json::from_value(args.swap_remove(0)).map_err(|e| DecodeError {
            name: name.to_owned(),
            reason: e.to_string(),
        })
    }
    Ok(match name {
        JOB_STATUS_V1 => ServerEvent::JobStatus(one(name, &mut args)?),
        JOB_CHUNK_V1 => ServerEvent::JobChunk(one(name, &mut args)?),
        JOB_RESULT_V1 => ServerEvent::JobResult(one(name, &mut args)?),
        JOB_ERROR_V1 => ServerEvent::JobError(one(name, &mut args)?),
        TRADE_ORDER_V1 => ServerEvent::TradeOrder(one(name, &mut args)?),
        MARKET_TICK_V1 => ServerEvent::MarketTick(one(name, &mut args)?),
        STREAM_RECOVERED_V1 => ServerEvent::StreamRecovered(one(name, &mut args)?),
        _ => ServerEvent::Unsupported {
            name: name.to_owned(),
            args,
        },
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn job_status_decodes_into_its_contract() {
        let arg = json!({"stream":"job:1","epoch":"e1","seq":3,"ts":10,
            "data":{"jobId":"1","status":"running","progress":0.5,"message":"searching"}});
        let ev = decode_event(JOB_STATUS_V1, vec![arg]).expect("decodes");
        let ServerEvent::JobStatus(env) = &ev else {
            panic!("wrong variant: {ev:?}")
        };
        assert_eq!(env.data.status, JobState::Running);
        assert_eq!(ev.position(), Some(("job:1", "e1", 3)));
    }

    #[test]
    fn unknown_version_is_unsupported_not_an_error() {
        let ev = decode_event("job:status:v9", vec![json!(1)]).expect("decodes");
        assert!(matches!(ev, ServerEvent::Unsupported { ref name, .. } if name == "job:status:v9"));
    }

    #[test]
    fn broken_payload_of_known_event_is_a_decode_error() {
        let err = decode_event(JOB_STATUS_V1, vec![json!({"seq":"x"})]).expect_err("fails");
        assert_eq!(err.name, JOB_STATUS_V1);
        assert!(decode_event(JOB_CHUNK_V1, vec![]).is_err());
    }

    #[test]
    fn trailing_recovery_offset_argument_is_ignored() {
        let arg = json!({"symbol":"BTC-USD","price":1.5});
        let env = json!({"stream":"market:BTC-USD","epoch":"e","seq":1,"ts":0,"data":arg});
        let ev = decode_event(MARKET_TICK_V1, vec![env, json!("offset-1")]).expect("decodes");
        assert!(matches!(ev, ServerEvent::MarketTick(_)));
    }

    #[test]
    fn state_names_are_the_names_of_the_connection_states() {
        use crate::client::ConnectionState as S;
        let all = [
            S::Idle,
            S::Connecting,
            S::Connected,
            S::Reconnecting {
                attempt: 1,
                retry_in_ms: 0,
                last_error: String::new(),
            },
            S::Offline,
            S::Suspended { retry_in_ms: 0 },
            S::Closed,
            S::Failed {
                reason: String::new(),
            },
        ];
        // Exhaustive on purpose: a new state does not compile until it is
        // numbered here, and the count below fails until it is in `all`.
        let number = |s: &S| match s {
            S::Idle => 0,
            S::Connecting => 1,
            S::Connected => 2,
            S::Reconnecting { .. } => 3,
            S::Offline => 4,
            S::Suspended { .. } => 5,
            S::Closed => 6,
            S::Failed { .. } => 7,
        };
        let numbers: std::collections::BTreeSet<_> = all.iter().map(number).collect();
        assert_eq!(numbers.len(), all.len(), "every state once");
        assert_eq!(
            numbers.last(),
            Some(&(all.len() - 1)),
            "every state numbered"
        );
        let names: Vec<&str> = all.iter().map(S::name).collect();
        assert_eq!(names, STATE_NAMES);
    }

    #[test]
    fn error_codes_are_unique_snake_case_and_documented() {
        let unique: std::collections::BTreeSet<_> = ERROR_CODES.iter().collect();
        assert_eq!(unique.len(), ERROR_CODES.len());
        for code in ERROR_CODES {
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code}"
            );
        }
        assert_eq!(error_code::RATE_LIMITED, "rate_limited");
    }

    #[test]
    fn ack_reply_round_trips_both_shapes() {
        let ok = AckReply::ok(json!({"jobId":"7"}));
        let s = serde_json::to_string(&ok).expect("ser");
        assert_eq!(s, r#"{"ok":true,"data":{"jobId":"7"}}"#);
        assert_eq!(serde_json::from_str::<AckReply>(&s).expect("de"), ok);
        let err = AckReply::err("invalid_payload", "kind is required");
        let s = serde_json::to_string(&err).expect("ser");
        assert_eq!(serde_json::from_str::<AckReply>(&s).expect("de"), err);
    }
}
