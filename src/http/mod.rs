//! The HTTP adapter: a hyper HTTP/1 server (1.0 and 1.1, as lpxelinux and iPXE
//! speak) around an axum router. It only translates requests into core calls
//! ([`boot`]) and files under the asset roots ([`files`]); nothing here decides
//! what a machine boots.

pub mod admin;
mod boot;
mod callback;
mod files;
mod installer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::config::Shared;

/// Open connections beyond this wait in the kernel's accept queue: a boot storm
/// of a few hundred machines fits, a flood cannot exhaust file descriptors.
pub const MAX_CONNECTIONS: usize = 4096;
/// A client must send its request head within this time, counted from the
/// first byte it is awaited (slowloris guard). hyper also applies it to an
/// idle keep-alive connection waiting for its next request, so an idle
/// connection is closed after this too.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head hyper buffers (its default is ~400 KB, times
/// 4,096 connections); a longer head gets 431. iPXE's requests are well under
/// 1 KB, long SMBIOS identities included.
const MAX_HEAD_BYTES: usize = 32 * 1024;
/// A longer request target gets 414 (hyper's own limit is 64 KB).
const MAX_URI_BYTES: usize = 16 * 1024;

/// Addresses of the connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

pub fn router(config: Shared) -> Router {
    Router::new()
        .route("/boot.ipxe", get(boot::bootstrap))
        .route("/ipxe", get(boot::ipxe))
        .route("/pxelinux/pxelinux.cfg/{name}", get(boot::pxelinux_config))
        .route("/config/{mac}/{rule}/{name}", get(installer::config))
        .route(
            "/callback/{mac}/{token}",
            get(callback::callback).post(callback::callback),
        )
        .route("/pxelinux/{*path}", get(files::asset))
        .route("/assets/{*path}", get(files::asset))
        .fallback(files::not_found)
        .with_state(config)
}

/// Connections the kernel completes and queues before pxed accepts them.
/// `TcpListener::bind` (mio) uses 128: a rack connecting at once overflowed it,
/// and every dropped handshake cost its client a 1 s SYN retransmission
/// (2,000 sequential connects took 7 s; with this, 0.1 s). The kernel caps it at
/// `net.core.somaxconn` (4096 by default).
const ACCEPT_BACKLOG: u32 = 4096;

/// Binds an HTTP listener with a backlog sized for boot storms.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    crate::listen::dual_stack(socket2::SockRef::from(&socket), addr)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// 414 with a one-line reason; the connection stays usable.
fn uri_too_long() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::URI_TOO_LONG,
        format!("request target longer than {MAX_URI_BYTES} bytes\n"),
    )
        .into_response()
}

/// Serves `app` on `listener` until the task is dropped. `name` labels its
/// open connections on /metrics (`pxed_in_progress{protocol="http"}`).
pub async fn serve(listener: TcpListener, app: Router, name: &'static str) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "http accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        // On a dual-stack `[::]` listener IPv4 clients arrive IPv4-mapped.
        let (local, peer) = (
            crate::listen::canonical(local),
            crate::listen::canonical(peer),
        );
        let conn = Conn { local, peer };
        let app = app.clone();
        crate::metrics::get().http_connections(name, 1);
        tokio::spawn(async move {
            connection(stream, conn, app).await;
            crate::metrics::get().http_connections(name, -1);
            drop(permit);
        });
    }
}

/// Serves the requests of one accepted connection (any byte stream: the fuzz
/// target feeds it from memory) until the client closes it or stalls.
pub async fn connection<I>(io: I, conn: Conn, app: Router)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(conn);
            let too_long = req
                .uri()
                .path_and_query()
                .is_some_and(|p| p.as_str().len() > MAX_URI_BYTES);
            let app = app.clone();
            async move {
                if too_long {
                    return Ok(uri_too_long());
                }
                app.oneshot(req).await
            }
        });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_header_size(MAX_HEAD_BYTES)
        // A client may shut down its sending side once the request is out
        // (`nc -N`, scripts, the fuzz target); without this hyper dropped
        // the connection at that EOF and the request got no response.
        .half_close(true)
        .serve_connection(TokioIo::new(io), service)
        .await;
    if let Err(e) = result {
        tracing::debug!(peer = %conn.peer, error = %e, "http connection ended with an error");
    }
}
