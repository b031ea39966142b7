//! The labels and names that mark engine objects as husk's, and which husk daemon's.
//!
//! Engine names are `<instance>_c_<container name>` for containers and `<instance>_s_<sandbox name>` for infra
//! containers. Instance names have no `_` and husk names start with a letter or digit, so names of different
//! instances and kinds never collide.

use std::collections::HashMap;

/// Which husk daemon instance made the object.
pub const INSTANCE: &str = "io.husk.instance";
/// [`Role`] of the object.
pub const ROLE: &str = "io.husk.role";
/// The husk sandbox the object belongs to (infra containers and containers in sandbox mode).
pub const SANDBOX_ID: &str = "io.husk.sandbox-id";
/// The husk container ID (containers only).
pub const CONTAINER_ID: &str = "io.husk.container-id";
/// The husk name of the container or sandbox.
pub const NAME: &str = "io.husk.name";

/// What an engine container is to husk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A sandbox's infra container.
    Infra,
    /// A husk container.
    Container,
}

impl Role {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Infra => "infra",
            Role::Container => "container",
        }
    }

    /// Reads a label value.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "infra" => Some(Role::Infra),
            "container" => Some(Role::Container),
            _ => None,
        }
    }
}

/// The engine name of a husk container.
pub fn container_name(instance: &str, name: &str) -> String {
    format!("{instance}_c_{name}")
}

/// The engine name of a sandbox's infra container.
pub fn infra_name(instance: &str, sandbox_name: &str) -> String {
    format!("{instance}_s_{sandbox_name}")
}

/// The labels of an infra container.
pub fn infra_labels(
    instance: &str,
    sandbox_id: &str,
    sandbox_name: &str,
) -> HashMap<String, String> {
    HashMap::from([
        (INSTANCE.to_string(), instance.to_string()),
        (ROLE.to_string(), Role::Infra.as_str().to_string()),
        (SANDBOX_ID.to_string(), sandbox_id.to_string()),
        (NAME.to_string(), sandbox_name.to_string()),
    ])
}

/// The labels of a container: the user's, then husk's (which win).
pub fn container_labels<'a>(
    instance: &str,
    container_id: &str,
    name: &str,
    sandbox_id: Option<&str>,
    user: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = user
        .into_iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(INSTANCE.to_string(), instance.to_string());
    labels.insert(ROLE.to_string(), Role::Container.as_str().to_string());
    labels.insert(CONTAINER_ID.to_string(), container_id.to_string());
    labels.insert(NAME.to_string(), name.to_string());
    if let Some(s) = sandbox_id {
        labels.insert(SANDBOX_ID.to_string(), s.to_string());
    }
    labels
}

/// A `label` filter for the engine's list and events APIs: `key=value` pairs, all of which must match.
pub fn filter(pairs: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_string(),
        pairs.iter().map(|(k, v)| format!("{k}={v}")).collect(),
    )])
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn names_of_kinds_and_instances_do_not_collide() {
        assert_ne!(container_name("husk", "web"), infra_name("husk", "web"));
        assert_ne!(container_name("a", "c_x"), container_name("a-c", "x"));
        assert_eq!(infra_name("husk", "pod1"), "husk_s_pod1");
    }

    #[test]
    fn husk_labels_win_over_user_labels() {
        let user = BTreeMap::from([
            (ROLE.to_string(), "infra".to_string()),
            ("app".to_string(), "web".to_string()),
        ]);
        let l = container_labels("i1", "abc", "web", Some("sb"), &user);
        assert_eq!(l[ROLE], "container");
        assert_eq!(l["app"], "web");
        assert_eq!(l[SANDBOX_ID], "sb");
        assert_eq!(Role::parse(&l[ROLE]), Some(Role::Container));
    }

    #[test]
    fn filters_are_key_value_pairs() {
        let f = filter(&[(INSTANCE, "i1"), (ROLE, "infra")]);
        assert_eq!(
            f["label"],
            vec![
                "io.husk.instance=i1".to_string(),
                "io.husk.role=infra".to_string()
            ]
        );
    }
}
