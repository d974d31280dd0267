//! leen-operator: a Kubernetes operator that manages the life of Leen Security API
//! connections through `LeenConnection` resources.
//!
//! Modules, one concern each: [`resource`] (the CRD types), [`leen`] (the Leen client),
//! [`decision`] (what to do, as pure functions), [`controller`] (wiring and writes), [`events`] (Kubernetes Events, off the critical path),
//! [`config`] (flags and environment), [`leader`] (leader election), [`telemetry`] (metrics, logs, health endpoints),
//! [`rate_gate`] (one pause per Leen rate limit), [`budget`] (the deletion budget), [`credentials`] (vendor credentials),
//! [`secret_index`] (which resources read which Secrets), [`cache`] (what the controller keeps of each resource).
//! The fake Leen used by tests, the benchmark and the demo is its own crate, `fake-leen`.

pub mod budget;
pub mod cache;
pub mod config;
pub mod controller;
pub mod credentials;
pub mod decision;
pub mod events;
pub mod export;
pub mod leader;
pub mod leen;
pub mod organization;
pub mod proxy;
pub mod rate_gate;
pub mod resource;
pub mod secret_index;
pub mod telemetry;
pub mod text;

/// Installs the one rustls crypto provider (aws-lc-rs) that both kube and reqwest use.
/// Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
