//! JSON over HTTP/1 to a pod's status port, for the operator (agents' reports) and the agents
//! themselves (members vouching for their primary): one request per connection, bounded in
//! time, and any failure is simply no answer.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use crate::plan::instance::STATUS_PORT;

/// `GET path` on a pod's status port, as JSON; None when it does not answer within `within`.
pub async fn get_json<T: DeserializeOwned>(host: &str, path: &str, within: Duration) -> Option<T> {
    request(host, hyper::Method::GET, path, Bytes::new(), within).await
}

/// `POST path` with `body` as JSON; the answer as JSON, None when there is none in time.
pub async fn post_json<B: Serialize, T: DeserializeOwned>(
    host: &str,
    path: &str,
    body: &B,
    within: Duration,
) -> Option<T> {
    let body = Bytes::from(serde_json::to_vec(body).ok()?);
    request(host, hyper::Method::POST, path, body, within).await
}

async fn request<T: DeserializeOwned>(
    host: &str,
    method: hyper::Method,
    path: &str,
    body: Bytes,
    within: Duration,
) -> Option<T> {
    let read = async {
        let address = format!("{host}:{STATUS_PORT}");
        let stream = TcpStream::connect(&address).await.ok()?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(connection);
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", address)
            .header("content-type", "application/json")
            .body(Full::new(body))
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body = response.into_body().collect().await.ok()?.to_bytes();
        serde_json::from_slice(&body).ok()
    };
    tokio::time::timeout(within, read).await.ok().flatten()
}
