//! The plan: given a resource and the inputs read so far, the one step that comes next.
//!
//! Both lifecycle paths are small state machines. The controller asks [`plan_sync`] or
//! [`plan_deletion`] what to do, does exactly that (one read, or one Leen call), puts the
//! result into the inputs, and asks again, until the plan says `Done`: then the pure
//! `decide_*` functions turn what it came to into a [`super::Decision`]. Every choice of
//! the controller (which Leen call, whether to read a key, hold, or release) is made here,
//! with no I/O, so that it can be tested by a table and mutation-tested.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    DeletionStep, Observation, Reason, connection_name, create_identifier, held_binding,
    record::found_binding, rfc3339, validate_binding,
};
use crate::{
    budget::{BudgetConfig, Verdict},
    credentials::Credentials,
    leen::{ApiKey, Binding, Connection, CreateRequest, LeenOutcome, UpdateRequest},
    resource::{
        CONFIRM_DELETION_ANNOTATION, CredentialsTest, DeletionPolicy, DesiredState, LeenConnection,
        Region,
    },
};

/// An input a plan needs before it can choose its next step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// The organization resource spec.organizationRef names, resolved (its id and region
    /// put in the working copy's spec), or why it cannot be used.
    Organization,
    /// The API key: the resource's Secret, or the operator's default key.
    ApiKey,
    /// The vendor credentials Secret (only when the spec names one).
    Credentials,
    /// Another live resource that binds the same connection, if any.
    Binders,
    /// The deletion budget's verdict on this DELETE (asking records the start when it is
    /// allowed).
    BudgetVerdict,
    /// Whether the controller's cache follows the API server (binders are read from it).
    CacheFreshness,
}

/// Whether decisions taken from the controller's cache can rely on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// The cache follows the API server.
    Fresh,
    /// It may be behind (relisting, its watch failing or silent): why, in words.
    Stale(String),
}

/// What a look-up by identifier came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Leen lists a live connection with the identifier (its id checked to be a UUID).
    Found(Box<Connection>),
    /// Leen lists no live connection with the identifier.
    Absent,
    /// The look-up failed.
    Failed(LeenOutcome),
}

/// Where a create looks for the connection it may have made already.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FindLostCreate {
    /// Region of the organization.
    pub region: Region,
    /// The organization.
    pub organization: Uuid,
    /// The identifier the create sends (or sent).
    pub identifier: String,
    /// Why it is looked for: this resource's own create intent (`true`), or an identifier
    /// named by the spec (`false`).
    pub intent: bool,
}

/// The inputs of a live resource's plan, read so far (`None`: not read yet), and what the
/// steps taken so far came to.
#[derive(Clone, Debug, Default)]
pub struct SyncInputs {
    /// The time of this reconcile.
    pub now: DateTime<Utc>,
    /// How long a create whose outcome is unknown must be proven absent before another
    /// POST (`LEEN_CREATE_SETTLE`).
    pub create_settle: std::time::Duration,
    /// spec.organizationRef resolved (`Ok`), or the observation saying why it cannot be
    /// used. Asked only when the spec has one.
    pub organization_ref: Option<Result<(), Observation>>,
    /// The API key, or why there is none (the `CredentialsMissing` message).
    pub key: Option<Result<ApiKey, String>>,
    /// The vendor credentials (`Ok(None)`: the spec names no Secret), or the observation
    /// (missing, malformed) that stops any call.
    pub credentials: Option<Result<Option<Credentials>, Observation>>,
    /// What the look-up by identifier came to, when it did not find one.
    pub lookup: Option<Lookup>,
    /// The connection as Leen last returned it in this reconcile (read, found, created or
    /// patched), or the failed call.
    pub observed: Option<LeenOutcome>,
    /// Whether the PATCH was sent in this reconcile.
    pub updated: bool,
    /// Leen's test of the credentials last sent, or why it could not be had.
    pub test: Option<Result<CredentialsTest, String>>,
}

