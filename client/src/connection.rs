//! One HTTP/1.1 connection over the daemon's Unix socket, opened on first use and reopened
//! when the daemon closed it.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::Mutex;

use super::{ClientError, SecretString};

/// The socket, the token every request carries, and the open connection if any. Requests take
/// the lock for their whole exchange: HTTP/1.1 carries one at a time.
pub(super) struct Connection {
    socket: PathBuf,
    token: Option<SecretString>,
    sender: Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl Connection {
    pub(super) fn new(socket: PathBuf, token: Option<String>) -> Self {
        Connection {
            socket,
            token: token.map(SecretString::new),
            sender: Mutex::new(None),
        }
    }

    pub(super) fn socket(&self) -> &Path {
        &self.socket
    }

    pub(super) fn has_token(&self) -> bool {
        self.token.is_some()
    }

    pub(super) fn token(&self) -> Option<&str> {
        self.token.as_ref().map(SecretString::expose_secret)
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let connect_error = |source| ClientError::Connect {
            path: self.socket.clone(),
            source,
        };
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(connect_error)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| connect_error(std::io::Error::other(e)))?;
        // The connection task ends when the daemon closes the socket or the sender is dropped;
        // its error then surfaces on the next request through the sender, so it is dropped here.
        tokio::spawn(async move {
            let _ended = connection.await;
        });
        Ok(sender)
    }

    fn build(
        &self,
        method: &Method,
        path_and_query: &str,
        body: &Bytes,
        content_type: Option<&str>,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(path_and_query)
            .header(HOST, "localhost");
        if let Some(token) = &self.token {
            let header = zeroize::Zeroizing::new(format!("Bearer {}", token.expose_secret()));
            let mut value = HeaderValue::from_str(&header).map_err(|_| {
                ClientError::Protocol(
                    "the token contains characters not allowed in a header".into(),
                )
            })?;
            value.set_sensitive(true);
            builder = builder.header(AUTHORIZATION, value);
        }
        if let Some(content_type) = content_type {
            builder = builder.header(CONTENT_TYPE, content_type);
        }
        builder
            .body(Full::new(body.clone()))
            .map_err(|e| ClientError::Protocol(format!("invalid request {path_and_query}: {e}")))
    }

    /// Sends one request and reads the whole answer. Retries once on a fresh connection when a
    /// reused one turned out closed and the request is known not to have been processed (hyper
    /// gave it back unsent) or is idempotent. The request body is wiped afterwards, as it may
    /// carry a secret (a plaintext to wrap, imported key material).
    pub(super) async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Bytes,
        content_type: Option<&str>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let answer = self
            .exchange(method, path_and_query, &body, content_type)
            .await;
        wipe(body);
        answer
    }

    async fn exchange(
        &self,
        method: Method,
        path_and_query: &str,
        body: &Bytes,
        content_type: Option<&str>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let mut slot = self.sender.lock().await;
        let idempotent = matches!(
            method,
            Method::GET | Method::PUT | Method::DELETE | Method::HEAD
        );
        loop {
            let reused = matches!(slot.as_ref(), Some(sender) if !sender.is_closed());
            if !reused {
                *slot = Some(self.connect().await?);
            }
            let sender = slot.as_mut().expect("the slot was filled just above");
            if sender.ready().await.is_err() {
                *slot = None;
                if reused {
                    continue;
                }
                return Err(ClientError::Io(std::io::Error::other(
                    "the daemon closed the connection",
                )));
            }
            let request = self.build(&method, path_and_query, body, content_type)?;
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let status = response.status();
                    let bytes = response
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| ClientError::Io(std::io::Error::other(e)))?
                        .to_bytes();
                    return Ok((status, bytes));
                }
                Err(error) => {
                    *slot = None;
                    let unsent = error.message().is_some();
                    let error = error.into_error();
                    if reused
                        && (unsent
                            || (idempotent
                                && (error.is_incomplete_message() || error.is_canceled())))
                    {
                        continue;
                    }
                    return Err(ClientError::Io(std::io::Error::other(error)));
                }
            }
        }
    }
}

/// Zeroizes a request body once hyper has let go of it (it drops its copy once the request is
/// written); a body still shared elsewhere, or a static one, is left alone.
fn wipe(body: Bytes) {
    if let Ok(mut bytes) = body.try_into_mut() {
        zeroize::Zeroize::zeroize(&mut bytes[..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Client;

    #[tokio::test]
    async fn connect_fails_clearly_without_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let client = Client::new(dir.path().join("none.sock"), None);
        let error = client.health().await.unwrap_err();
        assert!(matches!(error, ClientError::Connect { .. }), "{error:?}");
    }

    /// A stand-in daemon that answers health checks, checks the headers every request must
    /// carry, and closes each connection after one answer unless `keep_alive`.
    async fn fake_daemon(keep_alive: bool) -> (tempfile::TempDir, PathBuf) {
        use hyper::service::service_fn;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fake.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let headers = req.headers();
                    let ok = headers.get(HOST).is_some_and(|h| h == "localhost")
                        && headers
                            .get(AUTHORIZATION)
                            .is_some_and(|h| h == "Bearer t0k");
                    let (status, body) = if ok {
                        (200, r#"{"status":"ok","version":"test"}"#)
                    } else {
                        (
                            401,
                            r#"{"error":{"code":"unauthenticated","message":"no token"}}"#,
                        )
                    };
                    hyper::Response::builder()
                        .status(status)
                        .body(Full::new(Bytes::from_static(body.as_bytes())))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .keep_alive(keep_alive)
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        (dir, path)
    }

    #[tokio::test]
    async fn reconnects_when_the_daemon_closed_the_connection() {
        for keep_alive in [false, true] {
            let (_dir, path) = fake_daemon(keep_alive).await;
            let client = Client::new(&path, Some("t0k".into()));
            for _ in 0..3 {
                assert_eq!(client.health().await.unwrap().status, "ok");
            }
            let error = client.with_token(None).health().await.unwrap_err();
            assert_eq!(error.code(), Some("unauthenticated"));
            let (status, body) = client
                .request(Method::GET, "/v1/health", None)
                .await
                .unwrap();
            assert_eq!((status, &body[..12]), (200, &br#"{"status":"o"#[..]));
        }
    }
}
