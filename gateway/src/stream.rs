//! Streams: the gateway's one domain type.
//!
//! Every event lives on a stream, and a stream is one of:
//! - a **job's** stream, `job:{id}`: its record says who owns it;
//! - a **topic**, any name under a configured topic prefix (for example
//!   `prices:` or `room:`): public topics are readable by every user, the
//!   others by users whose token lists them (claim `topics`);
//! - a **user's private stream**: any other name, published for one user and
//!   kept apart per user (two users' `notes` are two streams).
//!
//! A name is parsed once, at the edge ([`Stream::for_reader`] for a client,
//! [`Stream::for_publisher`] for a worker); everything downstream takes the
//! [`Stream`]. Who may read what is decided in one place, [`may_read`].

use crate::auth::Claims;
use crate::broker::{Broker, BrokerError};

/// Longest stream name, in bytes.
pub const MAX_STREAM_LEN: usize = 256;

/// A parsed stream reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Stream {
    /// `job:{id}`.
    Job {
        /// The job id.
        id: String,
    },
    /// A topic: a name under a configured topic prefix.
    Topic {
        /// The full name, e.g. `prices:EUR`.
        name: String,
    },
    /// One user's private stream.
    Private {
        /// The owner.
        user: String,
        /// The name the owner's clients see, e.g. `notes`.
        name: String,
    },
}

/// Why a stream name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// Empty, too long, or with whitespace, control characters or braces.
    #[error(
        "stream must be 1 to {MAX_STREAM_LEN} bytes without whitespace, control characters or braces"
    )]
    Malformed,
    /// `job:` with nothing after it.
    #[error("a job stream needs an id after job:")]
    NoId,
    /// A private stream published without its user.
    #[error(
        "user is required: {0:?} is not under a topic prefix, so it is a user's private stream"
    )]
    NeedsUser(String),
    /// A user named for a topic.
    #[error("{0:?} is a topic: leave user out")]
    TopicHasNoUser(String),
}

/// Which names are topics, and which topics everyone may read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicRules {
    prefixes: Vec<String>,
    public: Vec<String>,
}

impl TopicRules {
    /// Topics are the names under `prefixes` or `public`; those under
    /// `public` are readable by every user.
    pub fn new(prefixes: &[String], public: &[String]) -> Self {
        let mut all: Vec<String> = prefixes.iter().chain(public).cloned().collect();
        all.sort();
        all.dedup();
        Self {
            prefixes: all,
            public: public.to_vec(),
        }
    }

    /// Whether `name` is a topic.
    pub fn is_topic(&self, name: &str) -> bool {
        self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }

    /// Whether every user may read topic `name`.
    pub fn is_public(&self, name: &str) -> bool {
        self.public.iter().any(|p| name.starts_with(p.as_str()))
    }
}

fn well_formed(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_STREAM_LEN
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '{' || c == '}')
}

/// The job stream `name` names, if it is one.
fn job(name: &str) -> Option<Result<Stream, StreamError>> {
    let id = name.strip_prefix("job:")?;
    Some(if id.is_empty() {
        Err(StreamError::NoId)
    } else {
        Ok(Stream::Job { id: id.to_owned() })
    })
}

impl Stream {
    /// The stream `name` as `reader`'s client names it: a job, a topic, or
    /// else `reader`'s own private stream.
    pub fn for_reader(name: &str, reader: &str, rules: &TopicRules) -> Result<Self, StreamError> {
        if !well_formed(name) {
            return Err(StreamError::Malformed);
        }
        if let Some(stream) = job(name) {
            return stream;
        }
        if rules.is_topic(name) {
            return Ok(Self::Topic {
                name: name.to_owned(),
            });
        }
        Ok(Self::Private {
            user: reader.to_owned(),
            name: name.to_owned(),
        })
    }

    /// The stream `name` as a publisher names it, with `user` the owner it
    /// names (`None` for a topic; for a job, when given, it must be the
    /// job's owner, which the publisher checks).
    pub fn for_publisher(
        name: &str,
        user: Option<&str>,
        rules: &TopicRules,
    ) -> Result<Self, StreamError> {
        if !well_formed(name) {
            return Err(StreamError::Malformed);
        }
        if let Some(stream) = job(name) {
            return stream;
        }
        match (rules.is_topic(name), user) {
            (true, None) => Ok(Self::Topic {
                name: name.to_owned(),
            }),
            (true, Some(_)) => Err(StreamError::TopicHasNoUser(name.to_owned())),
            (false, Some(user)) if !user.is_empty() => Ok(Self::Private {
                user: user.to_owned(),
                name: name.to_owned(),
            }),
            (false, _) => Err(StreamError::NeedsUser(name.to_owned())),
        }
    }

