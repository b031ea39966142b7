//! The keys a settings type takes, read from its own `Deserialize` implementation: a probing deserializer
//! answers each request of the type with a placeholder value of the kind asked for and writes down what was
//! asked. Nothing is listed by hand, so the list cannot drift from the types: `--check-config`'s "did you
//! mean" hints and the generated reference (`docs/configuration.md`) both come from here.

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};

/// One key of a settings file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// Its dotted path (`vm.accel`; `NAME` stands for a key of the user's choosing in a table of tables).
    pub path: String,
    /// Its TOML type: `string`, `integer`, `float`, `boolean`, `array of ...` or `table`.
    pub kind: String,
    /// Whether it may be left unset with no value standing in (an `Option`).
    pub optional: bool,
    /// The Rust struct that holds it, and its field there (for the field's documentation).
    pub field: Option<(&'static str, &'static str)>,
}

/// Every key `T` takes, parents before their children, in the order of the type's fields.
pub fn keys<T: DeserializeOwned>() -> Vec<Key> {
    let mut keys = Vec::new();
    let mut kind = Kind::default();
    // The probe only fails on a type it cannot describe (an enum, `deserialize_any`): a bug in a settings type
    // that the tests of this module catch.
    let _ = T::deserialize(Probe {
        path: String::new(),
        keys: &mut keys,
        kind: &mut kind,
    });
    keys
}

/// The known key closest to an unknown `key` (a dotted path): a key of the same table spelled nearly the same,
/// else a key of that name in another table (`bridge` at the top is `network.bridge`).
pub fn suggest<T: DeserializeOwned>(key: &str) -> Option<String> {
    let known = keys::<T>();
    let (table, name) = key.rsplit_once('.').unwrap_or(("", key));
    let parent = |k: &Key| k.path.rsplit_once('.').map_or("", |(t, _)| t).to_string();
    let leaf = |k: &Key| k.path.rsplit('.').next().unwrap_or("").to_string();
    // `NAME` in a known table stands for any name the user gave (`cri.runtimes.kata`).
    let same_table_as_key = |k: &Key| {
        let p = parent(k);
        p.split('.').count() == table.split('.').count()
            && p.split('.')
                .zip(table.split('.'))
                .all(|(a, b)| a == b || a == "NAME")
    };
    let same_table = known
        .iter()
        .filter(|k| same_table_as_key(k))
        .map(|k| (distance(name, &leaf(k)), leaf(k)))
        .filter(|(d, l)| *d <= (l.len() / 3).max(1) || (name.len() >= 3 && l.starts_with(name)))
        .min_by_key(|(d, _)| *d)
        .map(|(_, l)| {
            if table.is_empty() {
                l
            } else {
                format!("{table}.{l}")
            }
        });
    same_table.or_else(|| {
        known
            .iter()
            .find(|k| leaf(k) == name && k.path != key)
            .map(|k| k.path.clone())
    })
}

/// Edits (insertions, deletions, substitutions, swaps of neighbours) between `a` and `b`.
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// What the probe learnt of one value.
#[derive(Debug, Default)]
struct Kind {
    name: String,
    optional: bool,
}

/// The probing deserializer for the value at `path`.
struct Probe<'a> {
    path: String,
    keys: &'a mut Vec<Key>,
    kind: &'a mut Kind,
}

/// Why the probe stopped.
#[derive(Debug)]
struct ProbeError(String);

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProbeError {}

impl de::Error for ProbeError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        ProbeError(msg.to_string())
    }
}

impl Probe<'_> {
    fn child(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }
}