/// The next step of a live resource.
#[derive(Clone, Debug, PartialEq)]
pub enum SyncPlan {
    /// Read an input first.
    Read(Need),
    /// `GET` the bound connection.
    Observe(Binding),
    /// List by identifier before creating (never a blind second POST).
    FindLostCreate(FindLostCreate),
    /// Bind the resource to a connection its own create intent led to (found by
    /// identifier), with no call.
    Bind {
        /// The connection.
        binding: Binding,
        /// As Leen listed it.
        connection: Box<Connection>,
        /// The identifier it was found by.
        identifier: String,
    },
    /// Record the create intent, then `POST` this.
    Create {
        /// Region of the organization.
        region: Region,
        /// The organization.
        organization: Uuid,
        /// What to send.
        request: CreateRequest,
    },
    /// `PATCH` the connection to the spec (state, changed credentials).
    Update {
        /// The connection.
        binding: Binding,
        /// What to send.
        request: UpdateRequest,
    },
    /// `GET .../test` for the credentials last sent.
    Test {
        /// The connection.
        binding: Binding,
        /// The appliedHash of the credentials tested.
        applied_hash: String,
    },
    /// No more calls: decide on this observation.
    Done(Observation),
}

/// The next step for a live (not deleting) resource.
pub fn plan_sync(obj: &LeenConnection, inputs: &SyncInputs) -> SyncPlan {
    if obj.paused() {
        // Nothing is read and nothing is called until the annotation goes.
        return SyncPlan::Done(Observation::Paused);
    }
    if obj.spec.organization_ref.is_some() {
        match &inputs.organization_ref {
            None => return SyncPlan::Read(Need::Organization),
            Some(Err(obs)) => return SyncPlan::Done(obs.clone()),
            Some(Ok(())) => {}
        }
    }
    let binding = match validate_binding(obj) {
        Ok(binding) => binding,
        Err(obs) => return SyncPlan::Done(obs),
    };
    if let Some(Err(message)) = obj.sync_interval() {
        return SyncPlan::Done(Observation::InvalidSpec {
            reason: Reason::InvalidSpec,
            message,
        });
    }
    let observe_only = obj.observe_only();
    match &inputs.key {
        None => return SyncPlan::Read(Need::ApiKey),
        Some(Err(message)) => {
            return SyncPlan::Done(Observation::CredentialsMissing(message.clone()));
        }
        Some(Ok(_)) => {}
    }
    // Observing sends nothing, so it needs no vendor credentials.
    let credentials = match &inputs.credentials {
        _ if observe_only => None,
        None => return SyncPlan::Read(Need::Credentials),
        Some(Err(obs)) => return SyncPlan::Done(obs.clone()),
        Some(Ok(credentials)) => credentials.as_ref(),
    };
    let conn = match (&inputs.observed, binding) {
        (None, Some(binding)) => return SyncPlan::Observe(binding),
        (None, None) => return plan_create(obj, inputs, credentials),
        (Some(LeenOutcome::Success(conn)), _) => conn,
        (Some(failed), _) => return SyncPlan::Done(Observation::Leen(failed.clone())),
    };
    // Observed, so bound (a created or found connection is bound in status first).
    let Some(binding) = held_binding(obj) else {
        return SyncPlan::Done(Observation::Leen(LeenOutcome::Success(conn.clone())));
    };
    if observe_only {
        return SyncPlan::Done(Observation::Leen(LeenOutcome::Success(conn.clone())));
    }
    if !inputs.updated {
        let request = plan_update(obj, conn, credentials);
        if request.state.is_some() || request.credentials.is_some() {
            return SyncPlan::Update { binding, request };
        }
    }
    if inputs.test.is_none()
        && let Some(applied_hash) = untested_credentials(obj)
    {
        return SyncPlan::Test {
            binding,
            applied_hash,
        };
    }
    SyncPlan::Done(Observation::Leen(LeenOutcome::Success(conn.clone())))
}

