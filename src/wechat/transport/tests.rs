use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// To `url` through `proxies`, whatever the environment names.
fn through(url: &str, proxies: Matcher) -> Result<Transport> {
    Transport::with_proxies(url, Duration::from_secs(5), &proxies)
}

/// Straight to `url`.
fn direct(url: &str) -> Transport {
    through(url, Matcher::builder().build()).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A loopback server answering `answers` requests, one per connection
/// when `close` is set; returns its base URL and the requests it saw.
async fn server(answers: usize, close: bool) -> (String, tokio::task::JoinHandle<Vec<String>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
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
        let transport = direct(&url);
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
        let host = format!("host: {}", url.trim_start_matches("http://"));
        assert!(first.contains(&host), "{first}");
        assert!(first.contains("content-type: application/json"), "{first}");
        assert!(seen[2].ends_with("{\"n\":2}"), "{}", seen[2]);
    });
}

#[test]
fn a_connection_the_server_closed_is_replaced() {
    runtime().block_on(async {
        let (url, server) = server(2, true).await;
        let transport = direct(&url);
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
        let url = format!("https://localhost:{port}");
        let transport = direct(&url);
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
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let transport = direct(&url);
        let err = transport.post_json("/x", Vec::new()).await.unwrap_err();
        assert!(err.starts_with("connection failed"), "{err}");
    });
}

#[test]
fn the_environment_chooses_the_proxy_and_no_proxy_excludes_hosts() {
    let via = |proxies: Matcher| through("http://127.0.0.1:9/wxa", proxies).unwrap();
    let proxied = via(Matcher::builder().http("http://127.0.0.1:3128").build());
    assert!(proxied.proxy.is_some());
    assert_eq!(proxied.dial, ("127.0.0.1".to_string(), 3128));
    let excluded = Matcher::builder()
        .http("http://127.0.0.1:3128")
        .no("127.0.0.1")
        .build();
    assert!(via(excluded).proxy.is_none());
    assert!(
        via(Matcher::builder().https("http://127.0.0.1:3128").build())
            .proxy
            .is_none()
    );
    assert!(via(Matcher::builder().build()).proxy.is_none());
    let socks = through(
        "http://127.0.0.1:9",
        Matcher::builder().all("socks5://127.0.0.1:1080").build(),
    );
    let err = format!("{:#}", socks.err().unwrap());
    assert!(err.contains("NO_PROXY=127.0.0.1"), "{err}");
}

/// A proxy that records what it is asked and answers `reply` once.
async fn recording_proxy(reply: &'static [u8]) -> (String, tokio::task::JoinHandle<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://ops:pa55@{}", listener.local_addr().unwrap());
    let handle = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !seen.ends_with(b"\r\n\r\n") {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0);
            seen.extend_from_slice(&buf[..n]);
        }
        socket.write_all(reply).await.unwrap();
        String::from_utf8_lossy(&seen).to_string()
    });
    (url, handle)
}

#[test]
fn plain_requests_through_a_proxy_name_the_whole_url_and_carry_its_credentials() {
    runtime().block_on(async {
        let (proxy, seen) =
            recording_proxy(b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\n{\"errcode\":0}").await;
        let proxies = Matcher::builder().http(proxy).build();
        let transport = through("http://api.example:8080/prefix", proxies).unwrap();
        let exchange = transport
            .get("/prefix/cgi-bin/token?appid=a")
            .await
            .unwrap();
        assert_eq!(&exchange.body[..], b"{\"errcode\":0}");
        let seen = seen.await.unwrap();
        assert!(
            seen.starts_with(
                "GET http://api.example:8080/prefix/cgi-bin/token?appid=a HTTP/1.1\r\n"
            ),
            "{seen}"
        );
        // "ops:pa55" in base64.
        assert!(
            seen.contains("proxy-authorization: Basic b3BzOnBhNTU="),
            "{seen}"
        );
        assert!(seen.contains("host: api.example:8080"), "{seen}");
    });
}

#[test]
fn https_through_a_proxy_asks_for_a_tunnel_and_a_refusal_is_named() {
    runtime().block_on(async {
        let (proxy, seen) =
            recording_proxy(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n").await;
        let proxies = Matcher::builder().https(proxy).build();
        let transport = through("https://api.weixin.qq.com", proxies).unwrap();
        let err = transport
            .post_json("/wxa/servicemarket?access_token=SECRET", b"{}".to_vec())
            .await
            .unwrap_err();
        assert!(
            err.contains("the proxy refused a tunnel to api.weixin.qq.com:443: HTTP/1.1 403"),
            "{err}"
        );
        assert!(!err.contains("SECRET"), "{err}");
        let seen = seen.await.unwrap();
        assert!(
            seen.starts_with("CONNECT api.weixin.qq.com:443 HTTP/1.1\r\n"),
            "{seen}"
        );
        assert!(
            seen.contains("Proxy-Authorization: Basic b3BzOnBhNTU="),
            "{seen}"
        );
        // The token is never shown to the proxy: only the tunnel's target.
        assert!(!seen.contains("SECRET"), "{seen}");
    });
}

#[test]
fn query_values_are_percent_encoded_and_urls_split_at_the_path() {
    assert_eq!(encode_query_value("aB9-._~"), "aB9-._~");
    assert_eq!(encode_query_value("a b&c=/é"), "a%20b%26c%3D%2F%C3%A9");
    assert_eq!(
        split_url("https://api.weixin.qq.com/wxa/servicemarket"),
        ("https://api.weixin.qq.com", "/wxa/servicemarket")
    );
    assert_eq!(
        split_url("http://127.0.0.1:8080?x=1"),
        ("http://127.0.0.1:8080", "?x=1")
    );
    assert_eq!(
        split_url("http://127.0.0.1:8080"),
        ("http://127.0.0.1:8080", "")
    );
}

/// Percent-decodes what [`encode_query_value`] wrote.
fn decode(encoded: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut bytes = encoded.bytes();
    while let Some(byte) = bytes.next() {
        if byte == b'%' {
            let hex: String = bytes.by_ref().take(2).map(char::from).collect();
            out.push(u8::from_str_radix(&hex, 16).unwrap());
        } else {
            out.push(byte);
        }
    }
    out
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// Whatever a proxy answers to CONNECT, reading it never panics, and
    /// only a 2xx status opens the tunnel.
    #[test]
    fn any_proxy_answer_is_a_tunnel_or_a_refusal(head in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
        let granted = tunnel_granted(&head, "api.weixin.qq.com:443");
        let text = String::from_utf8_lossy(&head);
        let status = text.lines().next().unwrap_or_default().split_whitespace().nth(1).map(str::to_string);
        proptest::prop_assert_eq!(granted.is_ok(), status.is_some_and(|s| s.starts_with('2')));
        if let Err(message) = granted {
            proptest::prop_assert!(!message.contains('\n'));
        }
    }

    /// Any value survives the query encoding, which leaves nothing a URL would misread.
    #[test]
    fn any_query_value_is_encoded_reversibly(value in ".{0,60}") {
        let encoded = encode_query_value(&value);
        proptest::prop_assert!(encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
        proptest::prop_assert_eq!(decode(&encoded), value.as_bytes());
    }

    /// Any text splits into an origin and the rest without a panic.
    #[test]
    fn any_url_splits_into_origin_and_rest(url in ".{0,80}") {
        let (origin, rest) = split_url(&url);
        proptest::prop_assert_eq!(format!("{origin}{rest}"), url);
    }
}