macro_rules! probe_scalars {
    ($($method:ident => $kind:literal, $visit:ident($value:expr);)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
                self.kind.name = $kind.to_string();
                visitor.$visit($value)
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = ProbeError;

    probe_scalars! {
        deserialize_bool => "boolean", visit_bool(false);
        deserialize_i8 => "integer", visit_i64(0);
        deserialize_i16 => "integer", visit_i64(0);
        deserialize_i32 => "integer", visit_i64(0);
        deserialize_i64 => "integer", visit_i64(0);
        deserialize_u8 => "integer", visit_u64(0);
        deserialize_u16 => "integer", visit_u64(0);
        deserialize_u32 => "integer", visit_u64(0);
        deserialize_u64 => "integer", visit_u64(0);
        deserialize_f32 => "float", visit_f64(0.0);
        deserialize_f64 => "float", visit_f64(0.0);
        deserialize_char => "string", visit_char('x');
        deserialize_str => "string", visit_str("");
        deserialize_string => "string", visit_str("");
        deserialize_bytes => "string", visit_bytes(&[]);
        deserialize_byte_buf => "string", visit_bytes(&[]);
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        self.kind.optional = true;
        visitor.visit_some(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        let mut element = Kind::default();
        let value = visitor.visit_seq(OneElement {
            probe: Some(Probe {
                path: format!("{}[]", self.path),
                keys: self.keys,
                kind: &mut element,
            }),
        })?;
        self.kind.name = format!("array of {}s", element.name);
        Ok(value)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        // A table whose keys the user names (`[cri.runtimes.NAME]`): one entry, named NAME.
        self.kind.name = "table".into();
        let path = self.child("NAME");
        visitor.visit_map(Entries {
            names: &["NAME"],
            next: 0,
            paths: vec![path],
            keys: self.keys,
            owner: None,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        self.kind.name = "table".into();
        let paths = fields.iter().map(|f| self.child(f)).collect();
        visitor.visit_map(Entries {
            names: fields,
            next: 0,
            paths,
            keys: self.keys,
            owner: Some(name),
        })
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_unit()
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_unit()
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, ProbeError> {
        Err(ProbeError(format!(
            "{}: a self-describing value cannot be probed",
            self.path
        )))
    }

    serde::forward_to_deserialize_any! {
        unit_struct tuple tuple_struct enum identifier
    }
}

/// A sequence of one probed element.
struct OneElement<'a> {
    probe: Option<Probe<'a>>,
}

impl<'de> de::SeqAccess<'de> for OneElement<'_> {
    type Error = ProbeError;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, ProbeError> {
        match self.probe.take() {
            Some(probe) => seed.deserialize(probe).map(Some),
            None => Ok(None),
        }
    }
}

/// The entries of a probed table: each field named, its value probed and written down as a key.
struct Entries<'a> {
    names: &'static [&'static str],
    next: usize,
    paths: Vec<String>,
    keys: &'a mut Vec<Key>,
    owner: Option<&'static str>,
}

impl<'de> de::MapAccess<'de> for Entries<'_> {
    type Error = ProbeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ProbeError> {
        match self.names.get(self.next) {
            Some(name) => seed.deserialize((*name).into_deserializer()).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ProbeError> {
        let i = self.next;
        self.next += 1;
        // The key goes in before its children, and gets its kind once they are known.
        let at = self.keys.len();
        self.keys.push(Key {
            path: self.paths[i].clone(),
            kind: String::new(),
            optional: false,
            field: self.owner.map(|o| (o, self.names[i])),
        });
        let mut kind = Kind::default();
        let value = seed.deserialize(Probe {
            path: self.paths[i].clone(),
            keys: self.keys,
            kind: &mut kind,
        })?;
        self.keys[at].kind = kind.name;
        self.keys[at].optional = kind.optional;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DaemonConfig;

    fn key(path: &str) -> Key {
        keys::<DaemonConfig>()
            .into_iter()
            .find(|k| k.path == path)
            .unwrap_or_else(|| panic!("no key {path}"))
    }

    #[test]
    fn keys_come_with_their_types_and_fields() {
        let root = key("root");
        assert_eq!(root.kind, "string");
        assert_eq!(root.field, Some(("DaemonConfig", "root")));
        assert_eq!(key("sandbox_pool").kind, "integer");
        assert_eq!(key("cgroup_favordynmods").kind, "boolean");
        assert_eq!(key("drivers").kind, "array of strings");
        assert_eq!(key("network").kind, "table");
        assert_eq!(key("network.cni_plugin_dirs").kind, "array of strings");
        assert_eq!(key("images.limits.max_layer_size").kind, "integer");
        let kernel = key("vm.kernel");
        assert_eq!((kernel.kind.as_str(), kernel.optional), ("string", true));
        assert_eq!(key("cri.runtimes").kind, "table");
        assert_eq!(
            key("cri.runtimes.NAME.driver").field,
            Some(("CriRuntime", "driver"))
        );
        assert_eq!(
            key("cri.registry.mirrors.NAME.endpoints").kind,
            "array of strings"
        );
        let all = keys::<DaemonConfig>();
        let position = |p: &str| all.iter().position(|k| k.path == p).unwrap();
        assert!(position("vm") < position("vm.accel"), "parents first");
    }

    #[test]
    fn every_key_probed_is_a_key_the_file_takes() {
        // Each probed key, set alone in a file, is accepted by the real parser (unknown keys are refused).
        for k in keys::<DaemonConfig>() {
            if k.kind == "table" || k.path.contains("[]") {
                continue;
            }
            let value = match k.kind.as_str() {
                "string" => "\"x\"",
                "integer" => "1",
                "boolean" => "true",
                "float" => "1.0",
                _ => "[]",
            };
            let (table, leaf) = k.path.rsplit_once('.').unwrap_or(("", &k.path));
            let text = if table.is_empty() {
                format!("{leaf} = {value}\n")
            } else {
                format!("[{table}]\n{leaf} = {value}\n")
            };
            toml::from_str::<DaemonConfig>(&text)
                .unwrap_or_else(|e| panic!("{}: {text}: {e}", k.path));
        }
    }

    #[test]
    fn suggestions_are_near_misses_or_the_same_name_elsewhere() {
        assert_eq!(
            suggest::<DaemonConfig>("vm.acel").as_deref(),
            Some("vm.accel")
        );
        assert_eq!(
            suggest::<DaemonConfig>("run-root").as_deref(),
            Some("run_root")
        );
        assert_eq!(
            suggest::<DaemonConfig>("bridge").as_deref(),
            Some("network.bridge")
        );
        assert_eq!(
            suggest::<DaemonConfig>("images.limits.max_layer").as_deref(),
            Some("images.limits.max_layer_size")
        );
        assert_eq!(
            suggest::<DaemonConfig>("cri.runtimes.kata.drivr").as_deref(),
            Some("cri.runtimes.kata.driver")
        );
        assert_eq!(suggest::<DaemonConfig>("colour"), None);
        assert_eq!(distance("ab", "ba"), 1);
        assert_eq!(distance("", "abc"), 3);
    }
}
