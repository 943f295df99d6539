//! HTTP-01 issuance end to end: the test serves `Http01Tokens` on pebble's
//! httpPort and checks the certificate like a TLS client would.

use std::time::Instant;

use acme::{ChallengeSolver, Http01Tokens};

use crate::harness::{pebble_or_skip, serve_http01, verify_issued};

#[tokio::test]
async fn http01_issues_a_certificate_that_verifies() {
    let mut pebble = pebble_or_skip!();
    let tokens = Http01Tokens::new();
    serve_http01(&mut pebble, tokens.clone()).await;

    let mut client = pebble.acme_client();
    let _credentials = client
        .create_account(Some("ops@gantry.example.org"), true)
        .await
        .expect("account");
    assert!(client.account_id().is_some());

    let started = Instant::now();
    let issued = client
        .issue(
            &["api.acme.test".to_string()],
            &ChallengeSolver::Http01(tokens.clone()),
        )
        .await
        .unwrap_or_else(|e| panic!("issue failed: {e}\n{}", pebble.logs()));
    eprintln!("HTTP-01 issuance took {:?}", started.elapsed());

    assert_eq!(issued.domains, vec!["api.acme.test"]);
    let root = pebble.issuing_root_pem().await;
    verify_issued(&issued, &root, &["api.acme.test"]);
    assert!(
        tokens.is_empty(),
        "HTTP-01 tokens must be removed after issuance"
    );

    // Renewal policy on a fresh pebble certificate (valid for years): not due.
    assert!(!acme::renewal_due(
        issued.not_after,
        time::OffsetDateTime::now_utc(),
        acme::DEFAULT_RENEW_BEFORE
    ));
}
