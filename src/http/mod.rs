//! The HTTP adapter: a hyper HTTP/1 server (1.0 and 1.1, as lpxelinux and iPXE
//! speak) around an axum router. It only translates requests into core calls
//! ([`boot`]) and files under the asset roots ([`files`]); nothing here decides
//! what a machine boots.

pub mod admin;
mod boot;
mod files;

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
const MAX_CONNECTIONS: usize = 4096;
/// A client must send its request head within this time (slowloris guard).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

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
        .route("/pxelinux/{*path}", get(files::asset))
        .route("/assets/{*path}", get(files::asset))
        .fallback(files::not_found)
        .with_state(config)
}

/// Serves `app` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, app: Router) {
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
        let conn = Conn { local, peer };
        let app = app.clone();
        tokio::spawn(async move {
            connection(stream, conn, app).await;
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
            app.clone().oneshot(req)
        });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
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