/// Nothing bound and the spec asks for a connection: look for one the resource may have
/// created already (its intent is recorded), or that its spec identifier names; else
/// create it.
fn plan_create(
    obj: &LeenConnection,
    inputs: &SyncInputs,
    credentials: Option<&Credentials>,
) -> SyncPlan {
    let (Ok(organization), Some(vendor)) = (
        Uuid::parse_str(&obj.spec.organization_id),
        obj.spec.vendor.clone(),
    ) else {
        // validate_binding admits neither case.
        return SyncPlan::Done(Observation::InvalidSpec {
            reason: Reason::InvalidSpec,
            message: "spec.vendor is required when spec.connectionId is unset".to_string(),
        });
    };
    let region = obj.region();
    let identifier = create_identifier(obj);
    let creation = obj.status.as_ref().and_then(|s| s.creation.as_ref());
    let intent = creation.is_some();
    // The look-up goes where the create went, whatever the spec says now.
    let (look_region, look_organization) = creation.map_or((region, organization), |c| {
        recorded_target(c, region, organization)
    });
    if obj.observe_only() {
        return plan_observe_lookup(inputs, (look_region, look_organization), identifier, intent);
    }
    match &inputs.lookup {
        None if intent || obj.spec.identifier.is_some() => {
            SyncPlan::FindLostCreate(FindLostCreate {
                region: look_region,
                organization: look_organization,
                identifier,
                intent,
            })
        }
        Some(Lookup::Found(connection)) if intent => SyncPlan::Bind {
            binding: found_binding(look_region, look_organization, connection),
            connection: connection.clone(),
            identifier,
        },
        // Not this resource's create: another cluster's, the console's, a copied manifest.
        Some(Lookup::Found(connection)) => SyncPlan::Done(identifier_in_use(
            &found_binding(look_region, look_organization, connection),
            &identifier,
        )),
        Some(Lookup::Failed(outcome)) => SyncPlan::Done(Observation::Leen(outcome.clone())),
        Some(Lookup::Absent)
            if let Some(resume_at) = unsettled(creation, inputs.now, inputs.create_settle) =>
        {
            SyncPlan::Done(Observation::CreatePending {
                message: format!(
                    "the create of {identifier:?} may still land at Leen (its answer never came): Leen lists no such connection yet; looking again, and no other create before {}",
                    rfc3339(resume_at)
                ),
                resume_at,
            })
        }
        None | Some(Lookup::Absent) => SyncPlan::Create {
            region,
            organization,
            request: CreateRequest {
                vendor,
                credentials: credentials.cloned(),
                identifier,
                options: obj.spec.options.clone(),
            },
        },
    }
}

/// An observe-only resource with nothing bound never creates. It looks the connection up
/// by identifier, and binds it only when its own recorded create (made while it was
/// managed) led to it: a connection someone else made is not adopted by observing it,
/// since switching to Full would then manage and delete it. The look-up names the
/// connection, so that `spec.connectionId` can be set on purpose.
fn plan_observe_lookup(
    inputs: &SyncInputs,
    (region, organization): (Region, Uuid),
    identifier: String,
    intent: bool,
) -> SyncPlan {
    match &inputs.lookup {
        None => SyncPlan::FindLostCreate(FindLostCreate {
            region,
            organization,
            identifier,
            intent,
        }),
        Some(Lookup::Found(connection)) if intent => SyncPlan::Bind {
            binding: found_binding(region, organization, connection),
            connection: connection.clone(),
            identifier,
        },
        Some(Lookup::Found(connection)) => SyncPlan::Done(identifier_in_use(
            &found_binding(region, organization, connection),
            &identifier,
        )),
        Some(Lookup::Failed(outcome)) => SyncPlan::Done(Observation::Leen(outcome.clone())),
        Some(Lookup::Absent) => SyncPlan::Done(Observation::InvalidSpec {
            reason: Reason::NotFound,
            message: format!(
                "managementPolicy is Observe and Leen lists no connection with identifier {identifier:?} in organization {organization}: nothing to observe, and an observed resource creates nothing. Set spec.connectionId to the connection to observe{}",
                if intent {
                    ""
                } else {
                    ", or managementPolicy: Full to create it"
                }
            ),
        }),
    }
}

