//! `docs/configuration.md`, made from the settings types: their keys and types (`schema`), their defaults
//! (`DaemonConfig::default()`, serialized) and the doc comment of each field (read from `config.rs`). The test
//! below fails when the committed page differs; `HUSK_WRITE_DOCS=1` makes it write the page instead.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::DaemonConfig;
use super::schema::{Key, keys};

/// The source the doc comments are read from.
const SOURCE: &str = include_str!("../config.rs");

/// The doc comment of every field of every struct in `source`, by (struct, field), joined into one line.
fn field_docs(source: &str) -> BTreeMap<(String, String), String> {
    let mut docs = BTreeMap::new();
    let mut owner = String::new();
    let mut doc: Vec<&str> = Vec::new();
    for line in source.lines().map(str::trim) {
        if let Some(text) = line.strip_prefix("///") {
            doc.push(text.trim());
            continue;
        }
        if line.starts_with("#[") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("pub struct ") {
            owner = rest
                .split(|c: char| !c.is_alphanumeric() && c != '_')
                .next()
                .unwrap_or("")
                .to_string();
        } else if let Some((field, _)) = line.strip_prefix("pub ").and_then(|r| r.split_once(':'))
            && !owner.is_empty()
            && field.chars().all(|c| c.is_alphanumeric() || c == '_')
        {
            docs.insert((owner.clone(), field.to_string()), doc.join(" "));
        } else if line == "}" {
            owner.clear();
        }
        doc.clear();
    }
    docs
}

/// The default of `path` in the serialized defaults, as TOML writes it; `None` when it has none.
fn default_of(defaults: &toml::Value, path: &str) -> Option<String> {
    let mut value = defaults;
    for part in path.split('.') {
        value = value.get(part)?;
    }
    Some(format!("`{value}`"))
}

/// The default of a key in a table the defaults do not have (`[cri.runtimes.NAME]`): its value in a file
/// with that table alone, `None` when such a file is refused (the key is then required).
fn default_in_own_table(path: &str) -> Option<String> {
    let (table, _) = path.rsplit_once('.')?;
    let config: DaemonConfig = toml::from_str(&format!("[{table}]\n")).ok()?;
    default_of(&toml::Value::try_from(config).ok()?, path)
}

