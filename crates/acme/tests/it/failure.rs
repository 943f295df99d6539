//! Failure paths: each must end in a clear `AcmeError` within its bound.

use std::time::{Duration, Instant};

use acme::testkit::test_timeouts;
use acme::{AcmeClient, AcmeError, ChallengeSolver, Http01Tokens, WebhookDns};

use crate::harness::{pebble_or_skip, serve_http01};

#[tokio::test]
async fn unserved_http01_token_fails_with_the_ca_problem_not_a_hang() {
    let mut pebble = pebble_or_skip!();
    // The listener serves an empty map; the solver publishes into another one,
    // so pebble's VA gets a 404 for the token.
    serve_http01(&mut pebble, Http01Tokens::new()).await;
    let unserved = Http01Tokens::new();

    let mut client = pebble.acme_client();
    client.create_account(None, true).await.expect("account");

    let started = Instant::now();
    let err = client
        .issue(
            &["fail.acme.test".to_string()],
            &ChallengeSolver::Http01(unserved.clone()),
        )
        .await
        .expect_err("validation must fail");
    let took = started.elapsed();
    eprintln!("failed as expected after {took:?}: {err}");

    assert!(
        took < test_timeouts().total + Duration::from_secs(5),
        "took {took:?}"
    );
    match &err {
        AcmeError::ChallengeFailed {
            domain,
            kind,
            problem,
        } => {
            assert_eq!(domain, "fail.acme.test");
            assert_eq!(*kind, "http-01");
            assert!(
                problem.contains("404"),
                "problem should carry the CA's detail: {problem}"
            );
        }
        other => panic!(
            "expected ChallengeFailed, got {other:?} ({other})\n{}",
            pebble.logs()
        ),
    }
    let line = err.to_string();
    assert!(!line.contains('\n'), "{line}");
    assert!(unserved.is_empty(), "token must be removed after failure");
}

#[tokio::test]
async fn unpublished_dns01_record_fails_clearly() {
    let pebble = pebble_or_skip!();
    // A provider that claims success but publishes nothing.
    struct BlackHole;
    impl acme::DnsProvider for BlackHole {
        fn set_txt<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
        ) -> acme::BoxFuture<'a, Result<(), acme::BoxError>> {
            Box::pin(async { Ok(()) })
        }
        fn clear_txt<'a>(&'a self, _: &'a str) -> acme::BoxFuture<'a, Result<(), acme::BoxError>> {
            Box::pin(async { Ok(()) })
        }
    }
    let mut client = pebble.acme_client();
    client.create_account(None, true).await.expect("account");
    let err = client
        .issue(
            &["*.nodns.acme.test".to_string()],
            &ChallengeSolver::Dns01(std::sync::Arc::new(BlackHole)),
        )
        .await
        .expect_err("validation must fail");
    eprintln!("failed as expected: {err}");
    assert!(
        matches!(&err, AcmeError::ChallengeFailed { domain, kind: "dns-01", .. } if domain == "*.nodns.acme.test"),
        "{err:?}"
    );
}

#[tokio::test]
async fn failing_dns_webhook_is_reported_and_nothing_hangs() {
    let pebble = pebble_or_skip!();
    // challtestsrv has no /nope/set-txt: the webhook answers 404.
    let webhook = WebhookDns::new(&format!("{}/nope", pebble.challtestsrv_url)).expect("webhook");
    let mut client = pebble.acme_client();
    client.create_account(None, true).await.expect("account");
    let err = client
        .issue(
            &["hook.acme.test".to_string()],
            &ChallengeSolver::Dns01(std::sync::Arc::new(webhook)),
        )
        .await
        .expect_err("webhook failure must surface");
    eprintln!("failed as expected: {err}");
    assert!(
        matches!(&err, AcmeError::Dns { action: "set", fqdn, reason } if fqdn == "_acme-challenge.hook.acme.test." && reason.contains("404")),
        "{err:?}"
    );
}

#[tokio::test]
async fn account_without_terms_agreement_is_refused() {
    let pebble = pebble_or_skip!();
    let mut client = pebble.acme_client();
    let err = client
        .create_account(None, false)
        .await
        .expect_err("pebble requires agreeing to the terms");
    eprintln!("refused as expected: {err}");
    assert!(matches!(err, AcmeError::AccountRefused(_)), "{err:?}");
    assert!(client.account_id().is_none());
}

#[tokio::test]
async fn unreachable_directory_is_reported_quickly() {
    // No pebble needed: nothing listens on this freshly released loopback port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut client = AcmeClient::new(&format!("https://127.0.0.1:{port}/dir"), None)
        .expect("client")
        .with_timeouts(test_timeouts());
    let started = Instant::now();
    let err = client
        .create_account(None, true)
        .await
        .expect_err("nothing listens there");
    eprintln!("failed as expected: {err}");
    assert!(
        matches!(err, AcmeError::DirectoryUnreachable { .. }),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test]
async fn untrusted_directory_certificate_is_refused() {
    let pebble = pebble_or_skip!();
    // Without the test CA as an extra root, pebble's HTTPS certificate is untrusted.
    let mut client = AcmeClient::new(&pebble.directory_url, None)
        .expect("client")
        .with_timeouts(test_timeouts());
    let err = client
        .create_account(None, true)
        .await
        .expect_err("must not trust pebble's certificate");
    eprintln!("failed as expected: {err}");
    match &err {
        AcmeError::DirectoryUnreachable { reason, .. } => {
            assert!(reason.to_lowercase().contains("certificate"), "{reason}")
        }
        other => panic!("expected DirectoryUnreachable, got {other:?}"),
    }
}