/// Where a recorded create went: its region and organization (the spec's for records
/// older than this field).
fn recorded_target(
    creation: &crate::resource::CreationRecord,
    region: Region,
    organization: Uuid,
) -> (Region, Uuid) {
    (
        creation.region.unwrap_or(region),
        creation
            .organization_id
            .as_deref()
            .and_then(|o| Uuid::parse_str(o).ok())
            .unwrap_or(organization),
    )
}

/// Until when a create whose outcome is unknown could still land at Leen: the settle
/// period after its last attempt. `None`: it has settled (or Leen refused it).
fn unsettled(
    creation: Option<&crate::resource::CreationRecord>,
    now: DateTime<Utc>,
    settle: std::time::Duration,
) -> Option<DateTime<Utc>> {
    let last = creation?.last_attempt_time.as_deref()?;
    let last = DateTime::parse_from_rfc3339(last).ok()?.with_timezone(&Utc);
    let until = last + chrono::Duration::from_std(settle).ok()?;
    (now < until).then_some(until)
}

/// A connection found by identifier that this resource's own create intent did not lead
/// to: neither adopted nor duplicated; a person says which.
fn identifier_in_use(found: &Binding, identifier: &str) -> Observation {
    Observation::InvalidSpec {
        reason: Reason::IdentifierInUse,
        message: format!(
            "Leen already has connection {} with identifier {identifier:?}, and this resource did not create it: it was not adopted and no other was created. To adopt it on purpose, set spec.connectionId: {}; to create a new connection, choose another spec.identifier",
            found.connection, found.connection
        ),
    }
}

/// The hash of credentials sent but not tested yet, when the spec names a credentials
/// Secret.
pub fn untested_credentials(obj: &LeenConnection) -> Option<String> {
    obj.spec.credentials_secret_ref.as_ref()?;
    let credentials = obj.status.as_ref()?.credentials.as_ref()?;
    let hash = credentials.applied_hash.clone()?;
    let tested = credentials
        .last_test
        .as_ref()
        .is_some_and(|t| t.applied_hash.as_deref() == Some(hash.as_str()));
    (!tested).then_some(hash)
}

/// What to PATCH to bring a connection Leen returned to the spec: `spec.state` when Leen
/// reports the other of ACTIVE and PAUSED (PENDING and DELETED are not Leen's to be
/// toggled), and credentials whose salted hash differs from the one last sent.
pub fn plan_update(
    obj: &LeenConnection,
    conn: &Connection,
    credentials: Option<&Credentials>,
) -> UpdateRequest {
    let state = obj.spec.state.map(DesiredState::leen_state).filter(|want| {
        let now = conn.state.as_deref().unwrap_or_default();
        matches!(now, "ACTIVE" | "PAUSED") && now != *want
    });
    let applied = obj
        .status
        .as_ref()
        .and_then(|s| s.credentials.as_ref())
        .and_then(|c| c.applied_hash.as_deref());
    let uid = obj.metadata.uid.as_deref().unwrap_or_default();
    let credentials = credentials
        .filter(|c| applied != Some(c.salted_hash(uid).as_str()))
        .cloned();
    UpdateRequest { credentials, state }
}

