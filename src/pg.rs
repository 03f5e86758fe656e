//! What the agent and the archive share about talking to Postgres (below both, so neither
//! depends on the other).

/// The server's own message when there is one, else the client error and its cause.
pub fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}
