//! Accept loop, per-connection tasks, peer credentials and graceful shutdown.

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::connection::{track_body, Activity, Pressure, TrackedStream, IDLE_GRACE};
use super::extract::{PeerCred, TokenMemo};
use super::{AppState, ServerError};
use crate::config::Config;

fn socket_error(path: &Path) -> impl FnOnce(std::io::Error) -> ServerError + '_ {
    move |source| ServerError::Socket {
        path: path.display().to_string(),
        source,
    }
}

/// Binds the socket: a live daemon's socket is never stolen; a stale one is replaced.
pub async fn bind(path: &Path, mode: u32) -> Result<UnixListener, ServerError> {
    // Another user able to write the directory could replace the socket with their own.
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let dir_mode = std::fs::metadata(&dir)
        .map_err(socket_error(&dir))?
        .permissions()
        .mode();
    if dir_mode & 0o002 != 0 {
        return Err(ServerError::Socket {
            path: path.display().to_string(),
            source: std::io::Error::other(format!(
                "directory {} is writable by others (mode {:o}); put the socket in a private directory",
                dir.display(),
                dir_mode & 0o7777
            )),
        });
    }
    // Only a socket nobody listens on may be replaced: a regular file, a directory or a
    // symlink at this path is someone's data (or a trap), never ours to delete.
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).await.is_ok() {
                return Err(ServerError::SocketInUse(path.display().to_string()));
            }
            tracing::warn!(path = %path.display(), "replacing a stale socket file");
            std::fs::remove_file(path).map_err(socket_error(path))?;
        }
        Ok(meta) => {
            return Err(ServerError::NotASocket {
                path: path.display().to_string(),
                kind: file_kind(&meta.file_type()),
            })
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(socket_error(path)(err)),
    }
    let listener = UnixListener::bind(path).map_err(socket_error(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(socket_error(path))?;
    Ok(listener)
}

fn file_kind(kind: &std::fs::FileType) -> &'static str {
    if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        "a regular file"
    }
}

/// Serves until a shutdown signal, then drains connections and removes the socket.
pub async fn serve(
    config: &Config,
    listener: UnixListener,
    app: Router,
    state: Arc<AppState>,
) -> Result<(), ServerError> {
    let path = config.socket.clone();
    let header_timeout = config.limits.request_timeout;
    tracing::info!(socket = %path.display(), "envault listening");
    // The socket is bound and every start-up step is done: tell systemd (Type=notify).
    if let Err(err) = crate::telemetry::notify::Notifier::from_env().ready("serving") {
        tracing::warn!(error = %err, "cannot notify the service manager");
    }
    accept_until_signal(
        listener,
        &path,
        config.limits.max_connections,
        move |accepted| serve_http(accepted, app.clone(), header_timeout),
    )
    .await?;
    state.jobs.shutdown().await;
    if let Err(err) = state.vault.flush().await {
        tracing::error!(error = %err, "final flush failed");
    }
    let _ = std::fs::remove_file(&path);
    tracing::info!("envault stopped");
    Ok(())
}

/// One accepted connection, handed by [`accept_until_signal`] to its protocol's task.
pub struct Accepted {
    /// The socket, noting reads in `activity` and lingering when dropped.
    pub stream: TrackedStream,
    /// Whether the connection is busy (idle connections give way under pressure).
    pub activity: Arc<Activity>,
    /// The peer's credentials (SO_PEERCRED).
    pub peer: Option<PeerCred>,
    /// Becomes true when the daemon shuts down: finish the request in flight, then close.
    pub shutdown: watch::Receiver<bool>,
    /// Changes when the connection limit is reached: close if idle.
    pub pressure: watch::Receiver<u64>,
}

/// The accept loop shared by every Unix-socket front end: a connection permit (of
/// `max_connections`) before `accept`, idle connections shed while none is free, one task per
/// connection, and on SIGINT/SIGTERM: stop accepting, tell every connection, wait for all.
pub async fn accept_until_signal<F, Fut>(
    listener: UnixListener,
    path: &Path,
    max_connections: usize,
    mut handle: F,
) -> Result<(), ServerError>
where
    F: FnMut(Accepted) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut signals = Signals::new().map_err(socket_error(path))?;
    let pressure = Pressure::new();
    loop {
        let permit = tokio::select! {
            permit = acquire_permit(&permits, &pressure) => match permit {
                Some(p) => p,
                None => break,
            },
            _ = signals.recv() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Transient (EMFILE, ECONNABORTED): back off briefly and keep serving.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = signals.recv() => break,
        };
        let peer = stream.peer_cred().ok().map(|c| PeerCred {
            uid: c.uid(),
            gid: c.gid(),
            pid: c.pid(),
        });
        let activity = Activity::new();
        let task = handle(Accepted {
            stream: TrackedStream::new(stream, Arc::clone(&activity)),
            activity,
            peer,
            shutdown: shutdown_rx.clone(),
            pressure: pressure.subscribe(),
        });
        connections.spawn(async move {
            task.await;
            drop(permit);
        });
        // Reap finished connection tasks so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
    tracing::info!(socket = %path.display(), "shutting down: finishing in-flight requests");
    // Every front end's loop says so; the service manager takes the first and ignores repeats.
    if let Err(err) = crate::telemetry::notify::Notifier::from_env().stopping() {
        tracing::warn!(error = %err, "cannot notify the service manager");
    }
    drop(listener);
    let _ = shutdown_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Serves HTTP/1.1 on one connection until it closes, the daemon shuts down, or pressure
/// finds it idle.
async fn serve_http(accepted: Accepted, app: Router, header_timeout: std::time::Duration) {
    let Accepted {
        stream,
        activity,
        peer,
        mut shutdown,
        pressure: mut pressed,
    } = accepted;
    let service_activity = Arc::clone(&activity);
    let memo = Arc::new(TokenMemo::default());
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        if let Some(peer) = peer {
            request.extensions_mut().insert(peer);
        }
        request.extensions_mut().insert(Arc::clone(&memo));
        let in_flight = service_activity.begin_request();
        let answer = app.clone().oneshot(request);
        async move {
            let response = answer.await?;
            Ok::<_, std::convert::Infallible>(response.map(|body| track_body(body, in_flight)))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // A client may send its request and then shut its write side (`nc -N`, Go's
    // `CloseWrite`, some proxies): the EOF then only means no further request, so the
    // answer must still be written.
    builder
        .half_close(true)
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    loop {
        tokio::select! {
            _ = connection.as_mut() => break,
            _ = shutdown.changed() => {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
                break;
            }
            changed = pressed.changed() => {
                if changed.is_err() || activity.is_idle() {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                    break;
                }
            }
        }
    }
}

/// A connection permit; while none is free, asks idle connections to give theirs back
/// (see [`super::connection`]). `None` once the semaphore is closed.
async fn acquire_permit(
    permits: &Arc<Semaphore>,
    pressure: &Pressure,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    match Arc::clone(permits).try_acquire_owned() {
        Ok(permit) => return Some(permit),
        Err(tokio::sync::TryAcquireError::Closed) => return None,
        Err(tokio::sync::TryAcquireError::NoPermits) => {}
    }
    let acquire = Arc::clone(permits).acquire_owned();
    tokio::pin!(acquire);
    let mut retry = tokio::time::interval(IDLE_GRACE);
    loop {
        tokio::select! {
            permit = acquire.as_mut() => return permit.ok(),
            _ = retry.tick() => pressure.raise(),
        }
    }
}

/// SIGINT and SIGTERM as one stream.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
