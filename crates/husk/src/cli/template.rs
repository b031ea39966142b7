//! `--format` as Docker takes it: `table`, `json`, or a Go template (`{{.Names}}`, `{{json .Config}}`,
//! `table {{.ID}}\t{{.Status}}`), run by gtmpl (Go's text/template in Rust) with Docker's extra functions
//! (`json`, `join`, `split`, `lower`, `upper`, `title`). As in Docker, `\t` and `\n` in the format are a tab and a
//! newline, and a `table` template prints a header row (the template run over the column names) with its
//! columns aligned.

use std::collections::HashMap;
use std::str::FromStr;

use anyhow::{Result, anyhow};
use gtmpl::{Context, Func, FuncError, Template, Value};

use super::format::print_table;

/// The value of a `--format` option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputFormat {
    /// The command's own table.
    Table,
    /// JSON.
    Json,
    /// A Go template run once per item.
    Template {
        /// The template, `table ` prefix removed and `\t`, `\n` turned into tab and newline.
        text: String,
        /// Whether the output is a table: a header row first, columns aligned on tabs.
        table: bool,
    },
}

impl FromStr for OutputFormat {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            // `text` is `info`'s name for its own layout.
            "table" | "text" => return Ok(OutputFormat::Table),
            "json" => return Ok(OutputFormat::Json),
            _ => {}
        }
        let (body, table) = match s.trim_start().strip_prefix("table ") {
            Some(rest) => (rest, true),
            None => (s, false),
        };
        if !body.contains("{{") {
            return Err(format!(
                "{s:?} is neither table, json nor a Go template (such as '{{{{.ID}}}}')"
            ));
        }
        let text = body.trim().replace("\\t", "\t").replace("\\n", "\n");
        compile(&text).map_err(|e| format!("bad template: {e}"))?;
        Ok(OutputFormat::Template { text, table })
    }
}

/// The value of a `--format` option of a command that prints one report (no template).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableOrJson {
    /// The command's own table.
    Table,
    /// JSON.
    Json,
}

impl FromStr for TableOrJson {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "table" => Ok(TableOrJson::Table),
            "json" => Ok(TableOrJson::Json),
            _ => Err(format!("{s:?}: use table or json")),
        }
    }
}

/// Prints `items` (any serializable list) through a template: their JSON fields; a `table` template's header
/// row names each field in capitals (`Name` → `NAME`) unless `headers` names them.
pub fn print_items<T: serde::Serialize>(
    text: &str,
    table: bool,
    headers: Option<serde_json::Value>,
    items: &[T],
) -> Result<()> {
    let items: Vec<serde_json::Value> = items
        .iter()
        .map(serde_json::to_value)
        .collect::<std::result::Result<_, _>>()?;
    let headers = headers.unwrap_or_else(|| capitals(&items));
    print(text, table, &headers, &items)
}

/// A header map naming each top-level field of `items` in capitals (`Name` → `NAME`).
fn capitals(items: &[serde_json::Value]) -> serde_json::Value {
    let mut headers = serde_json::Map::new();
    for item in items {
        if let Some(fields) = item.as_object() {
            for key in fields.keys() {
                headers
                    .entry(key.clone())
                    .or_insert_with(|| key.to_uppercase().into());
            }
        }
    }
    serde_json::Value::Object(headers)
}

/// Prints `items` through a template: one line per item; for a table, the header row first (the template run over
/// `headers`, a map from field to column name) and the columns aligned.
pub fn print(
    text: &str,
    table: bool,
    headers: &serde_json::Value,
    items: &[serde_json::Value],
) -> Result<()> {
    let template = compile(text).map_err(|e| anyhow!("bad template: {e}"))?;
    let mut lines = Vec::with_capacity(items.len() + 1);
    if table {
        lines.push(run(&template, headers)?);
    }
    for item in items {
        lines.push(run(&template, item)?);
    }
    if table {
        let rows: Vec<Vec<String>> = lines
            .iter()
            .skip(1)
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect();
        let header: Vec<&str> = lines[0].split('\t').collect();
        print_table(&header, &rows);
    } else {
        for line in lines {
            println!("{line}");
        }
    }
    Ok(())
}

/// Runs `template` over `item`.
pub fn run(template: &Template, item: &serde_json::Value) -> Result<String> {
    template
        .render(&Context::from(to_template_value(item)))
        .map_err(|e| anyhow!("template: {e}"))
}

