//! Why a condition or an Event is what it is: [`Reason`], the one list of reasons and
//! their kinds (stalled, transient, releasing the finalizer).

/// Why the Ready condition is what it is. Also the reason of the Event emitted. The word
/// shown (conditions, Events, metrics) is the variant's name: adding a reason is one line.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::EnumIter,
)]

pub enum Reason {
    /// Read from Leen, not deleted.
    Synced,
    /// Leen reports the connection DELETED.
    ConnectionDeleted,
    /// Leen does not know the connection.
    NotFound,
    /// Leen refused the key (401/403).
    Unauthorized,
    /// Leen rejected the request (422).
    Rejected,
    /// Leen answered 429.
    RateLimited,
    /// 5xx, timeout or connection error.
    LeenUnavailable,
    /// Leen's answer could not be read.
    InvalidResponse,
    /// Leen answered with a status the API does not document.
    UnexpectedResponse,
    /// The API key Secret, its key, or the default key is missing.
    CredentialsMissing,
    /// The spec cannot be acted on (an id is not a UUID).
    InvalidSpec,
    /// The spec names other ids than the ones the resource was bound to.
    ImmutableFieldChanged,
    /// Leen deleted the connection.
    Deleted,
    /// Leen had no such connection any more (404 on DELETE).
    AlreadyDeleted,
    /// deletionPolicy Orphan: the connection was left in Leen.
    Orphaned,
    /// Another live LeenConnection binds the same connection: released without a call.
    StillReferenced,
    /// Another live LeenConnection binds the same connection (an Event, not a condition
    /// reason): almost always a mistake.
    SharedConnection,
    /// The deletion budget is spent: no call until confirmed, orphaned, or (when so set)
    /// the budget frees.
    DeletionHeld,
    /// Leen reports the connection PENDING: not active yet.
    Pending,
    /// Leen reports the connection PAUSED.
    Paused,
    /// Leen reports a state this operator does not know.
    UnknownState,
    /// An OAuth vendor's connection waits for a person's consent at
    /// status.oauth2AuthorizeUrl.
    AwaitingAuthorization,
    /// Leen reports ACTIVE or PAUSED, spec.state asks the other; being corrected.
    StateDrift,
    /// The operator created the connection (an Event).
    Created,
    /// A create whose answer was lost was found again by identifier (an Event).
    CreateRecovered,
    /// spec.state was enforced on a connection found in the other state (an Event).
    StateCorrected,
    /// Changed vendor credentials were sent to Leen (an Event).
    CredentialsApplied,
    /// The vendor credentials Secret holds something that cannot be credentials.
    CredentialsMalformed,
    /// The resource never got a connection: its deletion has nothing to delete.
    NotCreated,
    /// A create whose outcome is unknown (time-out, 5xx, operator killed) is not proven
    /// absent yet: looked up again, and not repeated before LEEN_CREATE_SETTLE has passed.
    CreatePending,
    /// A connection with the spec's identifier exists in Leen, and this resource did not
    /// create it: not adopted, nothing created, until a person says which.
    IdentifierInUse,
    /// The controller's cache of LeenConnections may be behind the API server (relisting,
    /// its watch failing or silent): no deletion is decided from it until it catches up.
    CacheStale,
    /// The annotation `leen.dev/paused: "true"` stops the operator's work on the resource:
    /// no call to Leen until it is removed (a deletion waits too, unless Orphan).
    ReconcilePaused,
    /// managementPolicy Observe: the resource was released without a call, the
    /// connection left in Leen untouched.
    ObserveOnly,
}

impl Reason {
    /// The CamelCase word used in conditions, Events and metrics: the variant's name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The reason a word names, if any.
    pub fn parse(word: &str) -> Option<Self> {
        word.parse().ok()
    }

    /// Whether only a person can make progress (kstatus `Stalled`).
    pub fn is_stalled(self) -> bool {
        matches!(
            self,
            Reason::Rejected
                | Reason::Unauthorized
                | Reason::CredentialsMissing
                | Reason::CredentialsMalformed
                | Reason::InvalidSpec
                | Reason::ImmutableFieldChanged
                | Reason::IdentifierInUse
                | Reason::DeletionHeld
        )
    }

    /// Whether retrying heals it without anyone acting (Leen down, rate limits, odd answers).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Reason::LeenUnavailable
                | Reason::RateLimited
                | Reason::InvalidResponse
                | Reason::UnexpectedResponse
                | Reason::CacheStale
        )
    }

    /// Whether the controller is still working towards the spec without anyone acting
    /// (kstatus `Reconciling` on a live resource): transient failures, and a connection on
    /// its way to ACTIVE or to spec.state.
    pub fn is_progressing(self) -> bool {
        self.is_transient()
            || matches!(
                self,
                Reason::Pending
                    | Reason::StateDrift
                    | Reason::AwaitingAuthorization
                    | Reason::CreatePending
            )
    }

    /// Whether it is a failure (a Warning Event), rather than a state of the connection.
    pub fn is_failure(self) -> bool {
        self.is_stalled() || self.is_transient() || self == Reason::NotFound
    }

    /// Whether a deletion that ended with this reason is finished.
    pub fn releases_finalizer(self) -> bool {
        matches!(
            self,
            Reason::Deleted
                | Reason::AlreadyDeleted
                | Reason::Orphaned
                | Reason::StillReferenced
                | Reason::NotCreated
                | Reason::ObserveOnly
        )
    }
}
