//! What to do, as plain functions with no I/O: the middle of the controller's
//! read -> plan -> act -> decide -> write pipeline (`docs/design.md`).
//!
//! - [`plan`]: given a resource and the inputs read so far, the one next step (a read, a
//!   Leen call, or none);
//! - [`outcome`]: given what the plan came to, the [`Decision`] (status, Event, finalizer,
//!   requeue);
//! - [`binding`]: the checked region and ids a resource acts on;
//! - [`status`]: conditions and Leen's mirrored view, as values;
//! - [`reason`]: the one list of reasons; [`retry`]: the delays.

pub mod binding;
pub mod organization;
pub mod outcome;
pub mod plan;
pub mod reason;
pub mod record;
pub mod retry;
pub mod status;

pub use binding::*;
pub use organization::{IN_USE, OrganizationCheck, OrganizationDecision, decide_organization};
pub use outcome::*;
pub use plan::*;
pub use reason::*;
pub use record::{create_intent, found_binding};
pub use retry::*;
pub use status::{MAX_MIRRORED_CHARS, MAX_MIRRORED_DETAILS, rfc3339};

pub use crate::leen::Binding;