/// The inputs of a deletion's plan, read so far (`None`: not read yet).
#[derive(Clone, Debug, Default)]
pub struct DeletionInputs {
    /// The time of this reconcile.
    pub now: DateTime<Utc>,
    /// How long a create whose outcome is unknown must be proven absent before the
    /// deletion says `NotCreated` (`LEEN_CREATE_SETTLE`).
    pub create_settle: std::time::Duration,
    /// spec.organizationRef resolved (`Ok`), or the observation saying why it cannot be
    /// used. Asked only when the spec has one and the deletion needs Leen.
    pub organization_ref: Option<Result<(), Observation>>,
    /// The API key, or why there is none.
    pub key: Option<Result<ApiKey, String>>,
    /// Whether the cache the binders are read from follows the API server.
    pub cache: Option<Freshness>,
    /// Whether this resource's DELETE already went out from this process (remembered in
    /// memory in case the status write that records it failed).
    pub sent_before: bool,
    /// Another live resource that binds the same connection (`namespace/name`), if any.
    pub binder: Option<Option<String>>,
    /// What the look-up of a create whose answer was lost came to, when it found nothing.
    pub lookup: Option<Lookup>,
    /// The budget's verdict on this DELETE.
    pub verdict: Option<Verdict>,
    /// What the DELETE came to, once sent.
    pub deleted: Option<LeenOutcome>,
    /// Whether the organization answered on the same base URL with the same key (asked
    /// only after a 404), or what Leen answered instead.
    pub organization: Option<Result<(), LeenOutcome>>,
}

/// The next step of a deletion.
#[derive(Clone, Debug, PartialEq)]
pub enum DeletionPlan {
    /// Read an input first.
    Read(Need),
    /// List by identifier for a create whose answer may have been lost: found, it is
    /// bound and deleted; absent, nothing was created.
    FindLostCreate(FindLostCreate),
    /// Bind the resource to the connection its lost create made (then delete it).
    Bind(Binding),
    /// `DELETE` the bound connection.
    Delete(Binding),
    /// After a 404: show that the organization answers with the same key on the same
    /// base URL, which alone makes the 404 mean "no such connection".
    ProveOrganization {
        /// Region of the organization.
        region: Region,
        /// The organization.
        organization: Uuid,
    },
    /// No (more) calls: decide on this.
    Done(DeletionStep),
}

