//! Roles and the permission table: which role may do which action on which resource.
//!
//! The table below is the only place permissions are defined; the API asks `authorize` and
//! the docs are rendered from `markdown_table` (a test keeps `docs/permissions.md` equal).
//! A grant gives a role on a scope, and covers that scope and everything inside it.
//! This module must never grant by default: anything not in the table is denied.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Invalid, Scope};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Operator,
    Developer,
    Viewer,
    Auditor,
}

impl Role {
    pub const ALL: &'static [Role] = &[
        Role::Admin,
        Role::Operator,
        Role::Developer,
        Role::Viewer,
        Role::Auditor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Result<Role, Invalid> {
        Role::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                Invalid::new(format!(
                    "unknown role {:?}: use admin, operator, developer, viewer or auditor",
                    crate::name::truncate(s)
                ))
            })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    Tenant,
    Environment,
    Account,
    Token,
    Grant,
    Audit,
    Key,
    Secret,
    SecretRequest,
    Route,
    Certificate,
    Replica,
    Artifact,
    Service,
    /// The vulnerability database and the artifact policy (installation-wide).
    Advisory,
    /// The edge's whole configuration, private keys included (for remote edges).
    EdgeConfig,
    System,
}

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Tenant => "tenant",
            Resource::Environment => "environment",
            Resource::Account => "account",
            Resource::Token => "token",
            Resource::Grant => "role",
            Resource::Audit => "audit",
            Resource::Key => "key",
            Resource::Secret => "secret",
            Resource::SecretRequest => "secret-request",
            Resource::Route => "route",
            Resource::Certificate => "certificate",
            Resource::Replica => "replica",
            Resource::EdgeConfig => "edge-config",
            Resource::Artifact => "artifact",
            Resource::Service => "service",
            Resource::Advisory => "advisory",
            Resource::System => "system",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Read,
    Create,
    Delete,
    Verify,
    /// Change settings or state (rotate, enable, disable, retire versions).
    Update,
    /// Use a key: encrypt, decrypt, generate data keys, rewrap.
    Use,
    /// Read a secret's value (listing and metadata are `read`).
    ReadValue,
    /// Destroy for good (after the recovery window).
    Destroy,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Create => "create",
            Action::Delete => "delete",
            Action::Verify => "verify",
            Action::Update => "update",
            Action::Use => "use",
            Action::ReadValue => "read-value",
            Action::Destroy => "destroy",
        }
    }
}

use Action::*;
use Resource::*;
use Role::*;

/// resource x action -> roles allowed. `role create` is granting, `role delete` revoking,
/// `token delete` revoking a token.
pub const PERMISSIONS: &[(Resource, Action, &[Role])] = &[
    (Tenant, Read, &[Admin, Operator, Developer, Viewer, Auditor]),
    (Tenant, Create, &[Admin, Operator]),
    (Tenant, Delete, &[Admin, Operator]),
    (
        Environment,
        Read,
        &[Admin, Operator, Developer, Viewer, Auditor],
    ),
    (Environment, Create, &[Admin, Operator]),
    (Environment, Delete, &[Admin, Operator]),
    (Account, Read, &[Admin, Operator, Viewer, Auditor]),
    (Account, Create, &[Admin]),
    (Account, Delete, &[Admin]),
    (Token, Read, &[Admin, Operator, Auditor]),
    (Token, Create, &[Admin]),
    (Token, Delete, &[Admin]),
    (Grant, Read, &[Admin, Operator, Viewer, Auditor]),
    (Grant, Create, &[Admin]),
    (Grant, Delete, &[Admin]),
    (Audit, Read, &[Admin, Auditor]),
    (Audit, Verify, &[Admin, Auditor]),
    (Key, Read, &[Admin, Operator, Developer, Viewer, Auditor]),
    (Key, Create, &[Admin, Operator]),
    (Key, Update, &[Admin, Operator]),
    (Key, Delete, &[Admin, Operator]),
    (Key, Use, &[Admin, Operator, Developer]),
    (Secret, Read, &[Admin, Operator, Developer, Viewer, Auditor]),
    (Secret, ReadValue, &[Admin, Operator, Developer]),
    (Secret, Create, &[Admin, Operator, Developer]),
    (Secret, Delete, &[Admin, Operator, Developer]),
    (Secret, Destroy, &[Admin, Operator]),
    (
        SecretRequest,
        Read,
        &[Admin, Operator, Developer, Viewer, Auditor],
    ),
    (SecretRequest, Create, &[Admin, Operator, Developer]),
    (SecretRequest, Update, &[Admin, Operator]),
    (Route, Read, &[Admin, Operator, Developer, Viewer, Auditor]),
    (Route, Create, &[Admin, Operator, Developer]),
    (Route, Delete, &[Admin, Operator, Developer]),
    (
        Certificate,
        Read,
        &[Admin, Operator, Developer, Viewer, Auditor],
    ),
    (Certificate, Create, &[Admin, Operator]),
    (Certificate, Update, &[Admin, Operator]),
    (Certificate, Delete, &[Admin, Operator]),
    (
        Replica,
        Read,
        &[Admin, Operator, Developer, Viewer, Auditor],
    ),
    (Replica, Create, &[Admin, Operator]),
    (Replica, Update, &[Admin, Operator]),
    (Replica, Delete, &[Admin, Operator]),
    (
        EdgeConfig,
        Read,
        &[Admin, Operator, Developer, Viewer, Auditor],
    ),
    (EdgeConfig, Update, &[Admin, Operator]),
    (EdgeConfig, ReadValue, &[Admin, Operator]),
    (
        Artifact,
        Read,
        &[Admin, Operator, Developer, Viewer, Auditor],
    ),
    (Artifact, Create, &[Admin, Operator, Developer]),
    (Artifact, Delete, &[Admin, Operator]),
    (
        Service,
        Read,
        &[Admin, Operator, Developer, Viewer, Auditor],
    ),
    (Service, Create, &[Admin, Operator, Developer]),
    (Service, Update, &[Admin, Operator, Developer]),
    (Service, Delete, &[Admin, Operator]),
    (
        Advisory,
        Read,
        &[Admin, Operator, Developer, Viewer, Auditor],
    ),
    (Advisory, Create, &[Admin]),
    (Advisory, Update, &[Admin]),
    (System, Update, &[Admin]),
];

