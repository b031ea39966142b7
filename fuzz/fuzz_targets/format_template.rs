//! `--format` as the CLI reads it (`crates/husk/src/cli/template.rs`, compiled here from its own source since the
//! `husk` crate is a binary only): `table`, `json` or a Go template run with Docker's extra functions.
//!
//! The input's first line is the `--format` value, the rest the JSON item the template runs over (a container-like
//! item when it is not JSON). Checks that parsing, compiling and running never panic, and that a format accepted as
//! a template compiles again from its stored text (the CLI parses once and compiles again when it prints).

#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, clippy::all)]
#[path = "../../crates/husk/src/cli"]
mod cli {
    pub mod format;
    pub mod template;
}

use cli::template::{OutputFormat, compile, run};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (format, item) = text.split_once('\n').unwrap_or((text, ""));
    let item: serde_json::Value = serde_json::from_str(item).unwrap_or_else(|_| {
        serde_json::json!({
            "ID": "0123456789ab",
            "Names": ["web"],
            "State": {"Running": true, "Pid": 42},
            "Config": {"Cmd": ["sh", "-c", "true"], "Labels": {"tier": "web"}, "Env": null},
            "Size": 1.5,
        })
    });

    // The format exactly as typed, and its raw text compiled as a template.
    if let Ok(OutputFormat::Template { text, table }) = format.parse::<OutputFormat>() {
        let template = compile(&text).expect("a format accepted as a template compiles again");
        let _ = run(&template, &item);
        if table {
            let _ = run(
                &template,
                &serde_json::json!({"ID": "ID", "Names": "NAMES"}),
            );
        }
    }
    if let Ok(template) = compile(format) {
        let _ = run(&template, &item);
    }
});