/// The next step for a resource being deleted (the deletion table of `docs/design.md`).
/// `budget`: the deletion budget's settings, `None` when it is off.
pub fn plan_deletion(
    obj: &LeenConnection,
    inputs: &DeletionInputs,
    budget: Option<&BudgetConfig>,
) -> DeletionPlan {
    if obj.observe_only() && !obj.paused() {
        // Whatever deletionPolicy says: an observed connection is never the operator's to
        // delete.
        return DeletionPlan::Done(DeletionStep::Concluded {
            reason: Reason::ObserveOnly,
            message: format!(
                "managementPolicy is Observe: connection {} was left in Leen untouched (deletionPolicy does not apply to an observed connection)",
                connection_name(obj)
            ),
        });
    }
    if let Some(step) = deletion_shortcut(obj) {
        return DeletionPlan::Done(step);
    }
    if obj.paused() {
        // Paused: the deletion waits, finalizer on, until the annotation goes (Orphan,
        // above, still releases it).
        return DeletionPlan::Done(DeletionStep::Observed(Observation::Paused));
    }
    if obj.spec.organization_ref.is_some() {
        let creation = obj.status.as_ref().and_then(|s| s.creation.as_ref());
        match &inputs.organization_ref {
            // Never bound, no connection named and no create sent: nothing in Leen,
            // whatever the organization.
            None if held_binding(obj).is_none()
                && obj.spec.connection_id.is_none()
                && creation.is_none() =>
            {
                return DeletionPlan::Done(DeletionStep::NotCreated {
                    identifier: create_identifier(obj),
                });
            }
            None => return DeletionPlan::Read(Need::Organization),
            Some(Err(obs)) => return DeletionPlan::Done(DeletionStep::Observed(obs.clone())),
            Some(Ok(())) => {}
        }
    }
    if let Ok(None) = validate_binding(obj) {
        // Nothing bound: was a create ever sent?
        let identifier = create_identifier(obj);
        let Some(creation) = obj.status.as_ref().and_then(|s| s.creation.as_ref()) else {
            // The intent is written before any create goes out: none, nothing was created.
            return DeletionPlan::Done(DeletionStep::NotCreated { identifier });
        };
        match &inputs.key {
            None => return DeletionPlan::Read(Need::ApiKey),
            Some(Err(message)) => {
                return DeletionPlan::Done(DeletionStep::Observed(
                    Observation::CredentialsMissing(message.clone()),
                ));
            }
            Some(Ok(_)) => {}
        }
        let Ok(organization) = Uuid::parse_str(&obj.spec.organization_id) else {
            return DeletionPlan::Done(DeletionStep::NotCreated { identifier });
        };
        let (region, organization) = recorded_target(creation, obj.region(), organization);
        return match &inputs.lookup {
            None => DeletionPlan::FindLostCreate(FindLostCreate {
                region,
                organization,
                identifier: creation.identifier.clone(),
                intent: true,
            }),
            Some(Lookup::Found(connection)) => {
                DeletionPlan::Bind(found_binding(region, organization, connection))
            }
            Some(Lookup::Absent) => {
                match unsettled(Some(creation), inputs.now, inputs.create_settle) {
                    Some(resume_at) => {
                        DeletionPlan::Done(DeletionStep::Observed(Observation::CreatePending {
                            message: format!(
                                "the create of {:?} may still land at Leen (its answer never came) and Leen lists no such connection yet: the finalizer stays until it appears (then it is deleted) or {} passes without it",
                                creation.identifier,
                                rfc3339(resume_at)
                            ),
                            resume_at,
                        }))
                    }
                    None => DeletionPlan::Done(DeletionStep::NotCreated { identifier }),
                }
            }
            Some(Lookup::Failed(outcome)) => {
                DeletionPlan::Done(DeletionStep::Observed(Observation::Leen(outcome.clone())))
            }
        };
    }
    if let Some(held) = held_binding(obj) {
        // "Nobody else binds it" from a cache that may have missed a new binder would
        // delete a connection still in use: nothing is decided until the cache catches up.
        match &inputs.cache {
            None => return DeletionPlan::Read(Need::CacheFreshness),
            Some(Freshness::Stale(why)) => {
                return DeletionPlan::Done(DeletionStep::Concluded {
                    reason: Reason::CacheStale,
                    message: format!(
                        "{why}: whether another resource binds connection {} is not known, so nothing is deleted until the cache catches up",
                        held.connection
                    ),
                });
            }
            Some(Freshness::Fresh) => {}
        }
        match &inputs.binder {
            None => return DeletionPlan::Read(Need::Binders),
            Some(Some(by)) => {
                return DeletionPlan::Done(DeletionStep::StillReferenced { by: by.clone() });
            }
            Some(None) => {}
        }
    }
    let binding = match validate_binding(obj) {
        Ok(Some(binding)) => binding,
        Ok(None) => {
            return DeletionPlan::Done(DeletionStep::Observed(Observation::InvalidSpec {
                reason: Reason::InvalidSpec,
                message: "no connection is bound to this resource".to_string(),
            }));
        }
        Err(obs) => return DeletionPlan::Done(DeletionStep::Observed(obs)),
    };
    match &inputs.key {
        None => return DeletionPlan::Read(Need::ApiKey),
        Some(Err(message)) => {
            return DeletionPlan::Done(DeletionStep::Observed(Observation::CredentialsMissing(
                message.clone(),
            )));
        }
        Some(Ok(_)) => {}
    }
    let Some(budget) = budget.filter(|b| b.max_deletions > 0) else {
        return delete(binding, inputs);
    };
    if deletion_confirmed(obj) {
        // A person's go-ahead: not held, whatever the budget says.
        return delete(binding, inputs);
    }
    // Every DELETE sent counts, retries too: the budget bounds the calls Leen gets. A
    // retry was admitted once, so beyond the budget it waits for the window to free.
    let retry = delete_already_sent(obj) || inputs.sent_before;
    let record = obj.status.as_ref().and_then(|s| s.deletion.as_ref());
    if !budget.resume_held
        && !retry
        && let Some(record) = record.filter(|r| {
            // A record written before `held` existed says it in its outcome.
            r.held || r.outcome.as_deref() == Some(Reason::DeletionHeld.as_str())
        })
    {
        // Held once, held until a person decides: a mistaken prune does not become right
        // because the window moved on, or because another outcome came in between.
        let message = record
            .last_error
            .clone()
            .filter(|_| record.outcome.as_deref() == Some(Reason::DeletionHeld.as_str()))
            .unwrap_or_else(|| held_earlier_message(obj));
        return DeletionPlan::Done(DeletionStep::Observed(Observation::DeletionHeld {
            message,
            resume_at: None,
        }));
    }
    match &inputs.verdict {
        None => DeletionPlan::Read(Need::BudgetVerdict),
        Some(Verdict::Unreadable(problem)) => {
            DeletionPlan::Done(DeletionStep::Observed(Observation::DeletionHeld {
                message: format!(
                    "the deletion budget's record cannot be read ({problem}), so connection {} was not deleted: the budget fails closed. Fix or remove the annotation {} of Lease {}/{} (the count starts again from it), or confirm this deletion: kubectl annotate leenconn {} -n {} leen.dev/confirm-deletion=true",
                    connection_name(obj),
                    crate::budget::STARTED_ANNOTATION,
                    budget.namespace,
                    budget.name,
                    obj.metadata.name.as_deref().unwrap_or_default(),
                    obj.metadata.namespace.as_deref().unwrap_or_default(),
                ),
                resume_at: None,
            }))
        }
        Some(Verdict::Go) => delete(binding, inputs),
        Some(Verdict::Held { started, frees_at }) if retry => {
            DeletionPlan::Done(DeletionStep::Observed(Observation::DeletionHeld {
                message: held_retry_message(obj, budget, *started, *frees_at),
                resume_at: Some(*frees_at),
            }))
        }
        Some(Verdict::Held { started, frees_at }) => {
            DeletionPlan::Done(DeletionStep::Observed(Observation::DeletionHeld {
                message: held_message(obj, budget, *started, *frees_at),
                resume_at: budget.resume_held.then_some(*frees_at),
            }))
        }
    }
}

