//! A user's events reach only that user's sockets.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Backend, Gateway, is_completed, start_job};

async fn second_user_never_receives_first_users_events(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let mut alice = gw.connect("alice").await;
    let mut alice_tab2 = gw.connect("alice").await;
    let mut bob = gw.connect("bob").await;
    let id = start_job(&mut alice, "k-iso", "research").await;
    let first = alice.events_until(is_completed).await;
    let second = alice_tab2.events_until(is_completed).await;
    assert_eq!(
        first, second,
        "every socket of the owner gets the same events"
    );
    assert!(
        first
            .iter()
            .all(|(_, e)| e["stream"] == format!("job:{id}").as_str())
    );
    assert!(
        bob.maybe_event(Duration::from_millis(500)).await.is_none(),
        "bob got alice's event"
    );
    alice.close().await;
    alice_tab2.close().await;
    bob.close().await;
    gw.stop().await;
}

async fn user_subscription_is_released_when_last_socket_leaves(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let a1 = gw.connect("alice").await;
    let a2 = gw.connect("alice").await;
    let b = gw.connect("bob").await;
    assert_eq!(gw.handle.state.hub.subscribed_users().await, 2);
    let hub = &gw.handle.state.hub;
    a1.close().await;
    common::until_hub(hub, "the node counts alice's first socket out", || async {
        hub.sockets_of("alice").await == 1
    })
    .await;
    assert_eq!(hub.subscribed_users().await, 2, "alice still has a socket");
    a2.close().await;
    b.close().await;
    common::until_hub(hub, "the node unsubscribes both users", || async {
        hub.subscribed_users().await == 0
    })
    .await;
    gw.stop().await;
}

on_every_broker!(
    second_user_never_receives_first_users_events,
    user_subscription_is_released_when_last_socket_leaves,
);
