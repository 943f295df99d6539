//! A request answered before its body is read (too large, wrong content type, no token)
//! must still reach its client whole: the connection lingers instead of resetting.
//!
//! These tests speak HTTP/1.1 over TLS by hand so that the body is still being sent while
//! the answer comes back, which is what a client uploading too much does.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::Server;

/// A body well past the API's 64 KiB limit and the socket buffers between the two ends.
const LARGE: usize = 4 << 20;
/// A body under the limit, larger than what one read takes.
const SMALL: usize = 60 * 1024;

async fn tls_connect(server: &Server) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let ca = std::fs::read(server._dir.path().join("data/ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in tls::parse_certs(&ca).unwrap() {
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.base.trim_start_matches("https://"))
        .await
        .unwrap();
    connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

/// Sends `head` and then `len` bytes, and only then reads the answer, as most clients do
/// (Python's requests among them); returns what was read. A server that stops reading the
/// body and closes at once makes the sending fail, and such a client never reads the answer.
async fn upload(server: &Server, head: String, len: usize) -> String {
    let mut stream = tls_connect(server).await;
    let sent = async {
        stream.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 16 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            stream.write_all(&chunk[..n]).await?;
            left -= n;
        }
        stream.flush().await
    };
    let sent = tokio::time::timeout(std::time::Duration::from_secs(30), sent)
        .await
        .expect("the body is taken within 30 s");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        // Until the whole answer is in (the connection may stay open) or the end.
        while !complete(&answer) {
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })
    .await
    .expect("the answer ends within 30 s");
    let text = String::from_utf8_lossy(&answer).to_string();
    // Most clients report a failed send as the request's failure and never read.
    assert!(
        sent.is_ok(),
        "sending the body failed ({sent:?}): the server reset the connection; it sent {text:?}"
    );
    assert!(
        complete(&answer),
        "the connection ended ({read:?}) before the whole answer arrived: {text:?}"
    );
    text
}

/// Whether `answer` holds a response head and the `content-length` bytes it announces.
fn complete(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .is_some_and(|len| body.len() >= len)
}

fn head(token: &str, content_type: &str, len: usize) -> String {
    format!(
        "POST /v1/tenants HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\n\
         content-type: {content_type}\r\ncontent-length: {len}\r\n\r\n"
    )
}

#[tokio::test]
async fn answers_sent_before_the_body_is_read_reach_the_client() {
    let s = Server::start().await;
    let cases = [
        (
            &s.admin[..],
            "application/json",
            LARGE,
            "413",
            "payload_too_large",
        ),
        (
            &s.admin[..],
            "text/plain",
            SMALL,
            "415",
            "unsupported_media_type",
        ),
        (
            "not-a-token",
            "application/json",
            SMALL,
            "401",
            "unauthenticated",
        ),
    ];
    for (token, content_type, len, status, code) in cases {
        // A reset loses the answer only when it overtakes it, so try a few times.
        for _ in 0..5 {
            let answer = upload(&s, head(token, content_type, len), len).await;
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status} ")),
                "expected {status}: {answer:?}"
            );
            assert!(
                answer.contains(&format!("\"code\":\"{code}\"")),
                "{answer:?}"
            );
        }
    }
    s.stop().await;
}