/// The DELETE, and what its answer needs: a 404 counts only with the organization shown
/// reachable on the same base URL with the same key (any unmatched path of a proxy or a
/// moved API answers FastAPI's `{"detail": "Not Found"}` too).
fn delete(binding: Binding, inputs: &DeletionInputs) -> DeletionPlan {
    let done = |outcome: LeenOutcome| {
        DeletionPlan::Done(DeletionStep::Observed(Observation::Leen(outcome)))
    };
    let Some(outcome) = &inputs.deleted else {
        return DeletionPlan::Delete(binding);
    };
    let LeenOutcome::NotFound { detail } = outcome else {
        return done(outcome.clone());
    };
    match &inputs.organization {
        None => DeletionPlan::ProveOrganization {
            region: binding.region,
            organization: binding.organization,
        },
        Some(Ok(())) => done(outcome.clone()),
        Some(Err(answer)) => done(LeenOutcome::Unexpected {
            status: 404,
            detail: format!(
                "{detail}; but organization {} did not answer on the same URL with the same key ({}), so the 404 proves nothing about connection {}",
                binding.organization,
                organization_answer(answer),
                binding.connection
            ),
        }),
    }
}

fn organization_answer(answer: &LeenOutcome) -> String {
    match answer {
        LeenOutcome::NotFound { detail } => format!("404: {detail}"),
        other => super::describe_failure(other),
    }
}

