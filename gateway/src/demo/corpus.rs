//! The demo's built-in corpus: a few short sources about realtime systems
//! that the `research` and `llm` demo jobs answer from. No network and no
//! model: the answer to a question is made of the sentences of the sources
//! that share the most words with it, so it depends on the question and is
//! the same every time it is asked.

/// One source: a title and a few sentences.
#[derive(Debug)]
pub struct Source {
    /// Shown as the source arrives.
    pub title: &'static str,
    /// Sentences, each ending with a full stop.
    pub text: &'static str,
}

/// The corpus.
pub const SOURCES: &[Source] = &[
    Source {
        title: "Polling versus push",
        text: "Polling asks the server again and again whether anything changed. Most of those requests come back empty and still cost a round trip. Push sends an event the moment something changes, so the page updates in milliseconds and the server does no idle work.",
    },
    Source {
        title: "WebSockets in practice",
        text: "A WebSocket keeps one connection open in both directions. Proxies and load balancers must allow the upgrade and keep idle connections alive. Heartbeats tell both sides when a link died quietly.",
    },
    Source {
        title: "Resuming a stream after a reconnect",
        text: "A client that remembers the last sequence number it saw can ask for everything after it. The server replays the missed events from its history and then continues live. When the history no longer reaches back, the client reloads a snapshot instead of showing a silent gap.",
    },
    Source {
        title: "Exactly-once actions",
        text: "Networks retry, and a retried request must not be applied twice. An idempotency key sent with every action lets the server apply it once and answer every repeat with the first result. An outbox keeps actions across reloads until they are acknowledged.",
    },
    Source {
        title: "Streaming model answers",
        text: "Language models produce an answer token by token. Streaming those tokens as they come lets a reader start at once instead of waiting for the whole answer. A reload in the middle must show the answer so far and then the rest, with nothing repeated.",
    },
    Source {
        title: "Backoff with jitter",
        text: "After an outage every client tries to reconnect at the same moment. Exponential backoff with full jitter spreads those attempts over a window. The first retry stays fast, so a short blip is barely noticed.",
    },
    Source {
        title: "Redis as an event log",
        text: "Redis streams keep an ordered history per key with a cap on length. A publish can append to the history and notify subscribers in one atomic step. Sharded pub/sub sends each message only to the node that owns the channel.",
    },
    Source {
        title: "Offline-first interfaces",
        text: "A good interface keeps working when the network drops. It queues what the user did, shows that it is waiting, and sends it when the connection returns. Telling the user plainly what happened builds more trust than a spinner.",
    },
    Source {
        title: "Market data feeds",
        text: "Price feeds publish many small updates per second to many readers. A slow reader must never hold up the others, so each connection gets its own buffer and is cut off when it falls too far behind. The latest price matters more than every price in between.",
    },
    Source {
        title: "Measuring realtime latency",
        text: "Delivery latency is the time from publish to the moment the event reaches the socket. Percentiles tell more than averages: the slowest one percent is what users remember. A log scale shows both sub-millisecond and multi-second delays on one chart.",
    },
];

/// Lower-case words of three letters or more.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() >= 3)
        .map(str::to_lowercase)
        .collect()
}

/// The sources sharing the most words with `query`, best first: at least
/// three, at most five, ties in corpus order.
pub fn sources_for(query: &str) -> Vec<&'static Source> {
    let asked = words(query);
    let mut scored: Vec<(usize, usize)> = SOURCES
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let have = words(&format!("{} {}", s.title, s.text));
            let score = asked
                .iter()
                .filter(|w| {
                    have.iter()
                        .any(|h| h.starts_with(w.as_str()) || w.starts_with(h.as_str()))
                })
                .count();
            (score, i)
        })
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let hits = scored.iter().filter(|(score, _)| *score > 0).count();
    scored
        .into_iter()
        .take(hits.clamp(3, 5))
        .map(|(_, i)| &SOURCES[i])
        .collect()
}

/// An answer to `query` from `sources` (60 to 100 words): an opening that
/// names the question, two sentences of the best source, then one of each
/// other.
pub fn answer(query: &str, sources: &[&Source]) -> String {
    let topic = query.trim().trim_end_matches('?');
    let mut out = format!(
        "On \"{topic}\", {} sources from the built-in corpus agree.",
        sources.len()
    );
    for (i, s) in sources.iter().enumerate() {
        let take = if i == 0 { 2 } else { 1 };
        for sentence in s.text.split_inclusive(". ").take(take) {
            out.push(' ');
            out.push_str(sentence.trim());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_depends_on_the_question_and_is_the_same_every_time() {
        let polling = sources_for("why does push beat polling?");
        assert_eq!(polling[0].title, "Polling versus push");
        let market = sources_for("how do market price feeds handle slow readers");
        assert_eq!(market[0].title, "Market data feeds");
        assert_ne!(
            answer("why does push beat polling?", &polling),
            answer("market feeds", &market)
        );
        assert_eq!(
            answer("why does push beat polling?", &polling),
            answer(
                "why does push beat polling?",
                &sources_for("why does push beat polling?")
            )
        );
        // A question the corpus does not know still gets three sources.
        assert_eq!(sources_for("zzz qqq").len(), 3);
        assert!(
            sources_for("realtime events reconnect replay history redis stream websocket").len()
                <= 5
        );
    }
}