/// The template `text`, parsed, with Docker's functions.
pub fn compile(text: &str) -> std::result::Result<Template, String> {
    check_lexable(text)?;
    let mut template = Template::default();
    let funcs: [(&str, Func); 7] = [
        (GO_PRINT, go_print),
        ("json", json),
        ("join", join),
        ("split", split),
        ("lower", lower),
        ("upper", upper),
        ("title", title),
    ];
    template.add_funcs(&funcs);
    template
        .parse(print_fields_as_go(text))
        .map_err(|e| e.to_string())?;
    Ok(template)
}

/// Refuses what gtmpl 0.7's lexer mishandles, before it sees it: its `backup` steps back one byte whatever it read
/// last, so a template that ends inside an action can make it loop forever (`{{,--`), and a non-ASCII character in an
/// action outside a quoted string makes it slice inside that character and panic (`{{é}}`), as does a trim marker
/// `{{- ` after text whose last character (spaces aside) is not ASCII (`é {{- .ID}}`). Actions are found as the
/// lexer finds them: from `{{` (a comment `{{/* */}}` skipped whole) to the first `}}` outside quotes.
fn check_lexable(text: &str) -> std::result::Result<(), String> {
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let action = &rest[open + 2..];
        let trimmed = action.strip_prefix("- ");
        if trimmed.is_some()
            && let Some(c) = rest[..open].trim_end().chars().last()
            && !c.is_ascii()
        {
            return Err(format!(
                "{c:?} before \"{{{{- \": the template engine trims only after an ASCII character"
            ));
        }
        let action = trimmed.unwrap_or(action);
        let action = match action.strip_prefix("/*") {
            Some(comment) => match comment.find("*/") {
                Some(end) => &comment[end + 2..],
                None => return Err("unclosed comment".into()),
            },
            None => action,
        };
        rest = after_action(action)?;
    }
    Ok(())
}

/// What follows the `}}` that ends the action `action` starts (the text after its `{{`).
fn after_action(action: &str) -> std::result::Result<&str, String> {
    let mut chars = action.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '}' if action[i..].starts_with("}}") => return Ok(&action[i + 2..]),
            '"' | '\'' | '`' => {
                // As the lexer reads quotes: a backslash escapes the next quote (raw strings have no escapes).
                let mut escaped = false;
                loop {
                    match chars.next() {
                        None => return Err("unclosed quote in an action".into()),
                        Some((_, q)) if q == c && !escaped => break,
                        Some((_, '\\')) if c != '`' => escaped = true,
                        Some(_) => escaped = false,
                    }
                }
            }
            c if !c.is_ascii() => {
                return Err(format!("{c:?} in an action: quote text that is not ASCII"));
            }
            _ => {}
        }
    }
    Err("unclosed action".into())
}

/// The function that prints a value as Go's `%v` does (`[a b]`, `map[k:v]`, `<nil>`).
const GO_PRINT: &str = "husk_go_print";

/// `text` with every action that only prints a field (`{{.Config.Cmd}}`, `{{.}}`) printing it as Go would: the
/// template engine prints lists and maps in its own notation, Docker users expect Go's.
fn print_fields_as_go(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open..].find("}}").map(|c| open + c) else {
            break;
        };
        out.push_str(&rest[..open]);
        let inner = &rest[open + 2..close];
        let (left, body, right) = trim_markers(inner);
        let is_field = body.starts_with('.')
            && body
                .chars()
                .all(|c| c == '.' || c == '_' || c.is_ascii_alphanumeric());
        if is_field {
            out.push_str(&format!("{{{{{left}{GO_PRINT} {body}{right}}}}}"));
        } else {
            out.push_str(&rest[open..close + 2]);
        }
        rest = &rest[close + 2..];
    }
    out.push_str(rest);
    out
}

/// An action's inside split into its left trim marker (`- `), body and right trim marker (` -`).
fn trim_markers(inner: &str) -> (&str, &str, &str) {
    let left = if inner.starts_with("- ") { "- " } else { "" };
    // The right marker is looked for after the left one: in `{{- -}}` they would overlap.
    let rest = &inner[left.len()..];
    let right = if rest.ends_with(" -") { " -" } else { "" };
    let body = rest[..rest.len() - right.len()].trim();
    (left, body, right)
}

