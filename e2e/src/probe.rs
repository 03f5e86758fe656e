//! One try of a readiness, liveness or startup probe, as the kubelet makes it: exec inside
//! the container, an HTTP GET (200–399 is success) or a TCP connect, within `timeoutSeconds`.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::net::TcpStream;

use crate::images::Image;
use crate::process;

/// Where and as what a probe runs.
pub(crate) struct Target<'a> {
    pub pod_ip: IpAddr,
    pub container: &'a Container,
    pub image: &'a Image,
    pub pid: u32,
    pub env: &'a [(String, String)],
}

/// A named or numbered container port.
pub(crate) fn port(container: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n} is out of range")),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("container has no port named {name}")),
    }
}

/// Ok when the probe succeeds; the error says why it did not.
pub(crate) async fn run(probe: &Probe, target: &Target<'_>) -> Result<(), String> {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    match tokio::time::timeout(timeout, attempt(probe, target)).await {
        Ok(result) => result,
        Err(_) => Err(format!("timed out after {timeout:?}")),
    }
}

async fn attempt(probe: &Probe, target: &Target<'_>) -> Result<(), String> {
    if let Some(exec) = &probe.exec {
        let argv = target
            .image
            .argv(exec.command.as_deref().unwrap_or_default(), &[])?;
        let spec = process::Spec {
            argv: &argv,
            env: target.env,
            working_dir: Path::new("/"),
            mounts: &[],
            log: Path::new("/dev/null"),
        };
        let mut child = process::spawn_in(target.pid, &spec).map_err(|e| e.to_string())?;
        let status = child.wait().await.map_err(|e| e.to_string())?;
        return if status.success() {
            Ok(())
        } else {
            Err(format!("exec {argv:?}: {status}"))
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let host = host(tcp.host.as_deref(), target.pod_ip)?;
        let addr = SocketAddr::new(host, port(target.container, &tcp.port)?);
        return TcpStream::connect(addr)
            .await
            .map(drop)
            .map_err(|e| format!("dial tcp {addr}: {e}"));
    }
    if let Some(get) = &probe.http_get {
        if get.scheme.as_deref().is_some_and(|s| s != "HTTP") {
            return Err("only HTTP probes are supported".into());
        }
        let host = host(get.host.as_deref(), target.pod_ip)?;
        let addr = SocketAddr::new(host, port(target.container, &get.port)?);
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("dial tcp {addr}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let mut request = hyper::Request::get(get.path.as_deref().unwrap_or("/"))
            .header("host", addr.to_string())
            .header("user-agent", "kube-probe/1.33");
        for h in get.http_headers.iter().flatten() {
            request = request.header(h.name.as_str(), h.value.as_str());
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("GET {addr}: {e}"))?;
        let status = response.status().as_u16();
        return if (200..400).contains(&status) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {status}"))
        };
    }
    Err("probe has no handler (exec, httpGet, tcpSocket)".into())
}

fn host(given: Option<&str>, pod_ip: IpAddr) -> Result<IpAddr, String> {
    match given.filter(|h| !h.is_empty()) {
        None => Ok(pod_ip),
        Some(h) => h
            .parse()
            .map_err(|_| format!("probe host {h} must be an IP address (there is no DNS)")),
    }
}
