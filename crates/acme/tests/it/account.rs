//! Account persistence: credentials survive a JSON round-trip and the
//! restored account can issue.

use acme::{AccountCredentials, AcmeError, ChallengeSolver, Http01Tokens};

use crate::harness::{pebble_or_skip, serve_http01, verify_issued};

#[tokio::test]
async fn credentials_round_trip_and_restored_account_issues() {
    let mut pebble = pebble_or_skip!();
    let tokens = Http01Tokens::new();
    serve_http01(&mut pebble, tokens.clone()).await;

    let mut first = pebble.acme_client();
    let credentials = first
        .create_account(Some("ops@gantry.example.org"), true)
        .await
        .expect("account");
    let account_id = first.account_id().expect("bound").to_owned();

    let json = credentials.to_json().expect("encode");
    assert!(json.contains(&pebble.directory_url), "{json}");
    // Debug never shows the key material that is in the JSON.
    let shown = format!("{credentials:?}");
    let key_b64 = serde_json::from_str::<serde_json::Value>(&json).unwrap()["key_pkcs8"]
        .as_str()
        .expect("key field")
        .to_owned();
    assert!(!shown.contains(&key_b64), "{shown}");
    drop(first);

    let restored = AccountCredentials::from_json(&json).expect("decode");
    let mut second = pebble.acme_client();
    second.restore(&restored).await.expect("restore");
    assert_eq!(second.account_id(), Some(account_id.as_str()));

    let issued = second
        .issue(
            &["restored.acme.test".to_string()],
            &ChallengeSolver::Http01(tokens.clone()),
        )
        .await
        .unwrap_or_else(|e| panic!("issue with restored account failed: {e}\n{}", pebble.logs()));
    verify_issued(
        &issued,
        &pebble.issuing_root_pem().await,
        &["restored.acme.test"],
    );
    assert!(tokens.is_empty());
}

#[tokio::test]
async fn unknown_account_cannot_be_restored() {
    let pebble = pebble_or_skip!();
    // Credentials of an account that exists on a *different* pebble instance but
    // carry this instance's directory URL: the key is unknown here.
    let other = pebble_or_skip!();
    let mut elsewhere = other.acme_client();
    let creds = elsewhere.create_account(None, true).await.expect("account");
    let mut value: serde_json::Value = serde_json::from_str(&creds.to_json().unwrap()).unwrap();
    value["directory"] = serde_json::Value::String(pebble.directory_url.clone());
    let foreign = AccountCredentials::from_json(&value.to_string()).expect("decode");

    let mut client = pebble.acme_client();
    let err = client.restore(&foreign).await.expect_err("unknown account");
    eprintln!("refused as expected: {err}");
    assert!(matches!(err, AcmeError::AccountRefused(_)), "{err:?}");
}
