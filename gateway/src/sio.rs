//! The socketioxide front: serves the namespace `/` of [`crate::socket`]
//! over socketioxide's Engine.IO (WebSocket, and long-polling with upgrade).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use serde_json::value::RawValue;
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::Sid;
use socketioxide::{SendError, SocketError, SocketIo};

use crate::AppState;
use crate::conn::{Conn, EmitError, Session, Transport};
use crate::socket::{self, Refused};

/// A socketioxide socket as a [`Transport`].
struct SioSocket(SocketRef);

impl Transport for SioSocket {
    fn id(&self) -> Sid {
        self.0.id
    }

    fn emit(&self, event: &str, data: &str) -> Result<(), EmitError> {
        // socketioxide takes what serializes: the text checked once more
        // (long-polling only; WebSocket opens are the lean front's).
        let data = RawValue::from_string(data.to_owned()).map_err(|_| EmitError::Closed)?;
        self.0.emit(event, &data).map_err(emit_error)
    }

    fn connected(&self) -> bool {
        self.0.connected()
    }

    fn disconnect(&self) -> Result<(), EmitError> {
        self.0.clone().disconnect().map_err(|e| match e {
            SocketError::InternalChannelFull => EmitError::Full,
            SocketError::Closed => EmitError::Closed,
        })
    }
}

/// An emit's or an ack's failure as the gateway tells them apart.
fn emit_error(e: SendError) -> EmitError {
    match e {
        SendError::Socket(SocketError::InternalChannelFull) => EmitError::Full,
        _ => EmitError::Closed,
    }
}

/// The connection of socketioxide socket `s` (its session is in the
/// socket's extensions once admitted).
fn conn_of(s: &SocketRef) -> Option<Conn> {
    let session = s.extensions.get::<Arc<Session>>()?;
    Some(Conn::new(Arc::new(SioSocket(s.clone())), session))
}

/// Registers the namespace `/` on `io`.
pub fn register(io: &SocketIo, state: Arc<AppState>) {
    let mw_state = state.clone();
    let middleware = move |s: SocketRef, TryData(auth): TryData<Value>| {
        let state = mw_state.clone();
        async move { admit(&state, s, auth.ok()).await }
    };
    let handler = move |s: SocketRef| {
        let state = state.clone();
        async move {
            if let Some(conn) = conn_of(&s) {
                socket::on_connect(&state, &conn).await;
            }
        }
    };
    io.ns("/", handler.with(middleware));
}

async fn admit(state: &Arc<AppState>, s: SocketRef, auth: Option<Value>) -> Result<(), Refused> {
    let session = Arc::new(Session::welcoming());
    let conn = Conn::new(Arc::new(SioSocket(s.clone())), session.clone());
    socket::admit(state, &conn, auth).await?;
    socket::arm_expiry(state, &conn);
    // Authenticated: this connection no longer counts against the cap of
    // unauthenticated ones (see `edge::Pending`).
    if let Some(admission) = s
        .req_parts()
        .extensions
        .get::<Arc<crate::edge::Admission>>()
    {
        admission.release();
    }
    s.extensions.insert(session);
    let st = state.clone();
    s.on_fallback(
        move |s: SocketRef, Event(name): Event, TryData(data): TryData<Value>, ack: AckSender| {
            let state = st.clone();
            async move {
                let Some(conn) = conn_of(&s) else {
                    return;
                };
                let ack: crate::conn::Ack =
                    Box::new(move |reply: &RawValue| ack.send(reply).map_err(emit_error));
                socket::on_event(&state, &conn, name, data.ok(), Some(ack)).await;
            }
        },
    );
    let st = state.clone();
    s.on_disconnect(move |s: SocketRef| {
        let state = st.clone();
        async move {
            if let Some(conn) = conn_of(&s) {
                socket::on_disconnect(&state, &conn).await;
            }
        }
    });
    // If the CONNECT reply cannot be sent, socketioxide never calls the
    // disconnect handler: release the socket here instead (release is
    // idempotent per socket id).
    let st = state.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if !conn.connected() {
            socket::on_disconnect(&st, &conn).await;
        }
    });
    Ok(())
}