/// A value as Go's `%v` prints it.
fn go_text(v: &Value) -> String {
    match v {
        Value::NoValue => "<no value>".into(),
        Value::Nil | Value::Function(_) => "<nil>".into(),
        Value::Array(a) => format!("[{}]", a.iter().map(go_text).collect::<Vec<_>>().join(" ")),
        Value::Object(m) | Value::Map(m) => {
            let mut pairs: Vec<(&String, &Value)> = m.iter().collect();
            pairs.sort_by(|a, b| a.0.cmp(b.0));
            let pairs: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{k}:{}", go_text(v)))
                .collect();
            format!("map[{}]", pairs.join(" "))
        }
        other => other.to_string(),
    }
}

fn go_print(args: &[Value]) -> std::result::Result<Value, FuncError> {
    Ok(Value::String(go_text(one(GO_PRINT, args)?)))
}

/// A JSON value as the template engine sees it (objects as maps: `.Key`, `index . "key"`, `range`).
fn to_template_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(u)) => Value::from(u),
            _ => Value::from(n.as_f64().unwrap_or(0.0)),
        },
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(to_template_value).collect()),
        serde_json::Value::Object(o) => Value::Map(
            o.iter()
                .map(|(k, v)| (k.clone(), to_template_value(v)))
                .collect::<HashMap<_, _>>(),
        ),
    }
}

/// A template value back as JSON (for `json`).
fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::NoValue | Value::Nil | Value::Function(_) => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.into(),
            (None, Some(u), _) => u.into(),
            (_, _, Some(f)) => f.into(),
            _ => serde_json::Value::Null,
        },
        Value::Array(a) => serde_json::Value::Array(a.iter().map(to_json).collect()),
        Value::Object(o) | Value::Map(o) => {
            serde_json::Value::Object(o.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
    }
}

fn one<'a>(name: &str, args: &'a [Value]) -> std::result::Result<&'a Value, FuncError> {
    match args {
        [v] => Ok(v),
        _ => Err(FuncError::ExactlyXArgs(name.into(), 1)),
    }
}

fn text_of(name: &str, args: &[Value]) -> std::result::Result<String, FuncError> {
    match one(name, args)? {
        Value::String(s) => Ok(s.clone()),
        other => Ok(other.to_string()),
    }
}

/// `json .X`: the value as JSON on one line.
fn json(args: &[Value]) -> std::result::Result<Value, FuncError> {
    Ok(Value::String(to_json(one("json", args)?).to_string()))
}

/// `join .List ", "`.
fn join(args: &[Value]) -> std::result::Result<Value, FuncError> {
    let [list, sep] = args else {
        return Err(FuncError::ExactlyXArgs("join".into(), 2));
    };
    let sep = match sep {
        Value::String(s) => s.as_str(),
        _ => return Err(FuncError::UnableToConvertFromValue),
    };
    let Value::Array(items) = list else {
        return Err(FuncError::UnableToConvertFromValue);
    };
    let words: Vec<String> = items
        .iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    Ok(Value::String(words.join(sep)))
}

/// `split .Text ","`.
fn split(args: &[Value]) -> std::result::Result<Value, FuncError> {
    let [Value::String(text), Value::String(sep)] = args else {
        return Err(FuncError::ExactlyXArgs("split".into(), 2));
    };
    Ok(Value::Array(
        text.split(sep.as_str())
            .map(|s| Value::String(s.to_string()))
            .collect(),
    ))
}

fn lower(args: &[Value]) -> std::result::Result<Value, FuncError> {
    Ok(Value::String(text_of("lower", args)?.to_lowercase()))
}

fn upper(args: &[Value]) -> std::result::Result<Value, FuncError> {
    Ok(Value::String(text_of("upper", args)?.to_uppercase()))
}

