//! Projects as the engine sees them: every container and sandbox belongs to one, and a caller scoped to a
//! project neither sees nor touches another project's objects.

use husk_core::{ContainerRecord, Error, Result, SandboxRecord};

use crate::Engine;

/// The project of objects made without one (husk's own CLI, Zun's API without authentication).
pub const DEFAULT_PROJECT: &str = "default";

/// Which projects' objects a caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every project (local root, an administrator asking for all projects).
    All,
    /// Only this project (by ID).
    Project(String),
}

impl Scope {
    /// Whether an object of `project` is visible in this scope. Objects stored before projects existed have an
    /// empty project and belong to the default one.
    pub fn allows(&self, project: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Project(p) => p == project || (project.is_empty() && p == DEFAULT_PROJECT),
        }
    }
}

/// The project a create request names, checked (an ID of letters, digits, `-` and `_`), or the default one.
pub(crate) fn project_of(requested: Option<&str>) -> Result<String> {
    match requested {
        None | Some("") => Ok(DEFAULT_PROJECT.to_string()),
        Some(p)
            if p.len() <= 64
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            Ok(p.to_string())
        }
        Some(p) => Err(Error::invalid(
            "project",
            format!("invalid project ID {p:?}: use up to 64 letters, digits, '-' or '_'"),
        )),
    }
}

impl Engine {
    /// The container named `key` or with ID `key`, if `scope` may see it. Unlike [`Engine::container`], no ID
    /// prefixes are accepted in a project scope, so a project learns nothing of other projects' IDs.
    pub fn container_in(&self, scope: &Scope, key: &str) -> Result<ContainerRecord> {
        let not_found = || Error::not_found(format!("container: {key}"));
        let found = match scope {
            Scope::All => self.inner.store.find::<ContainerRecord>(key)?,
            Scope::Project(_) => self
                .inner
                .store
                .find::<ContainerRecord>(key)
                .unwrap_or(None)
                .filter(|c| c.config.name == key || c.config.id == key),
        };
        found
            .filter(|c| scope.allows(&c.project))
            .ok_or_else(not_found)
    }

    /// The sandbox named `key` or with ID `key`, if `scope` may see it.
    pub fn sandbox_in(&self, scope: &Scope, key: &str) -> Result<SandboxRecord> {
        let not_found = || Error::not_found(format!("sandbox: {key}"));
        let found = match scope {
            Scope::All => self.inner.store.find::<SandboxRecord>(key)?,
            Scope::Project(_) => self
                .inner
                .store
                .find::<SandboxRecord>(key)
                .unwrap_or(None)
                .filter(|s| s.config.name == key || s.config.id == key),
        };
        found
            .filter(|s| scope.allows(&s.project))
            .ok_or_else(not_found)
    }

    /// The containers `scope` may see (only active ones unless `all`), newest first.
    pub fn list_containers_in(&self, scope: &Scope, all: bool) -> Result<Vec<ContainerRecord>> {
        let mut list = self.list_containers(all)?;
        list.retain(|c| scope.allows(&c.project));
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_project_ids() {
        assert!(Scope::All.allows("x"));
        let p = Scope::Project("a".into());
        assert!(p.allows("a"));
        assert!(!p.allows("b"));
        assert!(!p.allows(""));
        assert!(Scope::Project(DEFAULT_PROJECT.into()).allows(""));
        assert_eq!(project_of(None).unwrap(), DEFAULT_PROJECT);
        assert_eq!(project_of(Some("p-1_x")).unwrap(), "p-1_x");
        assert_eq!(
            project_of(Some("a/b")).unwrap_err().field.as_deref(),
            Some("project")
        );
    }
}
