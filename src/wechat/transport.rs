//! The risk calls' HTTP/1.1 keep-alive connections to the one risk endpoint.
//!
//! reqwest stays for the token endpoint and for proxies; the risk calls,
//! hundreds of thousands per run, go straight through hyper's connection
//! API. In a standalone comparison on the 2-core development machine,
//! 200,000 POSTs at 64 in flight against a minimal hyper server, reqwest
//! managed 38,000–60,000 requests/s at 16–26 µs of client CPU each (a pool
//! lookup, a redirect policy that parses the URL again, tower layers) and
//! hyper's connections 87,000–96,000 at 10–11 µs; in riskbatch against its
//! simulator the client's CPU per row fell from 67–74 µs to 53–56 µs. One
//! host needs no pool keyed by host, and an API answer is never a redirect.
//!
//! A connection serves one request at a time; idle ones wait in a stack so
//! the warmest is used first. A connection whose request failed or timed
//! out is dropped, never reused.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, pki_types::ServerName};

use crate::redact::{error_chain, redact};

/// Where the risk requests go, parsed once.
pub struct Transport {
    host: String,
    port: u16,
    /// The `Host` header.
    authority: HeaderValue,
    /// `Some` for https: the TLS set-up and the name the certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
    user_agent: HeaderValue,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

/// A finished HTTP exchange: status and the whole body.
#[derive(Debug)]
pub struct Exchange {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Transport {
    /// `base` is the endpoint's scheme, host and port (a path is ignored:
    /// each request names its own).
    pub fn new(base: &reqwest::Url, connect_timeout: Duration) -> Result<Transport> {
        let host = base
            .host_str()
            .with_context(|| format!("API URL {} has no host", redact(base.as_str())))?
            .to_string();
        let port = base
            .port_or_known_default()
            .with_context(|| format!("API URL {} has no port", redact(base.as_str())))?;
        let authority = match base.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        };
        let tls = match base.scheme() {
            "http" => None,
            "https" => Some(tls_connector(&host)?),
            other => bail!("API URL scheme {other:?} is not http or https"),
        };
        Ok(Transport {
            // `[::1]` is the URL form; connecting needs the bare address.
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            authority: HeaderValue::from_str(&authority)
                .with_context(|| format!("API host {authority:?} is not a valid header"))?,
            tls,
            connect_timeout,
            user_agent: HeaderValue::from_static(concat!("riskbatch/", env!("CARGO_PKG_VERSION"))),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// POSTs a JSON `body` to `path_and_query` and reads the whole answer.
    /// The caller bounds the time: dropping the future drops the connection.
    pub async fn post_json(&self, path_and_query: &str, body: Vec<u8>) -> Result<Exchange, String> {
        let mut sender = self.connection().await?;
        let mut request = Request::post(path_and_query)
            .header(HOST, self.authority.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, self.user_agent.clone())
            .body(Full::new(Bytes::from(body)))
            .map_err(|err| format!("building the request: {err}"))?;
        let mut fresh = false;
        let response = loop {
            match sender.try_send_request(request).await {
                Ok(response) => break response,
                // The server closed a kept-alive connection before the request
                // went out: nothing was sent, so try once on a new connection.
                Err(mut err) if !fresh && err.message().is_some() => {
                    request = err.take_message().expect("checked above");
                    sender = self.connect_within_timeout().await?;
                    fresh = true;
                }
                Err(err) => return Err(transport_message(err.error())),
            }
        };
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|err| transport_message(&err))?
            .to_bytes();
        // hyper closes the connection itself when the server asked to.
        if !sender.is_closed() {
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(sender);
        }
        Ok(Exchange {
            status: parts.status,
            body,
        })
    }

    /// An idle connection ready for a request, or a new one.
    async fn connection(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        loop {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some(mut sender) = idle else { break };
            // A connection the server closed while it was idle fails here,
            // before anything was sent on it.
            if sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
        self.connect_within_timeout().await
    }

    async fn connect_within_timeout(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        match tokio::time::timeout(self.connect_timeout, self.connect()).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "connection failed: no connection to {}:{} within {:?}",
                self.host, self.port, self.connect_timeout
            )),
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let failed = |err: &dyn std::fmt::Display| {
            format!("connection failed: {}:{}: {err}", self.host, self.port)
        };
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|err| failed(&err))?;
        tcp.set_nodelay(true).map_err(|err| failed(&err))?;
        let sender = match &self.tls {
            None => {
                let (sender, connection) = http1::handshake(TokioIo::new(tcp))
                    .await
                    .map_err(|err| failed(&err))?;
                tokio::spawn(connection);
                sender
            }
            Some((tls, name)) => {
                let stream = tls
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|err| failed(&format!("TLS: {err}")))?;
                let (sender, connection) = http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|err| failed(&err))?;
                tokio::spawn(connection);
                sender
            }
        };
        Ok(sender)
    }
}

