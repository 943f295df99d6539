//! The edge's own HTTP/1.1 path on the wire: answers framed every way (length, chunked,
//! until close, none), keep-alive on both sides, pipelining, early answers, pooled
//! connections the upstream closed, a large answer to a slow reader, bad requests and bad
//! answers, and the requests it hands over to hyper (HTTP/1.0, chunked bodies, `expect`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxy::{Balancer, Endpoint, PathMatch};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{route, Edge, Upstream1};

/// What a scripted upstream does with a request.
struct Script {
    /// The raw answer.
    answer: Vec<u8>,
    /// Close the connection after answering.
    close: bool,
    /// Answer before reading the request's body.
    early: bool,
}

/// The requests a scripted upstream received (heads) and the connections it accepted.
#[derive(Clone, Default)]
struct Seen {
    heads: Arc<Mutex<Vec<String>>>,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    connections: Arc<AtomicUsize>,
}

/// An upstream that answers each request with what `script` returns for its head.
async fn scripted(script: fn(&str) -> Script) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let out = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            seen.connections.fetch_add(1, Ordering::SeqCst);
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = read_until_head(&mut tcp, &mut buf).await else {
                        return;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    buf.drain(..end);
                    seen.heads.lock().unwrap().push(head.clone());
                    let s = script(&head);
                    let length = header(&head, "content-length")
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if !s.early {
                        while buf.len() < length {
                            let mut chunk = [0u8; 4096];
                            match tcp.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        seen.bodies
                            .lock()
                            .unwrap()
                            .push(buf.drain(..length).collect());
                    }
                    if tcp.write_all(&s.answer).await.is_err() || s.close || s.early {
                        return;
                    }
                }
            });
        }
    });
    (addr, out)
}