fn title(args: &[Value]) -> std::result::Result<Value, FuncError> {
    let text = text_of("title", args)?;
    let mut out = String::with_capacity(text.len());
    let mut start = true;
    for c in text.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = c.is_whitespace();
    }
    Ok(Value::String(out))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn render(format: &str, item: serde_json::Value) -> String {
        let OutputFormat::Template { text, .. } = format.parse().unwrap() else {
            panic!("{format} is not a template")
        };
        run(&compile(&text).unwrap(), &item).unwrap()
    }

    #[test]
    fn formats_are_table_json_or_a_template() {
        assert_eq!("table".parse(), Ok(OutputFormat::Table));
        assert_eq!("json".parse(), Ok(OutputFormat::Json));
        assert_eq!(
            "table {{.ID}}\\t{{.Names}}".parse(),
            Ok(OutputFormat::Template {
                text: "{{.ID}}\t{{.Names}}".into(),
                table: true
            })
        );
        let e = "yaml".parse::<OutputFormat>().unwrap_err();
        assert!(e.contains("neither table, json nor a Go template"), "{e}");
        let e = "{{.ID".parse::<OutputFormat>().unwrap_err();
        assert!(e.starts_with("bad template"), "{e}");
        let e = "{{nosuchfunc .ID}}".parse::<OutputFormat>().unwrap_err();
        assert!(e.starts_with("bad template"), "{e}");
    }

    #[test]
    fn templates_see_the_json_fields_with_dockers_functions() {
        let c = json!({
            "Id": "abc",
            "State": {"Pid": 42, "Running": true},
            "Config": {"Cmd": ["sh", "-c", "true"], "Labels": {"tier": "web"}},
        });
        assert_eq!(
            render("{{.Id}} {{.State.Pid}} {{.State.Running}}", c.clone()),
            "abc 42 true"
        );
        assert_eq!(
            render("{{json .Config.Cmd}}", c.clone()),
            r#"["sh","-c","true"]"#
        );
        assert_eq!(
            render("{{join .Config.Cmd \" \"}}", c.clone()),
            "sh -c true"
        );
        assert_eq!(
            render("{{index .Config.Labels \"tier\"}}", c.clone()),
            "web"
        );
        assert_eq!(
            render("{{range .Config.Cmd}}[{{.}}]{{end}}", c.clone()),
            "[sh][-c][true]"
        );
        assert_eq!(
            render("{{upper .Id}}\\t{{title \"a b\"}}", c.clone()),
            "ABC\tA B"
        );
        assert_eq!(
            render("{{if .State.Running}}up{{else}}down{{end}}", c.clone()),
            "up"
        );
        assert_eq!(render("{{json .}}", json!({"a": 1})), r#"{"a":1}"#);
        // Lists, maps and null print as Go prints them.
        assert_eq!(render("{{.Config.Cmd}}", c.clone()), "[sh -c true]");
        assert_eq!(
            render(
                "{{ .Config.Labels }} {{.None}}",
                json!({"Config": {"Labels": {"b": 2, "a": [1]}}, "None": null})
            ),
            "map[a:[1] b:2] <nil>"
        );
        assert_eq!(
            render("{{range .Config.Cmd -}} {{- .}}|{{end}}", c.clone()),
            "sh|-c|true|"
        );
        assert_eq!(render("{{len (split \"a,b\" \",\")}}", json!({})), "2");
        assert_eq!(render("{{/* {{ */}}{{\"é}}\"}} é", json!({})), "é}} é");
    }

    #[test]
    fn templates_the_template_engine_would_hang_or_panic_on_are_refused() {
        // The fuzz target format_template found `{{,--`, `{{é}}` and `ԕ{{- .Name`: gtmpl 0.7's lexer looped forever
        // on the first (`backup` stepped back past the end of the input) and panicked on the others (`backup`, and
        // the trim before `{{- `, stepped back one byte into a two-byte character). The rest are variants.
        for (format, error) in [
            ("{{,--", "unclosed action"),
            ("{{1", "unclosed action"),
            ("{{é}}", "in an action"),
            ("{{1é}}", "in an action"),
            ("{{.ID}} {{\"}}", "unclosed quote"),
            ("{{/* x", "unclosed comment"),
            ("é {{- .ID}}", "trims only after an ASCII character"),
            (
                "{{.ID}}ԕ{{- .Name -}}",
                "trims only after an ASCII character",
            ),
        ] {
            let e = format.parse::<OutputFormat>().unwrap_err();
            assert!(e.contains(error), "{format}: {e}");
        }
    }

    #[test]
    fn trim_markers_that_touch_are_not_taken_twice() {
        // Found by the fuzz target format_template: `{{- -}}` sliced inner[2..1] and panicked.
        assert_eq!(trim_markers("- -"), ("- ", "-", ""));
        assert_eq!(trim_markers("-  -"), ("- ", "", " -"));
        assert_eq!(trim_markers("- .Name -"), ("- ", ".Name", " -"));
        let _ = "{{- -}}".parse::<OutputFormat>();
    }
}
