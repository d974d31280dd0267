//! What a resource is bound to in Leen: the checked region and ids, the create
//! identifier, and the binding record in status.

use uuid::Uuid;

use super::{Observation, Reason};
use crate::{
    leen::Binding,
    resource::{BoundConnection, LeenConnection, LeenConnectionStatus, is_dns1123_subdomain},
    text::clip,
};

/// The region and ids of a resource, checked: both ids are UUIDs, Secret names are DNS-1123
/// names, a resource to be created names a vendor, and region and ids are the ones the
/// resource was first bound to. `Ok(None)`: nothing is bound yet and the spec asks the
/// operator to create the connection.
pub fn validate_binding(obj: &LeenConnection) -> Result<Option<Binding>, Observation> {
    let invalid = |message: String| Observation::InvalidSpec {
        reason: Reason::InvalidSpec,
        message,
    };
    let parse = |field: &str, value: &str| {
        Uuid::parse_str(value).map_err(|_| invalid(format!("spec.{field} {value:?} is not a UUID")))
    };
    if obj.spec.organization_id.is_empty() {
        return Err(invalid(
            "spec.organizationId or spec.organizationRef is required".to_string(),
        ));
    }
    let organization = parse("organizationId", &obj.spec.organization_id)?;
    let spec_connection = obj
        .spec
        .connection_id
        .as_deref()
        .map(|id| parse("connectionId", id))
        .transpose()?;
    for (field, name) in [
        (
            "apiKeySecretRef",
            obj.spec.api_key_secret_ref.as_ref().map(|r| &r.name),
        ),
        (
            "credentialsSecretRef",
            obj.spec.credentials_secret_ref.as_ref().map(|r| &r.name),
        ),
    ] {
        if let Some(name) = name
            && !is_dns1123_subdomain(name)
        {
            return Err(invalid(format!(
                "spec.{field}.name {name:?} is not a Secret name (a DNS-1123 subdomain)"
            )));
        }
    }
    if let Some(vendor) = &obj.spec.vendor
        && !is_vendor_name(vendor)
    {
        return Err(invalid(format!(
            "spec.vendor {:?} is not a Leen vendor name (upper case letters, digits and _, starting with a letter)",
            clip(vendor)
        )));
    }
    let bound = obj
        .status
        .as_ref()
        .and_then(|s| s.bound_connection.as_ref());
    let Some(bound) = bound else {
        return match spec_connection {
            Some(connection) => Ok(Some(Binding {
                region: obj.region(),
                organization,
                connection,
            })),
            None if obj.spec.vendor.is_none() => Err(invalid(
                "spec.vendor is required when spec.connectionId is unset (the operator creates the connection); set connectionId to adopt an existing one".to_string(),
            )),
            None => Ok(None),
        };
    };
    let same = |a: &str, b: &Uuid| Uuid::parse_str(a).is_ok_and(|a| a == *b);
    let bound_connection = Uuid::parse_str(&bound.connection_id).ok();
    let connection = spec_connection.or(bound_connection);
    let same_region = bound.region.is_none_or(|r| r == obj.region());
    let same_connection = connection.is_some_and(|c| same(&bound.connection_id, &c));
    if !same(&bound.organization_id, &organization) || !same_connection || !same_region {
        let bound_region = bound.region.unwrap_or(obj.region());
        let named = connection.map_or_else(|| "none".to_string(), |c| c.to_string());
        return Err(Observation::InvalidSpec {
            reason: Reason::ImmutableFieldChanged,
            message: format!(
                "spec names region {} organization {organization} connection {named}, but this resource is bound to region {} organization {} connection {}; region and ids are immutable: restore them, or create a new LeenConnection",
                obj.region().as_str(),
                bound_region.as_str(),
                bound.organization_id,
                bound.connection_id
            ),
        });
    }
    Ok(connection.map(|connection| Binding {
        region: obj.region(),
        organization,
        connection,
    }))
}

/// Whether `name` has the shape of a Leen vendor name: `^[A-Z][A-Z0-9_]*$`.
pub fn is_vendor_name(name: &str) -> bool {
    name.len() <= 128
        && name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The binding a resource holds: the one in status, else its spec's when valid. This is
/// what the binding labels say.
pub fn held_binding(obj: &LeenConnection) -> Option<Binding> {
    if let Some(bound) = obj
        .status
        .as_ref()
        .and_then(|s| s.bound_connection.as_ref())
    {
        return Some(Binding {
            region: bound.region.unwrap_or(obj.region()),
            organization: Uuid::parse_str(&bound.organization_id).ok()?,
            connection: Uuid::parse_str(&bound.connection_id).ok()?,
        });
    }
    validate_binding(obj).ok().flatten()
}

/// The connection id a resource stands for, for messages: the bound one, else the spec's.
pub fn connection_name(obj: &LeenConnection) -> String {
    obj.status
        .as_ref()
        .and_then(|s| s.bound_connection.as_ref())
        .map(|b| b.connection_id.clone())
        .or_else(|| obj.spec.connection_id.clone())
        .unwrap_or_else(|| "(not created)".to_string())
}

/// The identifier a create sends: the one recorded when the create started, else the
/// spec's, else `<namespace>/<name>/<uid>` (stable, and unique to this resource).
pub fn create_identifier(obj: &LeenConnection) -> String {
    if let Some(recorded) = obj
        .status
        .as_ref()
        .and_then(|s| s.creation.as_ref())
        .map(|c| c.identifier.clone())
    {
        return recorded;
    }
    obj.spec.identifier.clone().unwrap_or_else(|| {
        format!(
            "{}/{}/{}",
            obj.metadata.namespace.as_deref().unwrap_or(""),
            obj.metadata.name.as_deref().unwrap_or(""),
            obj.metadata.uid.as_deref().unwrap_or("")
        )
    })
}

/// Binds a status to a connection (created, found again, or adopted): the binding record,
/// `connectionId`, and no create in progress any more.
pub fn bind_status(status: &mut LeenConnectionStatus, binding: &Binding) {
    status.bound_connection = Some(BoundConnection {
        region: Some(binding.region),
        organization_id: binding.organization.to_string(),
        connection_id: binding.connection.to_string(),
    });
    status.connection_id = Some(binding.connection.to_string());
    status.creation = None;
}