/// A table's words without the table's name they may start with (`` `[images.limits]`: what ... ``).
fn intro(section: &str, doc: &str) -> String {
    let text = doc
        .strip_prefix(&format!("`[{section}]`"))
        .map(|t| t.trim_start_matches([':', '.', ' ']))
        .unwrap_or(doc);
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The page.
pub fn render() -> String {
    let docs = field_docs(SOURCE);
    let defaults = toml::Value::try_from(DaemonConfig::default()).expect("serialize the defaults");
    let all = keys::<DaemonConfig>();
    let doc_of = |k: &Key| -> String {
        match k.field {
            Some((owner, field)) => docs
                .get(&(owner.to_string(), field.to_string()))
                .cloned()
                .unwrap_or_default(),
            // `NAME` in a table of tables: the table's own words.
            None => {
                let parent = k.path.rsplit_once('.').map_or("", |(p, _)| p);
                all.iter()
                    .find(|p| p.path == parent)
                    .and_then(|p| p.field)
                    .and_then(|(o, f)| docs.get(&(o.to_string(), f.to_string())).cloned())
                    .unwrap_or_default()
            }
        }
    };
    let parent = |path: &str| {
        path.rsplit_once('.')
            .map_or(String::new(), |(p, _)| p.to_string())
    };
    let mut sections: Vec<(String, String)> = vec![(String::new(), String::new())];
    for k in all.iter().filter(|k| k.kind == "table") {
        sections.push((k.path.clone(), doc_of(k)));
    }
    let mut page = String::from(
        "# Configuration reference\n\n\
         <!-- Made from crates/husk/src/config.rs by its reference test; do not edit. Regenerate with\n\
         HUSK_WRITE_DOCS=1 cargo nextest run --target x86_64-unknown-linux-gnu -p husk --bin husk reference -->\n\n\
         `husk daemon` reads its settings from `/etc/husk/husk.toml` (another file with `--config FILE`); its\n\
         flags win over the file. Every key may be left out and then has the default below. A key husk does not\n\
         know is an error, as is a value of the wrong type or one husk cannot use: `husk daemon --check-config\n\
         [--config FILE]` reads a file as the daemon would, names the first key that is wrong and why (with a\n\
         \"did you mean\" for a misspelt key) and exits non-zero, without starting anything.\n\n\
         `NAME` in a table's name stands for a name of your choosing (a runtime handler, a registry's host).\n",
    );
    for (section, intro_doc) in sections {
        let rows: Vec<&Key> = all
            .iter()
            .filter(|k| k.kind != "table" && parent(&k.path) == section)
            .collect();
        if rows.is_empty() {
            continue;
        }
        if section.is_empty() {
            page.push_str("\n## Top level\n\n");
        } else {
            let _ = write!(
                page,
                "\n## `[{section}]`\n\n{}\n\n",
                intro(&section, &intro_doc)
            );
        }
        page.push_str("| key | type | default | meaning |\n| --- | --- | --- | --- |\n");
        for k in rows {
            let leaf = k.path.rsplit('.').next().unwrap_or(&k.path);
            let default = default_of(&defaults, &k.path)
                .or_else(|| default_in_own_table(&k.path))
                .unwrap_or_else(|| {
                    if k.optional {
                        "unset".into()
                    } else {
                        "required".into()
                    }
                });
            let _ = writeln!(
                page,
                "| `{leaf}` | {} | {default} | {} |",
                k.kind,
                doc_of(k).replace('|', "\\|")
            );
        }
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_a_meaning() {
        let docs = field_docs(SOURCE);
        for k in keys::<DaemonConfig>() {
            if let Some((owner, field)) = k.field {
                let doc = docs.get(&(owner.to_string(), field.to_string()));
                assert!(
                    doc.is_some_and(|d| !d.is_empty()),
                    "{} ({owner}.{field}) has no doc comment",
                    k.path
                );
            }
        }
    }

    #[test]
    fn doc_comments_are_read_per_struct_and_field() {
        let docs = field_docs(
            "/// A.\npub struct A {\n    /// One\n    /// line.\n    #[serde(default)]\n    pub x: u8,\n    y: u8,\n    pub z: u8,\n}\n",
        );
        assert_eq!(docs[&("A".into(), "x".into())], "One line.");
        assert_eq!(
            docs[&("A".into(), "z".into())],
            "",
            "no doc, no borrowed doc"
        );
        assert!(!docs.contains_key(&("A".into(), "y".into())));
    }

    #[test]
    fn the_page_shows_types_defaults_and_meanings() {
        let page = render();
        assert!(page.contains("| `root` | string | `\"/var/lib/husk\"` | State directory: "));
        assert!(page.contains("| `sandbox_pool` | integer | `0` |"));
        assert!(page.contains("\n## `[vm]`\n"));
        assert!(page.contains("| `kernel` | string | unset |"));
        assert!(page.contains("\n## `[cri.runtimes.NAME]`\n"));
        assert!(
            !page.contains("\n## `[cri.runtimes]`\n"),
            "no empty sections"
        );
        assert!(
            page.contains("| `driver` | string | required |"),
            "a runtime names its driver"
        );
        assert!(page.contains("| `endpoints` | array of strings | `[]` |"));
        assert!(page.contains("\n## `[images.limits]`\n\nWhat one load or pull may write.\n"));
    }

    #[test]
    fn the_committed_reference_is_up_to_date() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
        let page = render();
        if std::env::var_os("HUSK_WRITE_DOCS").is_some() {
            std::fs::write(&path, &page).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == page,
            "docs/configuration.md differs from the settings types: regenerate it with HUSK_WRITE_DOCS=1 \
             cargo nextest run --target x86_64-unknown-linux-gnu -p husk --bin husk reference"
        );
    }
}