/// Reads into `buf` until it holds a whole head; its length, or `None` at the end.
async fn read_until_head(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        let mut chunk = [0u8; 4096];
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A header's value in a head (first one, any case).
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A client connection that reads answers one by one (keeping what follows).
struct Client {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        Client {
            tcp: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.unwrap();
    }

    async fn more(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(Duration::from_secs(5), self.tcp.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Ok(_) => false,
            Err(_) => panic!(
                "no answer within 5 s; have {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// The next answer: its head and its body (decoded when chunked). `head` says whether
    /// it answers a HEAD request.
    async fn answer(&mut self, head_req: bool) -> (String, Vec<u8>) {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                self.more().await,
                "closed before an answer head: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
        self.buf.drain(..end);
        let status: u16 = head[9..12].parse().unwrap();
        if head_req || status == 204 || status == 304 || (100..200).contains(&status) {
            return (head, Vec::new());
        }
        if let Some(n) = header(&head, "content-length") {
            let n: usize = n.parse().unwrap();
            while self.buf.len() < n {
                assert!(self.more().await, "closed in a body");
            }
            return (head, self.buf.drain(..n).collect());
        }
        if header(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    assert!(self.more().await, "closed in a chunk size");
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).to_string();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
                self.buf.drain(..line_end + 2);
                if size == 0 {
                    // Trailer fields, then an empty line.
                    loop {
                        if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                            self.buf.drain(..i + 2);
                            if i == 0 {
                                return (head, body);
                            }
                            continue;
                        }
                        assert!(self.more().await, "closed in trailers");
                    }
                }
                while self.buf.len() < size + 2 {
                    assert!(self.more().await, "closed in a chunk");
                }
                body.extend(self.buf.drain(..size));
                self.buf.drain(..2);
            }
        }
        while self.more().await {}
        (head, std::mem::take(&mut self.buf))
    }

    /// Whether the edge closed the connection (nothing more to read).
    async fn closed(&mut self) -> bool {
        !self.more().await && self.buf.is_empty()
    }
}

fn one_route(addr: SocketAddr) -> proxy::Route {
    let mut r = route(
        "t/e/h1",
        "h1.test",
        PathMatch::Prefix("/".into()),
        vec![Endpoint::new(addr)],
        Balancer::RoundRobin,
    );
    r.allow_http = true;
    r
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: h1.test\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn answers_framed_every_way_pass_through_on_kept_connections() {
    let (up, seen) = scripted(|head| {
        let path = head.split(' ').nth(1).unwrap_or("");
        let (answer, close): (&[u8], bool) = match path {
            "/chunked" => (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Up: 1\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nx-trailer: t\r\n\r\n",
                false,
            ),
            "/head" => (b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n", false),
            "/empty" => (b"HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n", false),
            "/interim" => (
                b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                false,
            ),
            _ => (b"HTTP/1.1 200 OK\r\n\r\nuntil the end", true),
        };
        Script {
            answer: answer.to_vec(),
            close,
            early: false,
        }
    })
    .await;
    let edge = Edge::start(vec![one_route(up)]).await;
    let mut c = Client::connect(edge.addr).await;

    c.send(&get("/chunked")).await;
    let (head, body) = c.answer(false).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(
        header(&head, "transfer-encoding"),
        Some("chunked"),
        "{head}"
    );
    assert_eq!(header(&head, "x-up"), Some("1"));
    assert!(header(&head, "x-request-id").is_some());
    assert_eq!(body, b"hello world");

    c.send(b"HEAD /head HTTP/1.1\r\nHost: h1.test\r\n\r\n")
        .await;
    let (head, body) = c.answer(true).await;
    assert_eq!(header(&head, "content-length"), Some("42"), "{head}");
    assert!(body.is_empty());

    c.send(&get("/empty")).await;
    let (head, _) = c.answer(false).await;
    assert!(head.starts_with("HTTP/1.1 204"), "{head}");
    assert_eq!(
        header(&head, "connection"),
        None,
        "hop-by-hop fields are dropped: {head}"
    );

    c.send(&get("/interim")).await;
    let (head, body) = c.answer(false).await;
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "interim answers are not passed on: {head}"
    );
    assert_eq!(body, b"ok");

    // Everything so far went over one upstream connection.
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);

    c.send(&get("/close")).await;
    let (head, body) = c.answer(false).await;
    assert_eq!(header(&head, "connection"), Some("close"), "{head}");
    assert_eq!(body, b"until the end");
    assert!(c.closed().await);
    assert_eq!(seen.heads.lock().unwrap().len(), 5);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_with_their_bodies() {
    let up = Upstream1::start("a").await;
    let edge = Edge::start(vec![one_route(up.addr)]).await;
    let mut c = Client::connect(edge.addr).await;
    let mut batch = get("/one");
    batch.extend_from_slice(
        b"POST /two HTTP/1.1\r\nHost: h1.test\r\nContent-Length: 7\r\n\r\npayload",
    );
    batch.extend_from_slice(&get("/three?q=1"));
    c.send(&batch).await;
    for (path, body_len) in [("/one", 0), ("/two", 7), ("/three?q=1", 0)] {
        let (head, body) = c.answer(false).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["path"], path);
        assert_eq!(doc["body_len"], body_len);
        assert_eq!(doc["headers"]["x-forwarded-host"], "h1.test");
    }
}

#[tokio::test]
async fn bad_requests_get_json_errors_and_a_closed_connection() {
    let up = Upstream1::start("a").await;
    let edge = Edge::start(vec![one_route(up.addr)]).await;
    let many: String = (0..120).map(|i| format!("x-{i}: v\r\n")).collect();
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: h1.test\r\nx-big: {}\r\n",
        "a".repeat(70_000)
    );
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"GET / HTTP/1.1\r\nHost: h1.test\r\nContent-Length: abc\r\n\r\n".to_vec(), 400),
        (
            b"POST / HTTP/1.1\r\nHost: h1.test\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".to_vec(),
            400,
        ),
        (format!("GET / HTTP/1.1\r\nHost: h1.test\r\n{many}\r\n").into_bytes(), 431),
        (huge.into_bytes(), 431),
        (b"NOT HTTP AT ALL\r\n\r\n".to_vec(), 400),
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400),
    ];
    for (request, status) in cases {
        let mut c = Client::connect(edge.addr).await;
        c.send(&request).await;
        let (head, body) = c.answer(false).await;
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["error"]["code"], "bad_request", "{doc}");
        assert!(doc["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        if status != 400 || !request.starts_with(b"GET / HTTP/1.1\r\n\r\n") {
            assert!(c.closed().await, "{head}");
        }
    }
    // The listener still serves.
    let (status, _) = edge.get("h1.test", "/").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_ambiguous_or_broken_answer_is_a_502() {
    let (up, _) = scripted(|head| {
        let answer: &[u8] = if head.contains("/both") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        } else if head.contains("/lengths") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
        } else {
            b"NONSENSE\r\n\r\n"
        };
        Script {
            answer: answer.to_vec(),
            close: true,
            early: false,
        }
    })
    .await;
    let edge = Edge::start(vec![one_route(up)]).await;
    for path in ["/both", "/lengths", "/garbage"] {
        let mut c = Client::connect(edge.addr).await;
        c.send(
            &format!("POST {path} HTTP/1.1\r\nHost: h1.test\r\nContent-Length: 2\r\n\r\nhi")
                .into_bytes(),
        )
        .await;
        let (head, body) = c.answer(false).await;
        assert!(head.starts_with("HTTP/1.1 502 "), "{path}: {head}");
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["error"]["code"], "bad_gateway");
    }
}

