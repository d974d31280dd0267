//! https to Leen with certificate verification, the only transport the operator uses in
//! production: the fake Leen serves TLS with a certificate from a test CA, which the
//! operator trusts only through `LEEN_CA_FILE` (a TLS-inspecting proxy's CA), on top of the
//! system roots.

mod support;

use std::{net::IpAddr, process::Command};

use fake_leen::{FakeLeen, tls::TestCa};
use kube::Api;
use leen_operator::resource::LeenConnection;
use support::*;

async fn https_leen() -> (FakeLeen, TestCa) {
    let ca = TestCa::new().expect("test CA");
    let loopback: IpAddr = "127.0.0.1".parse().expect("ip");
    let cert = ca.issue(&["localhost"], &[loopback]).expect("certificate");
    let fake = FakeLeen::start_tls_on("127.0.0.1:0".parse().expect("addr"), &cert)
        .await
        .expect("fake Leen over https");
    fake.add_api_key(DEFAULT_KEY);
    (fake, ca)
}

/// A connection is read, and deleted with Leen's confirmation, over https whose server
/// certificate only the CA in `LEEN_CA_FILE` vouches for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leen_over_https_is_trusted_through_the_ca_file() {
    let cp = ControlPlane::start().await;
    cp.namespace("tls").await;
    let (fake, ca) = https_leen().await;
    let ca_file = cp.dir.path().join("leen-ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("CA written");
    let endpoint = fake.base_url();
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    let _op = Operator::start(
        &cp,
        &[
            ("LEEN_ENDPOINT", endpoint.as_str()),
            ("LEEN_API_KEY", DEFAULT_KEY),
            ("LEEN_CA_FILE", &ca_file.to_string_lossy()),
        ],
    )
    .await;
    let api: Api<LeenConnection> = Api::namespaced(cp.client().await, "tls");
    let (org, id) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    fake.add_connection(org, id, "CrowdStrike");
    api.create(&Default::default(), &connection("c", org, id))
        .await
        .expect("created");
    wait_for(&api, "c", "Ready=True over https", is_ready).await;
    delete(&api, "c").await;
    wait_gone(&api, "c").await;
    assert_eq!(fake.count_method("DELETE"), 1, "{:?}", fake.requests());
    assert!(!fake.has_connection(org, id), "deleted in Leen");
}

/// Without the CA the certificate is not trusted: the resource says why (the TLS error),
/// and no request, so no API key, ever reaches the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_refused_before_the_key_is_sent() {
    let cp = ControlPlane::start().await;
    cp.namespace("untrusted").await;
    let (fake, _ca) = https_leen().await;
    let endpoint = fake.base_url();
    let _op = Operator::start(
        &cp,
        &[
            ("LEEN_ENDPOINT", endpoint.as_str()),
            ("LEEN_API_KEY", DEFAULT_KEY),
        ],
    )
    .await;
    let api: Api<LeenConnection> = Api::namespaced(cp.client().await, "untrusted");
    let (org, id) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    fake.add_connection(org, id, "CrowdStrike");
    api.create(&Default::default(), &connection("c", org, id))
        .await
        .expect("created");
    let failed = wait_for(&api, "c", "a TLS failure in status", |o| {
        ready_reason(o).as_deref() == Some("LeenUnavailable")
    })
    .await;
    let message = ready_message(&failed);
    assert!(message.to_lowercase().contains("certificate"), "{message}");
    assert!(
        fake.requests().is_empty(),
        "a request got through: {:?}",
        fake.requests()
    );
}

