//! riskbatch's one HTTP client: HTTP/1.1 keep-alive connections to one
//! origin, straight or through the proxy the environment names.
//!
//! The risk calls (hundreds of thousands per run), the token endpoint and the
//! simulator's pushes all go through it. It replaced reqwest: on 1 M rows
//! against mockfast at 64 in flight, risk calls through reqwest cost 44 s of
//! CPU and through these connections 33.6 s (a pool keyed by host, a redirect
//! policy that parses the URL again and tower layers, none of which one
//! origin needs; an API answer is never a redirect, and following one would
//! leak the token).
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
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue, PROXY_AUTHORIZATION, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, pki_types::ServerName};

use crate::redact::{error_chain, redact};

type Sender = SendRequest<Full<Bytes>>;
/// A request body and its content type.
type Payload = (&'static str, Vec<u8>);

/// Where requests for one origin go, parsed once.
pub struct Transport {
    /// Host and port of the origin, `host:port` as CONNECT names it.
    target: String,
    /// Where the TCP connection goes: the origin, or its proxy.
    dial: (String, u16),
    /// `Some` when an HTTP proxy forwards the requests.
    proxy: Option<ProxyRoute>,
    /// The `Host` header.
    authority: HeaderValue,
    /// `http://host:port` of the origin: plain requests through a proxy name it.
    origin: String,
    /// `Some` for https: the TLS set-up and the name the certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
    /// Bounds one request, from taking a connection to the last byte of the answer.
    timeout: Duration,
    user_agent: HeaderValue,
    idle: Mutex<Vec<Sender>>,
}

struct ProxyRoute {
    /// `Proxy-Authorization` from the proxy URL's user and password.
    auth: Option<HeaderValue>,
}

/// A finished HTTP exchange: status and the whole body.
#[derive(Debug)]
pub struct Exchange {
    pub status: StatusCode,
    pub body: Bytes,
}

/// A URL split into its origin (`scheme://host[:port]`) and the rest.
pub fn split_url(url: &str) -> (&str, &str) {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find(['/', '?']) {
        Some(i) => url.split_at(after_scheme + i),
        None => (url, ""),
    }
}

/// Percent-encodes a query value as a form does (RFC 3986 unreserved kept).
pub fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

impl Transport {
    /// A client for the origin of `url` (its path is ignored: each request
    /// names its own), through the proxy the environment names for it
    /// (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, minus `NO_PROXY`).
    pub fn new(url: &str, timeout: Duration) -> Result<Transport> {
        Self::with_proxies(url, timeout, &Matcher::from_env())
    }

    pub fn with_proxies(url: &str, timeout: Duration, proxies: &Matcher) -> Result<Transport> {
        let (origin, _) = split_url(url);
        let uri: Uri = origin
            .parse()
            .with_context(|| format!("{} is not a URL", redact(url)))?;
        let host = uri
            .host()
            .with_context(|| format!("URL {} has no host", redact(url)))?
            .to_string();
        let secure = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            other => bail!(
                "URL {} has scheme {other:?}, not http or https",
                redact(url)
            ),
        };
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        // `[::1]` is the URL form; connecting needs the bare address.
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let authority = match uri.port_u16() {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        };
        let (dial, proxy) = match proxies.intercept(&uri) {
            None => ((bare.clone(), port), None),
            Some(intercept) => {
                let proxy = intercept.uri();
                if proxy.scheme_str() != Some("http") {
                    bail!(
                        "the proxy for {host} ({}) is not an http:// proxy; riskbatch speaks to \
                         HTTP proxies only (set NO_PROXY={host} to go straight there)",
                        redact(&proxy.to_string())
                    );
                }
                let proxy_host = proxy.host().context("the proxy URL has no host")?;
                let dial = (
                    proxy_host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_string(),
                    proxy.port_u16().unwrap_or(80),
                );
                let auth = intercept.basic_auth().cloned();
                (dial, Some(ProxyRoute { auth }))
            }
        };
        Ok(Transport {
            target: format!("{host}:{port}"),
            dial,
            proxy,
            authority: HeaderValue::from_str(&authority)
                .with_context(|| format!("host {authority:?} is not a valid header"))?,
            origin: format!("http://{authority}"),
            tls: if secure {
                Some(tls_connector(&bare)?)
            } else {
                None
            },
            connect_timeout: timeout.min(Duration::from_secs(10)),
            timeout,
            user_agent: HeaderValue::from_static(concat!("riskbatch/", env!("CARGO_PKG_VERSION"))),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// POSTs a JSON `body` to `path_and_query` and reads the whole answer.
    pub async fn post_json(&self, path_and_query: &str, body: Vec<u8>) -> Result<Exchange, String> {
        self.post(path_and_query, "application/json", body).await
    }

    /// POSTs `body` of type `content_type` to `path_and_query`.
    pub async fn post(
        &self,
        path_and_query: &str,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> Result<Exchange, String> {
        self.exchange(Method::POST, path_and_query, Some((content_type, body)))
            .await
    }

    /// GETs `path_and_query` and reads the whole answer.
    pub async fn get(&self, path_and_query: &str) -> Result<Exchange, String> {
        self.exchange(Method::GET, path_and_query, None).await
    }

    /// One request and its answer within the timeout: dropping the
    /// request's future on timeout drops its connection.
    async fn exchange(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Payload>,
    ) -> Result<Exchange, String> {
        match tokio::time::timeout(self.timeout, self.send(method, path_and_query, body)).await {
            Ok(result) => result,
            Err(_) => Err(format!("timeout: no answer within {:?}", self.timeout)),
        }
    }

    fn request(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Payload>,
    ) -> Result<Request<Full<Bytes>>, String> {
        // A plain request through a proxy names the whole URL; a tunnelled
        // one (https) is sent as to the origin.
        let target = match (&self.proxy, &self.tls) {
            (Some(_), None) => format!("{}{path_and_query}", self.origin),
            _ => path_and_query.to_string(),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(target)
            .header(HOST, self.authority.clone())
            .header(USER_AGENT, self.user_agent.clone());
        if let (Some(ProxyRoute { auth: Some(auth) }), None) = (&self.proxy, &self.tls) {
            request = request.header(PROXY_AUTHORIZATION, auth.clone());
        }
        let body = match body {
            Some((content_type, body)) => {
                request = request.header(CONTENT_TYPE, HeaderValue::from_static(content_type));
                Bytes::from(body)
            }
            None => Bytes::new(),
        };
        request
            .body(Full::new(body))
            .map_err(|err| format!("building the request: {}", redact(&err.to_string())))
    }

    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Payload>,
    ) -> Result<Exchange, String> {
        let mut sender = self.connection().await?;
        let mut request = self.request(method, path_and_query, body)?;
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
    async fn connection(&self) -> Result<Sender, String> {
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

    async fn connect_within_timeout(&self) -> Result<Sender, String> {
        match tokio::time::timeout(self.connect_timeout, self.connect()).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "connection failed: no connection to {}:{} within {:?}",
                self.dial.0, self.dial.1, self.connect_timeout
            )),
        }
    }

    async fn connect(&self) -> Result<Sender, String> {
        let (host, port) = (&self.dial.0, self.dial.1);
        let failed =
            |err: &dyn std::fmt::Display| format!("connection failed: {host}:{port}: {err}");
        let mut tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|err| failed(&err))?;
        tcp.set_nodelay(true).map_err(|err| failed(&err))?;
        let Some((tls, name)) = &self.tls else {
            return handshake(tcp).await.map_err(|err| failed(&err));
        };
        if let Some(proxy) = &self.proxy {
            self.tunnel(&mut tcp, proxy)
                .await
                .map_err(|err| failed(&err))?;
        }
        let stream = tls
            .connect(name.clone(), tcp)
            .await
            .map_err(|err| failed(&format!("TLS: {err}")))?;
        handshake(stream).await.map_err(|err| failed(&err))
    }

    /// Asks the proxy for a tunnel to the origin (`CONNECT host:port`).
    async fn tunnel(&self, tcp: &mut TcpStream, proxy: &ProxyRoute) -> Result<(), String> {
        let mut ask = format!(
            "CONNECT {0} HTTP/1.1\r\nHost: {0}\r\nUser-Agent: {1}\r\n",
            self.target,
            self.user_agent.to_str().unwrap_or("riskbatch")
        );
        if let Some(auth) = proxy.auth.as_ref().and_then(|a| a.to_str().ok()) {
            ask.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
        }
        ask.push_str("\r\n");
        tcp.write_all(ask.as_bytes())
            .await
            .map_err(|err| format!("proxy CONNECT: {err}"))?;
        // The proxy's answer is a head without a body; nothing of the
        // origin's comes before the TLS handshake, so reading byte-wise is safe.
        let mut head = Vec::with_capacity(128);
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() > 8192 {
                return Err("proxy CONNECT: the proxy's answer is too long".into());
            }
            let byte = tcp
                .read_u8()
                .await
                .map_err(|err| format!("proxy CONNECT: {err}"))?;
            head.push(byte);
        }
        tunnel_granted(&head, &self.target)
    }
}

/// Whether the proxy's answer to `CONNECT target` opened the tunnel (a 2xx
/// status); if not, why, in one line.
fn tunnel_granted(head: &[u8], target: &str) -> Result<(), String> {
    let head = String::from_utf8_lossy(head);
    let status_line = head.lines().next().unwrap_or_default();
    match status_line.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') => Ok(()),
        _ => Err(format!(
            "the proxy refused a tunnel to {target}: {}",
            redact(status_line)
        )),
    }
}

async fn handshake<S>(stream: S) -> Result<Sender, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// TLS with the system's trust store.
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
    let name = ServerName::try_from(host)
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
mod tests;