/// What deleting the resource comes to before reading any input: Orphan, or a deletion
/// that a previous attempt already confirmed. `None`: Leen has to be called.
pub fn deletion_shortcut(obj: &LeenConnection) -> Option<DeletionStep> {
    if obj.spec.deletion_policy == DeletionPolicy::Orphan {
        return Some(DeletionStep::Orphan);
    }
    let outcome = obj.status.as_ref()?.deletion.as_ref()?.outcome.as_deref()?;
    [Reason::Deleted, Reason::AlreadyDeleted]
        .into_iter()
        .find(|r| r.as_str() == outcome)
        .map(DeletionStep::AlreadyConfirmed)
}

/// Whether a person confirmed this deletion (`leen.dev/confirm-deletion: "true"`).
pub fn deletion_confirmed(obj: &LeenConnection) -> bool {
    obj.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONFIRM_DELETION_ANNOTATION))
        .is_some_and(|v| v.trim() == "true")
}

/// Whether a previous attempt of this deletion already sent a DELETE to Leen (which the
/// budget counted). Only the record's `deleteSent` says so: an outcome such as
/// `LeenUnavailable` may come from a look-up as well.
pub fn delete_already_sent(obj: &LeenConnection) -> bool {
    obj.status
        .as_ref()
        .and_then(|s| s.deletion.as_ref())
        .is_some_and(|r| r.delete_sent)
}

/// The message of a deletion the budget held earlier, when the record no longer says why.
pub fn held_earlier_message(obj: &LeenConnection) -> String {
    let ns = obj.metadata.namespace.as_deref().unwrap_or_default();
    let name = obj.metadata.name.as_deref().unwrap_or_default();
    format!(
        "the deletion budget held this deletion earlier, so connection {} was not deleted; it waits for a person. If this deletion is meant: kubectl annotate leenconn {name} -n {ns} leen.dev/confirm-deletion=true. If it came from a mistaken prune: kubectl patch leenconn {name} -n {ns} --type merge -p '{{\"spec\":{{\"deletionPolicy\":\"Orphan\"}}}}' releases it without a call",
        connection_name(obj)
    )
}

/// The message of a retry of a DELETE (sent once, counted) that the spent budget holds:
/// it goes out again when the window frees.
pub fn held_retry_message(
    obj: &LeenConnection,
    config: &BudgetConfig,
    started: u32,
    frees_at: DateTime<Utc>,
) -> String {
    format!(
        "deletion budget spent: {started} DELETE calls to Leen started in the last {} (LEEN_MAX_DELETIONS={}), retries included, so the DELETE of connection {} is not sent again yet; it was sent before, and it is retried on its own when the budget frees at {}",
        humantime::format_duration(config.window),
        config.max_deletions,
        connection_name(obj),
        rfc3339(frees_at)
    )
}

/// The message of a deletion the budget holds: what happened, and both ways on.
pub fn held_message(
    obj: &LeenConnection,
    config: &BudgetConfig,
    started: u32,
    frees_at: DateTime<Utc>,
) -> String {
    let ns = obj.metadata.namespace.as_deref().unwrap_or_default();
    let name = obj.metadata.name.as_deref().unwrap_or_default();
    let window = humantime::format_duration(config.window);
    let then = if config.resume_held {
        format!(
            "it proceeds on its own when the budget frees at {}",
            rfc3339(frees_at)
        )
    } else {
        "it waits for a person".to_string()
    };
    format!(
        "deletion budget spent: {started} DELETE calls to Leen started in the last {window} (LEEN_MAX_DELETIONS={}, LEEN_DELETION_WINDOW={window}), so connection {} was not deleted; {then}. If this deletion is meant: kubectl annotate leenconn {name} -n {ns} leen.dev/confirm-deletion=true. If it came from a mistaken prune: kubectl patch leenconn {name} -n {ns} --type merge -p '{{\"spec\":{{\"deletionPolicy\":\"Orphan\"}}}}' releases it without a call, and re-creating it adopts the same connection",
        config.max_deletions,
        connection_name(obj)
    )
}
