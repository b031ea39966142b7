//! Capsule manifests as `husk capsule create -f` reads them: YAML (or JSON) parsed into a JSON value, then
//! translated by `husk_api::pod::translate` (Zun's `kind: capsule` or a Kubernetes `Pod`) into the engine's
//! capsule request, as the API does with what the CLI sends.
//!
//! Checks that neither step panics, and that a parsed manifest survives the CLI-to-daemon trip: the value the CLI
//! sends as JSON, read back as the daemon reads it, is accepted or refused as the original is.

#![no_main]

use husk_api::pod::translate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(manifest) = serde_yaml::from_str::<serde_json::Value>(text) else {
        return;
    };
    let sent = serde_json::to_string(&manifest).expect("a JSON value serialises");
    let received: serde_json::Value =
        serde_json::from_str(&sent).expect("JSON written by serde_json reads back");
    // serde_json reads a float back within one unit in the last place, not always exactly (no `float_roundtrip`):
    // compared are the outcomes, not the values.
    let first = translate(&manifest);
    let again = translate(&received);
    assert_eq!(
        first.is_ok(),
        again.is_ok(),
        "the manifest translates differently after its trip as JSON"
    );
});
