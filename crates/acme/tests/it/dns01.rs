//! DNS-01 issuance end to end, with `WebhookDns` pointed at
//! pebble-challtestsrv's management API (`/set-txt`, `/clear-txt`).

use std::sync::{Arc, Mutex};

use acme::{BoxError, BoxFuture, ChallengeSolver, DnsProvider, WebhookDns};

use crate::harness::{pebble_or_skip, verify_issued};

/// Wraps a provider and records every call, to check cleanup.
struct Recording {
    inner: WebhookDns,
    calls: Mutex<Vec<String>>,
}

impl Recording {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl DnsProvider for Recording {
    fn set_txt<'a>(&'a self, fqdn: &'a str, value: &'a str) -> BoxFuture<'a, Result<(), BoxError>> {
        self.calls.lock().unwrap().push(format!("set {fqdn}"));
        self.inner.set_txt(fqdn, value)
    }

    fn clear_txt<'a>(&'a self, fqdn: &'a str) -> BoxFuture<'a, Result<(), BoxError>> {
        self.calls.lock().unwrap().push(format!("clear {fqdn}"));
        self.inner.clear_txt(fqdn)
    }
}

#[tokio::test]
async fn dns01_issues_plain_and_wildcard_certificates() {
    let pebble = pebble_or_skip!();
    let dns = Arc::new(Recording {
        inner: WebhookDns::new(&pebble.challtestsrv_url).expect("webhook"),
        calls: Mutex::new(Vec::new()),
    });
    let solver = ChallengeSolver::Dns01(dns.clone());

    let mut client = pebble.acme_client();
    client.create_account(None, true).await.expect("account");
    let root = pebble.issuing_root_pem().await;

    // A plain name.
    let issued = client
        .issue(&["dns.acme.test".to_string()], &solver)
        .await
        .unwrap_or_else(|e| panic!("issue dns.acme.test failed: {e}\n{}", pebble.logs()));
    verify_issued(&issued, &root, &["dns.acme.test"]);
    assert_eq!(
        dns.calls(),
        vec![
            "set _acme-challenge.dns.acme.test.",
            "clear _acme-challenge.dns.acme.test."
        ]
    );

    // A wildcard only.
    dns.calls.lock().unwrap().clear();
    let issued = client
        .issue(&["*.wild.acme.test".to_string()], &solver)
        .await
        .unwrap_or_else(|e| panic!("issue *.wild.acme.test failed: {e}\n{}", pebble.logs()));
    assert_eq!(issued.domains, vec!["*.wild.acme.test"]);
    verify_issued(&issued, &root, &["a.wild.acme.test", "b.wild.acme.test"]);
    assert_eq!(
        dns.calls(),
        vec![
            "set _acme-challenge.wild.acme.test.",
            "clear _acme-challenge.wild.acme.test."
        ]
    );

    // Wildcard plus its parent: two authorizations share one TXT name, both values
    // must be published at once, and the name is cleared once.
    dns.calls.lock().unwrap().clear();
    let issued = client
        .issue(
            &["*.both.acme.test".to_string(), "both.acme.test".to_string()],
            &solver,
        )
        .await
        .unwrap_or_else(|e| panic!("issue *.both + both failed: {e}\n{}", pebble.logs()));
    verify_issued(&issued, &root, &["both.acme.test", "x.both.acme.test"]);
    assert_eq!(
        dns.calls(),
        vec![
            "set _acme-challenge.both.acme.test.",
            "set _acme-challenge.both.acme.test.",
            "clear _acme-challenge.both.acme.test."
        ]
    );
}