/// True when `role` may do `action` on `resource` (anywhere inside the grant's scope).
pub fn role_allows(role: Role, resource: Resource, action: Action) -> bool {
    PERMISSIONS
        .iter()
        .any(|(r, a, roles)| *r == resource && *a == action && roles.contains(&role))
}

/// A role held on a scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RoleOn {
    pub role: Role,
    pub scope: Scope,
}

/// True when one of `grants` allows `action` on `resource` living in `target`.
pub fn authorize(grants: &[RoleOn], resource: Resource, action: Action, target: &Scope) -> bool {
    grants
        .iter()
        .any(|g| role_allows(g.role, resource, action) && g.scope.contains(target))
}

/// True when the holder of `grants` may know that `target` exists: it may read `resource`
/// there, or it holds a role on something inside it (a developer of `acme/staging` can
/// see that tenant `acme` exists, but not its other environments).
pub fn can_see(grants: &[RoleOn], resource: Resource, target: &Scope) -> bool {
    authorize(grants, resource, Read, target)
        || grants
            .iter()
            .any(|g| role_allows(g.role, resource, Read) && target.contains(&g.scope))
}

/// Renders the permission table as Markdown, for `docs/permissions.md`.
pub fn markdown_table() -> String {
    let mut out = String::from("| resource | action |");
    for r in Role::ALL {
        out.push_str(&format!(" {r} |"));
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---|".repeat(Role::ALL.len()));
    out.push('\n');
    for (res, act, _) in PERMISSIONS {
        out.push_str(&format!("| {} | {} |", res.as_str(), act.as_str()));
        for r in Role::ALL {
            out.push_str(if role_allows(*r, *res, *act) {
                " yes |"
            } else {
                " - |"
            });
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(role: Role, s: &str) -> RoleOn {
        RoleOn {
            role,
            scope: Scope::parse(s).unwrap(),
        }
    }

    #[test]
    fn developer_is_confined_to_its_environment() {
        let g = [on(Developer, "acme/staging")];
        let staging = Scope::parse("acme/staging").unwrap();
        let prod = Scope::parse("acme/production").unwrap();
        assert!(authorize(&g, Environment, Read, &staging));
        assert!(!authorize(&g, Environment, Read, &prod));
        assert!(!authorize(&g, Grant, Create, &staging));
        assert!(can_see(&g, Tenant, &Scope::parse("acme").unwrap()));
        assert!(!can_see(&g, Tenant, &Scope::parse("globex").unwrap()));
    }

    #[test]
    fn auditor_changes_nothing() {
        for (res, act, roles) in PERMISSIONS {
            if roles.contains(&Auditor) {
                assert!(matches!(act, Read | Verify), "{res:?} {act:?}");
            }
        }
    }

    #[test]
    fn viewers_and_auditors_never_see_secret_values() {
        for role in [Viewer, Auditor] {
            assert!(!role_allows(role, Secret, ReadValue));
            assert!(!role_allows(role, Key, Use));
        }
    }

    #[test]
    fn admin_may_do_everything() {
        for (res, act, _) in PERMISSIONS {
            assert!(role_allows(Admin, *res, *act));
        }
    }
}