/// A CA file that cannot be read, or holds no certificate, stops the binary at start with
/// one line naming the setting.
#[test]
fn a_bad_ca_file_stops_start_up_with_one_line() {
    let dir = tempfile::tempdir().expect("dir");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").expect("written");
    for (path, says) in [
        (dir.path().join("missing.pem"), "cannot read"),
        (empty, "holds no PEM certificate"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_leen-operator"))
            .env_clear()
            .env("LEEN_CA_FILE", &path)
            .output()
            .expect("binary runs");
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("LEEN_CA_FILE"), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
}

/// Leen by name behind a corporate forward proxy: the fake Leen's certificate is for
/// `leen.example.test`, a name this machine cannot resolve, so only the proxy can reach it.
async fn leen_behind_a_proxy(cp: &ControlPlane) -> (FakeLeen, std::path::PathBuf, ConnectProxy) {
    let ca = TestCa::new().expect("test CA");
    let cert = ca.issue(&["leen.example.test"], &[]).expect("certificate");
    let fake = FakeLeen::start_tls_on("127.0.0.1:0".parse().expect("addr"), &cert)
        .await
        .expect("fake Leen over https");
    fake.add_api_key(DEFAULT_KEY);
    let ca_file = cp.dir.path().join("leen-ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("CA written");
    let proxy = ConnectProxy::start("leen.example.test:443", fake.addr()).await;
    (fake, ca_file, proxy)
}

/// The operator with Leen by name behind the proxy, `NO_PROXY` as given, and a connection
/// to read in namespace `ns`.
async fn proxied(
    cp: &ControlPlane,
    ns: &str,
    no_proxy: &str,
) -> (FakeLeen, ConnectProxy, Operator, Api<LeenConnection>) {
    cp.namespace(ns).await;
    let (fake, ca_file, proxy) = leen_behind_a_proxy(cp).await;
    let op = Operator::start(
        cp,
        &[
            ("LEEN_ENDPOINT", "https://leen.example.test/v1"),
            ("LEEN_API_KEY", DEFAULT_KEY),
            ("LEEN_CA_FILE", &ca_file.to_string_lossy()),
            ("HTTPS_PROXY", proxy.url.as_str()),
            ("NO_PROXY", no_proxy),
        ],
    )
    .await;
    let api: Api<LeenConnection> = Api::namespaced(cp.client().await, ns);
    let (org, id) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    fake.add_connection(org, id, "CrowdStrike");
    api.create(&Default::default(), &connection("c", org, id))
        .await
        .expect("created");
    (fake, proxy, op, api)
}

/// `HTTPS_PROXY` is honoured: every call to Leen goes through the proxy as a CONNECT to
/// Leen's host (TLS end to end, the certificate checked against the name), and the
/// connection is read and deleted through it; the API server, which `NO_PROXY` names, is
/// not proxied (before, a kubeconfig-based start with HTTPS_PROXY set failed: kube read
/// the variable without its proxy support built in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leen_is_reached_through_https_proxy() {
    let cp = ControlPlane::start().await;
    // The API server is direct (as kubectl does it with this NO_PROXY).
    let (fake, proxy, _op, api) = proxied(&cp, "proxied", "127.0.0.1").await;
    wait_for(&api, "c", "Ready=True through the proxy", is_ready).await;
    delete(&api, "c").await;
    wait_gone(&api, "c").await;
    assert_eq!(fake.count_method("DELETE"), 1, "{:?}", fake.requests());
    let seen = proxy.seen();
    assert!(!seen.is_empty());
    assert!(
        seen.iter()
            .all(|l| l == "CONNECT leen.example.test:443 HTTP/1.1"),
        "only tunnels to Leen: {seen:?}"
    );
}

/// `NO_PROXY` naming Leen's host is honoured too: the operator then goes direct (here: the
/// name does not resolve, and the resource says Leen is unavailable), and the proxy sees
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_proxy_sends_leen_calls_direct() {
    let cp = ControlPlane::start().await;
    let (fake, proxy, _op, api) = proxied(&cp, "direct", "leen.example.test,127.0.0.1").await;
    let obj = wait_for(&api, "c", "a failed read", |o| {
        ready_reason(o).is_some_and(|r| r != "Synced")
    })
    .await;
    assert_eq!(
        ready_reason(&obj).as_deref(),
        Some("LeenUnavailable"),
        "{:?}",
        obj.status
    );
    assert!(proxy.seen().is_empty(), "{:?}", proxy.seen());
    assert!(fake.requests().is_empty());
}
