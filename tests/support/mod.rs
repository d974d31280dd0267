//! Test harness: a real kube-apiserver + etcd per test (the envtest way), the project's
//! fake Leen, and the operator binary as a child process.
//!
//! Each test starts its own control plane on free loopback ports in its own temp dir.
//! That costs a few seconds per test, but tests share nothing (no CRD, watch or namespace
//! state can leak between them), can run in parallel, and a crash of one cannot wedge
//! another. Everything is stopped on drop, also when the test panics.
//!
//! Modules: [`control_plane`], [`operator`], [`scenario`] (the usual start of a test),
//! [`fixtures`] (objects in a few words), [`decisions`] (inputs of the decision tables),
//! [`waits`] (conditions, never sleeps), [`proxy`] (stalling proxies), [`node`] (a real
//! one-node cluster, for the cluster tier), [`readme`] (the READMEs' blocks, run as written).
#![allow(dead_code)]

pub mod control_plane;
pub mod decisions;
pub mod fixtures;
pub mod node;
pub mod operator;
pub mod proxy;
pub mod readme;
pub mod scenario;
pub mod waits;

#[allow(unused_imports)] // each test crate uses its own part
pub use control_plane::*;
#[allow(unused_imports)] // each test crate uses its own part
pub use fixtures::Fixture;
#[allow(unused_imports)] // each test crate uses its own part
pub use operator::*;
#[allow(unused_imports)] // each test crate uses its own part
pub use proxy::*;
#[allow(unused_imports)] // each test crate uses its own part
pub use scenario::*;
#[allow(unused_imports)] // each test crate uses its own part
pub use waits::*;
