//! `fake-leen`: the project's fake Leen API as a process, for the demo and by-hand runs.
//!
//! Prints `http://ADDR/v1` (the LEEN_ENDPOINT to use; `https://` with `--tls-cert`) on its
//! first line, then serves until killed. Connections, keys and faults can be added later
//! over HTTP under `/_fake/`. `--tls-ca OUT` makes a test CA, writes its certificate to OUT
//! (what LEEN_CA_FILE names) and serves https with a certificate it issued.

use std::net::SocketAddr;

use clap::Parser;
use fake_leen::FakeLeen;
use uuid::Uuid;

/// A fake Leen provisioning API on a loopback address.
#[derive(Parser)]
#[command(name = "fake-leen", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// API key to accept (repeatable).
    #[arg(long = "api-key")]
    api_keys: Vec<String>,
    /// Connection to create, as ORGANIZATION_ID:CONNECTION_ID[:VENDOR] (repeatable).
    #[arg(long = "connection")]
    connections: Vec<String>,
    /// Delay added to every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Serve https: make a test CA, write its certificate (PEM) to this file, and present a
    /// certificate it issued for localhost, 127.0.0.1 and --tls-ip.
    #[arg(long)]
    tls_ca: Option<std::path::PathBuf>,
    /// Another IP address the certificate is valid for (the address pods reach it at).
    #[arg(long)]
    tls_ip: Vec<std::net::IpAddr>,
    /// Allow a non-loopback --addr (a cluster's pods must reach it): only with https.
    #[arg(long)]
    public: bool,
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let allowed = args.addr.ip().is_loopback() || (args.public && args.tls_ca.is_some());
    if !allowed {
        return Err(format!(
            "--addr {} is not a loopback address (another needs --public and --tls-ca)",
            args.addr
        ));
    }
    let fake = match &args.tls_ca {
        None => FakeLeen::start_on(args.addr).await,
        Some(out) => {
            let ca = fake_leen::tls::TestCa::new().map_err(|e| format!("test CA: {e}"))?;
            let mut ips = vec![std::net::IpAddr::from([127, 0, 0, 1])];
            ips.extend(args.tls_ip.iter().copied());
            let cert = ca
                .issue(&["localhost"], &ips)
                .map_err(|e| format!("certificate: {e}"))?;
            std::fs::write(out, ca.pem()).map_err(|e| format!("cannot write {out:?}: {e}"))?;
            FakeLeen::start_tls_on(args.addr, &cert).await
        }
    }
    .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    for key in &args.api_keys {
        fake.add_api_key(key);
    }
    for spec in &args.connections {
        let mut parts = spec.splitn(3, ':');
        let org = parts.next().and_then(|s| Uuid::parse_str(s).ok());
        let id = parts.next().and_then(|s| Uuid::parse_str(s).ok());
        let (Some(org), Some(id)) = (org, id) else {
            return Err(format!(
                "--connection {spec:?} is not ORGANIZATION_ID:CONNECTION_ID[:VENDOR]"
            ));
        };
        fake.add_connection(org, id, parts.next().unwrap_or("CrowdStrike"));
    }
    fake.set_latency(std::time::Duration::from_millis(args.latency_ms));
    println!("{}", fake.base_url());
    let _ = tokio::signal::ctrl_c().await;
    Ok(())
}