#[tokio::test]
async fn pooled_connections_the_upstream_closed_are_replaced() {
    // Closes every connection after one answer, without saying so.
    let (up, seen) = scripted(|_| Script {
        answer: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        close: true,
        early: false,
    })
    .await;
    let edge = Edge::start(vec![one_route(up)]).await;
    let mut c = Client::connect(edge.addr).await;
    for i in 0..30 {
        c.send(&get(&format!("/{i}"))).await;
        let (head, body) = c.answer(false).await;
        assert!(head.starts_with("HTTP/1.1 200"), "request {i}: {head}");
        assert_eq!(body, b"ok");
        if i % 3 == 0 {
            // Sometimes the upstream's close arrives before the next request.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(seen.connections.load(Ordering::SeqCst), 30);
}

#[tokio::test]
async fn an_early_answer_ends_the_client_connection() {
    let (up, seen) = scripted(|_| Script {
        answer: b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nbig!".to_vec(),
        close: false,
        early: true,
    })
    .await;
    let edge = Edge::start(vec![one_route(up)]).await;
    let mut c = Client::connect(edge.addr).await;
    // Says 1 MiB, sends 1 KiB of it.
    c.send(b"POST /upload HTTP/1.1\r\nHost: h1.test\r\nContent-Length: 1000000\r\n\r\n")
        .await;
    c.send(&[b'x'; 1024]).await;
    let (head, body) = c.answer(false).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert_eq!(body, b"big!");
    assert_eq!(header(&head, "connection"), Some("close"), "{head}");
    assert!(c.closed().await);
    assert_eq!(seen.heads.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn requests_this_path_does_not_take_are_served_by_hyper() {
    let up = Upstream1::start("a").await;
    let edge = Edge::start(vec![one_route(up.addr)]).await;

    // HTTP/1.0.
    let mut c = Client::connect(edge.addr).await;
    c.send(b"GET /old HTTP/1.0\r\nHost: h1.test\r\n\r\n").await;
    let (head, body) = c.answer(false).await;
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["path"], "/old");

    // A chunked body, after a request on the edge's own path on the same connection.
    let mut c = Client::connect(edge.addr).await;
    c.send(&get("/first")).await;
    let (head, _) = c.answer(false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    c.send(b"POST /chunked HTTP/1.1\r\nHost: h1.test\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n")
        .await;
    let (head, body) = c.answer(false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["body_len"], 7);
    // And the connection goes on.
    c.send(&get("/after")).await;
    let (_, body) = c.answer(false).await;
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["path"], "/after");

    // A target in absolute form.
    let mut c = Client::connect(edge.addr).await;
    c.send(b"GET http://h1.test/absolute?x=1 HTTP/1.1\r\nHost: h1.test\r\n\r\n")
        .await;
    let (head, body) = c.answer(false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["path"], "/absolute?x=1");

    // `expect: 100-continue`: the client hears 100 before it sends its body.
    let mut c = Client::connect(edge.addr).await;
    c.send(b"POST /expect HTTP/1.1\r\nHost: h1.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let (head, _) = c.answer(false).await;
    assert!(head.starts_with("HTTP/1.1 100"), "{head}");
    c.send(b"hello").await;
    let (head, body) = c.answer(false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["body_len"], 5);
}

#[tokio::test]
async fn both_paths_forward_the_same_fields() {
    let up = Upstream1::start("a").await;
    let mut r = route(
        "t/e/same",
        "*",
        PathMatch::Prefix("/api".into()),
        vec![Endpoint::new(up.addr)],
        Balancer::RoundRobin,
    );
    r.allow_http = true;
    r.strip_prefix = true;
    r.request_headers
        .set
        .push(("x-tenant".parse().unwrap(), "acme".parse().unwrap()));
    r.request_headers.set.push((
        "x-forwarded-proto".parse().unwrap(),
        "ruled".parse().unwrap(),
    ));
    r.request_headers.remove.push("x-drop".parse().unwrap());
    let edge = Edge::start(vec![r]).await;
    let fields = [
        ("x-forwarded-for", "10.0.0.1, 10.0.0.2"),
        ("x-forwarded-host", "spoofed.test"),
        ("x-request-id", "abc-123"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        ("x-drop", "gone"),
        ("x-custom", "kept"),
    ];
    // HTTP/1.1: the edge's own path.
    let h1 = {
        let mut req = edge.http.get(edge.url("/api/items?page=2"));
        for (n, v) in fields {
            req = req.header(n, v);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_11);
        r.json::<serde_json::Value>().await.unwrap()
    };
    // HTTP/2 (prior knowledge): hyper's path.
    let h2 = {
        let client = reqwest::Client::builder()
            .http2_prior_knowledge()
            .no_proxy()
            .build()
            .unwrap();
        let mut req = client.get(edge.url("/api/items?page=2"));
        for (n, v) in fields {
            req = req.header(n, v);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        r.json::<serde_json::Value>().await.unwrap()
    };
    assert_eq!(h1["path"], "/items?page=2");
    assert_eq!(h1["path"], h2["path"]);
    let h = &h1["headers"];
    assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "ruled", "the route's rules win");
    assert_eq!(h["x-request-id"], "abc-123");
    assert_eq!(h["x-tenant"], "acme");
    assert_eq!(h["x-custom"], "kept");
    assert!(h.get("x-drop").is_none());
    for name in [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-request-id",
        "traceparent",
        "x-tenant",
        "x-custom",
        "x-drop",
        "host",
    ] {
        assert_eq!(h1["headers"][name], h2["headers"][name], "{name}");
    }

    // Hop-by-hop fields and the ones `connection` names never reach the upstream; an
    // insane request id is replaced.
    let mut c = Client::connect(edge.addr).await;
    c.send(b"GET /api/x HTTP/1.1\r\nHost: h1.test\r\nConnection: x-secret, keep-alive\r\nX-Secret: s\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Request-Id: bad id!\r\n\r\n")
        .await;
    let (head, body) = c.answer(false).await;
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let h = &doc["headers"];
    for name in ["connection", "x-secret", "keep-alive", "te"] {
        assert!(h.get(name).is_none(), "{name} reached the upstream: {h}");
    }
    let id = h["x-request-id"].as_str().unwrap();
    assert_eq!(id.len(), 32, "{id}");
    assert_eq!(header(&head, "x-request-id"), Some(id));
}

#[tokio::test]
async fn an_answer_that_stalls_mid_body_ends_within_the_route_timeout() {
    // Promises 100 bytes, sends 7, then waits (the connection stays open).
    let (up, _) = scripted(|_| Script {
        answer: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial".to_vec(),
        close: false,
        early: false,
    })
    .await;
    let edge = Edge::start(vec![one_route(up)]).await; // route timeout: 1 s
    let mut c = Client::connect(edge.addr).await;
    c.send(&get("/stall")).await;
    let started = std::time::Instant::now();
    let end = loop {
        if let Some(i) = c.buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        assert!(c.more().await, "closed before the head");
    };
    assert!(c.buf.starts_with(b"HTTP/1.1 200"));
    // The rest of the body never comes: the edge closes the connection.
    while c.more().await {}
    assert_eq!(&c.buf[end..], b"partial");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_large_answer_to_a_slow_reader_arrives_whole_and_the_connection_serves_again() {
    // 8 MB: more than the sockets hold while the client does not read, so writes to the
    // client stop part-way and wait for room.
    let (up, _) = scripted(|head| {
        let n: usize = if head.starts_with("GET /big ") {
            8 << 20
        } else {
            2
        };
        let mut answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n").into_bytes();
        answer.extend((0..n).map(|i| (i % 251) as u8));
        Script {
            answer,
            close: false,
            early: false,
        }
    })
    .await;
    let edge = Edge::start(vec![one_route(up)]).await;
    let mut c = Client::connect(edge.addr).await;
    c.send(&get("/big")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (head, body) = c.answer(false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body.len(), 8 << 20);
    assert!(body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    c.send(&get("/small")).await;
    let (_, body) = c.answer(false).await;
    assert_eq!(body, [0, 1]);
}

/// Sends `head` and `len` body bytes (in `chunked` framing when `chunked`), and only then
/// reads, as most clients do; returns whether the sending succeeded, and the answer.
async fn upload_then_read(
    addr: SocketAddr,
    head: &str,
    len: usize,
    chunked: bool,
) -> (std::io::Result<()>, (String, Vec<u8>)) {
    let mut c = Client::connect(addr).await;
    let sent = async {
        c.tcp.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 16 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            if chunked {
                c.tcp.write_all(format!("{n:x}\r\n").as_bytes()).await?;
            }
            c.tcp.write_all(&chunk[..n]).await?;
            if chunked {
                c.tcp.write_all(b"\r\n").await?;
            }
            left -= n;
        }
        if chunked {
            c.tcp.write_all(b"0\r\n\r\n").await?;
        }
        Ok(())
    }
    .await;
    let answer = c.answer(false).await;
    (sent, answer)
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_without_resetting_the_sender() {
    let up = Upstream1::start("a").await;
    let mut r = one_route(up.addr);
    r.max_body = 1024;
    let edge = Edge::start(vec![r]).await;
    // 4 MiB, more than the socket buffers between the two ends hold: without a lingering
    // close the edge's close resets the connection while the client is still sending.
    let len = 4 << 20;
    let cases = [
        // The edge's own path (content-length), then hyper's (chunked).
        (
            format!("POST /up HTTP/1.1\r\nHost: h1.test\r\nContent-Length: {len}\r\n\r\n"),
            false,
        ),
        (
            "POST /up HTTP/1.1\r\nHost: h1.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_string(),
            true,
        ),
    ];
    for (head, chunked) in cases {
        for _ in 0..3 {
            let (sent, (answer, body)) = upload_then_read(edge.addr, &head, len, chunked).await;
            assert!(
                answer.starts_with("HTTP/1.1 413"),
                "chunked {chunked}: {answer}"
            );
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["error"]["code"], "payload_too_large");
            assert!(sent.is_ok(), "chunked {chunked}: sending failed: {sent:?}");
        }
    }
    edge.stop();
}