    /// The name clients see in envelopes: `job:{id}`, the topic, the
    /// private stream's name.
    pub fn name(&self) -> String {
        match self {
            Self::Job { id } => format!("job:{id}"),
            Self::Topic { name } | Self::Private { name, .. } => name.clone(),
        }
    }

    /// The storage tag: unique per stream, and the Redis Cluster hash tag of
    /// its keys (`{tag}`): `job:{id}`, `topic:{name}`, or
    /// `u:{len(user)}:{user}:{name}` (length-prefixed, so no two users'
    /// streams share a tag).
    pub fn tag(&self) -> String {
        match self {
            Self::Job { .. } => self.name(),
            Self::Topic { name } => format!("topic:{name}"),
            Self::Private { user, name } => format!("u:{}:{user}:{name}", user.len()),
        }
    }

    /// Whether this is a topic.
    pub fn is_topic(&self) -> bool {
        matches!(self, Self::Topic { .. })
    }
}

/// Whether the holder of `claims` may read `stream`: their own jobs and
/// private streams, public topics, and the topics their token lists.
/// The one place access is decided.
pub async fn may_read(
    stream: &Stream,
    claims: &Claims,
    rules: &TopicRules,
    broker: &dyn Broker,
) -> Result<bool, BrokerError> {
    Ok(match stream {
        Stream::Job { id } => broker.job(id).await?.is_some_and(|j| j.owner == claims.sub),
        Stream::Private { user, .. } => *user == claims.sub,
        Stream::Topic { name } => rules.is_public(name) || claims.may_read_topic(name),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rules() -> TopicRules {
        TopicRules::new(&["room:".to_owned()], &["prices:".to_owned()])
    }

    #[test]
    fn a_name_is_a_job_a_topic_or_the_readers_own() {
        let r = rules();
        assert_eq!(
            Stream::for_reader("job:7", "alice", &r),
            Ok(Stream::Job { id: "7".into() })
        );
        assert_eq!(
            Stream::for_reader("prices:EUR", "alice", &r).unwrap(),
            Stream::Topic {
                name: "prices:EUR".into()
            }
        );
        assert!(
            Stream::for_reader("room:1", "alice", &r)
                .unwrap()
                .is_topic()
        );
        assert_eq!(
            Stream::for_reader("notes", "alice", &r).unwrap(),
            Stream::Private {
                user: "alice".into(),
                name: "notes".into()
            }
        );
        for bad in ["", "a b", "a{b}", "x\n", &"s".repeat(MAX_STREAM_LEN + 1)] {
            assert_eq!(
                Stream::for_reader(bad, "alice", &r),
                Err(StreamError::Malformed)
            );
        }
        assert_eq!(
            Stream::for_reader("job:", "alice", &r),
            Err(StreamError::NoId)
        );
    }

    #[test]
    fn publishers_name_the_owner_of_private_streams_and_nobody_for_topics() {
        let r = rules();
        assert_eq!(
            Stream::for_publisher("notes", None, &r),
            Err(StreamError::NeedsUser("notes".into()))
        );
        assert_eq!(
            Stream::for_publisher("notes", Some(""), &r),
            Err(StreamError::NeedsUser("notes".into()))
        );
        assert_eq!(
            Stream::for_publisher("prices:X", Some("alice"), &r),
            Err(StreamError::TopicHasNoUser("prices:X".into()))
        );
        assert!(
            Stream::for_publisher("prices:X", None, &r)
                .unwrap()
                .is_topic()
        );
        assert_eq!(
            Stream::for_publisher("job:1", Some("alice"), &r),
            Ok(Stream::Job { id: "1".into() })
        );
    }

    #[test]
    fn tags_keep_users_and_kinds_apart() {
        let r = rules();
        let a = Stream::for_reader("x:y", "a:b", &r).unwrap();
        let b = Stream::for_reader("y", "a:b:x", &r).unwrap();
        assert_ne!(a.tag(), b.tag());
        assert_eq!(a.name(), "x:y");
        let topic = Stream::for_reader("prices:X", "a", &r).unwrap();
        assert_eq!(topic.tag(), "topic:prices:X");
        assert_eq!(Stream::Job { id: "1".into() }.tag(), "job:1");
    }
}
