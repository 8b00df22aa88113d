//! Liveline SDK.
//!
//! A realtime client for apps that run long jobs. The core is sans-IO: it
//! takes input (frames, socket events, timers, app calls) with the current
//! time passed in, and yields output (frames to send, timers to set, state
//! changes, events for the app) to be pulled by a driver. The browser driver
//! (`wasm` module, wasm32 only) binds it to a `WebSocket` and JavaScript;
//! the native driver (`native` module, everywhere else) binds it to tokio.
//!
//! The contract types in [`contract`] are shared with the gateway, so the
//! client and the server can never disagree on a field.

pub mod backoff;
pub mod client;
pub mod contract;
pub mod json;
pub mod outbox;
pub mod protocol;
#[cfg(not(target_arch = "wasm32"))]
pub mod ts;
mod vec_map;

pub use client::{Client, Config, ConnectionState, Output, Refusal, StateChange};

#[cfg(not(target_arch = "wasm32"))]
pub mod native;
#[cfg(target_arch = "wasm32")]
pub mod wasm;
#[cfg(target_arch = "wasm32")]
mod wasm_alloc;
