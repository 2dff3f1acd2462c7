//! Structured logs as JSON values handed to a sink: the library builds the events, the
//! binaries write them (one JSON object per line), so the library itself never prints.

use std::sync::{Arc, Mutex};

use serde_json::{Map, Value as Json, json};

/// Where log events go.
pub type Sink = Arc<dyn Fn(&Json) + Send + Sync>;

/// A cheap, clonable logger.
#[derive(Clone)]
pub struct Log {
    sink: Sink,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Log")
    }
}

impl Log {
    /// A logger writing to `sink`.
    pub fn new(sink: Sink) -> Log {
        Log { sink }
    }

    /// A logger that drops every event.
    pub fn discard() -> Log {
        Log::new(Arc::new(|_| {}))
    }

    /// A logger that keeps events in memory (for tests), and the events.
    pub fn memory() -> (Log, Arc<Mutex<Vec<Json>>>) {
        let events = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&events);
        let log = Log::new(Arc::new(move |e: &Json| {
            if let Ok(mut v) = keep.lock() {
                v.push(e.clone());
            }
        }));
        (log, events)
    }

    /// Logs `msg` at `level` with the fields of `fields` (an object; other values go under
    /// `data`).
    pub fn event(&self, level: &str, msg: &str, fields: Json) {
        let mut m = Map::new();
        m.insert("ts_ms".to_owned(), json!(super::now_ms()));
        m.insert("level".to_owned(), json!(level));
        m.insert("msg".to_owned(), json!(msg));
        match fields {
            Json::Object(f) => m.extend(f),
            Json::Null => {}
            other => {
                m.insert("data".to_owned(), other);
            }
        }
        (self.sink)(&Json::Object(m));
    }

    /// An `info` event.
    pub fn info(&self, msg: &str, fields: Json) {
        self.event("info", msg, fields);
    }

    /// A `warn` event.
    pub fn warn(&self, msg: &str, fields: Json) {
        self.event("warn", msg, fields);
    }

    /// An `error` event.
    pub fn error(&self, msg: &str, fields: Json) {
        self.event("error", msg, fields);
    }
}