/// TLS with the system's trust store, as reqwest does for the token endpoint.
fn tls_connector(host: &str) -> Result<(TlsConnector, ServerName<'static>)> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?
        .with_platform_verifier()
        .context("loading the system's trusted certificates")?
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
        .with_context(|| format!("{host:?} is not a host name TLS can check"))?
        .to_owned();
    Ok((TlsConnector::from(Arc::new(config)), name))
}

/// A hyper error as one line with its causes. hyper never puts the URL in
/// its errors, but a cause could quote the server; redacted all the same.
fn transport_message(err: &hyper::Error) -> String {
    let kind = if err.is_timeout() {
        "timeout"
    } else {
        "transport error"
    };
    error_chain(kind, err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A loopback server answering `answers` requests, one per connection
    /// when `close` is set; returns its base URL and the requests it saw.
    async fn server(
        answers: usize,
        close: bool,
    ) -> (reqwest::Url, tokio::task::JoinHandle<Vec<String>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url =
            reqwest::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let handle = tokio::spawn(async move {
            let mut seen = Vec::new();
            let (mut socket, _) = listener.accept().await.unwrap();
            while seen.len() < answers {
                let mut buf = vec![0u8; 4096];
                let mut got = 0;
                let request = loop {
                    let n = socket.read(&mut buf[got..]).await.unwrap();
                    if n == 0 {
                        // The client closed this connection: take the next.
                        socket = listener.accept().await.unwrap().0;
                        got = 0;
                        continue;
                    }
                    got += n;
                    let text = String::from_utf8_lossy(&buf[..got]).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .map(|v| v.trim().parse().unwrap())
                            .unwrap_or(0);
                        if body.len() >= length {
                            break text;
                        }
                    }
                };
                seen.push(request);
                let connection = if close { "close" } else { "keep-alive" };
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 13\r\nconnection: {connection}\r\n\r\n{{\"errcode\":0}}"
                );
                socket.write_all(reply.as_bytes()).await.unwrap();
                if close {
                    socket.shutdown().await.unwrap();
                    if seen.len() < answers {
                        socket = listener.accept().await.unwrap().0;
                    }
                }
            }
            seen
        });
        (url, handle)
    }

    #[test]
    fn posts_json_with_host_and_reuses_the_connection() {
        runtime().block_on(async {
            let (url, server) = server(3, false).await;
            let transport = Transport::new(&url, Duration::from_secs(5)).unwrap();
            for i in 0..3 {
                let exchange = transport
                    .post_json(
                        "/wxa/servicemarket?access_token=T",
                        format!("{{\"n\":{i}}}").into_bytes(),
                    )
                    .await
                    .unwrap();
                assert_eq!(exchange.status, StatusCode::OK);
                assert_eq!(&exchange.body[..], b"{\"errcode\":0}");
            }
            // All three on the one connection the server accepted.
            let seen = server.await.unwrap();
            assert_eq!(seen.len(), 3);
            let first = &seen[0];
            assert!(
                first.starts_with("POST /wxa/servicemarket?access_token=T HTTP/1.1\r\n"),
                "{first}"
            );
            let host = format!("host: {}:{}", url.host_str().unwrap(), url.port().unwrap());
            assert!(first.contains(&host), "{first}");
            assert!(first.contains("content-type: application/json"), "{first}");
            assert!(seen[2].ends_with("{\"n\":2}"), "{}", seen[2]);
        });
    }

    #[test]
    fn a_connection_the_server_closed_is_replaced() {
        runtime().block_on(async {
            let (url, server) = server(2, true).await;
            let transport = Transport::new(&url, Duration::from_secs(5)).unwrap();
            for _ in 0..2 {
                let exchange = transport
                    .post_json("/tcb/servicemarket?access_token=T", b"{}".to_vec())
                    .await
                    .unwrap();
                assert_eq!(exchange.status, StatusCode::OK);
            }
            assert_eq!(server.await.unwrap().len(), 2);
        });
    }

    #[test]
    fn https_speaks_tls_and_a_refused_port_is_a_connection_failure() {
        runtime().block_on(async {
            // A server that answers the TLS hello with plain HTTP.
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let server = tokio::spawn(async move {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut hello = [0u8; 5];
                socket.read_exact(&mut hello).await.unwrap();
                let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
                hello
            });
            let url = reqwest::Url::parse(&format!("https://localhost:{port}")).unwrap();
            let transport = Transport::new(&url, Duration::from_secs(5)).unwrap();
            let err = transport
                .post_json("/x?access_token=SECRET", Vec::new())
                .await
                .unwrap_err();
            assert!(
                err.starts_with("connection failed") && err.contains("TLS"),
                "{err}"
            );
            assert!(!err.contains("SECRET"), "{err}");
            // What arrived was a TLS record: handshake (22), version 3.x.
            assert_eq!(&server.await.unwrap()[..2], &[22, 3]);

            let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url =
                reqwest::Url::parse(&format!("http://{}", closed.local_addr().unwrap())).unwrap();
            drop(closed);
            let transport = Transport::new(&url, Duration::from_secs(5)).unwrap();
            let err = transport.post_json("/x", Vec::new()).await.unwrap_err();
            assert!(err.starts_with("connection failed"), "{err}");
        });
    }
}
