//! JSON Schema validation against the embedded spec schemas.

use std::sync::OnceLock;

use jsonschema::Validator;
use serde_json::Value;

use super::Report;

const HEAD: &str = include_str!("../../spec/config-schema.json");
const V006: &str = include_str!("../../spec/config-schema-v0.0.6.json");

fn compile(text: &str, draft: jsonschema::Draft) -> Validator {
    let schema: Value = serde_json::from_str(text).expect("embedded schema is JSON");
    jsonschema::options()
        .with_draft(draft)
        .should_validate_formats(true)
        .build(&schema)
        .expect("embedded schema compiles")
}

fn head() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| compile(HEAD, jsonschema::Draft::Draft202012))
}

fn v006() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| compile(V006, jsonschema::Draft::Draft4))
}

/// True for a v0.0.6 (cnai-era, snake_case) config.
pub fn is_snake_case(v: &Value) -> bool {
    v.pointer("/modelfs/diff_ids").is_some() && v.pointer("/modelfs/diffIds").is_none()
}

/// Adds every schema violation, with its instance path, to the report.
///
/// `legacy` is true for a config read from a cnai-family artifact. A
/// snake_case config there is what modctl ≤ v0.1.2 wrote under model-spec
/// v0.0.6, and that producer's schema decides what is an error — every reader
/// in the family still accepts it; a warning says the current spec wants
/// camelCase. Judging it by HEAD would call every such artifact in the wild
/// invalid for its casing alone. Anywhere else (a cncf artifact, a config on
/// its own) HEAD decides, as the spec's own tests do.
pub fn schema_problems(v: &Value, legacy: bool, r: &mut Report) {
    if is_snake_case(v) && legacy {
        r.warn(
            "config:/modelfs/diff_ids",
            None,
            "snake_case config of a cnai-era artifact (model-spec v0.0.6), checked against the v0.0.6 schema: the current spec writes camelCase diffIds",
        );
        for e in v006().iter_errors(v) {
            let path = e.instance_path().as_str().to_string();
            r.error(
                format!("config:{path}"),
                None,
                format!("{e} (v0.0.6 schema)"),
            );
        }
        return;
    }
    if is_snake_case(v) {
        let old = if v006().is_valid(v) {
            "valid"
        } else {
            "also invalid"
        };
        r.warn(
            "config:/modelfs/diff_ids",
            None,
            format!("snake_case config (model-spec v0.0.6, cnai era; {old} under the v0.0.6 schema): the current spec requires camelCase diffIds"),
        );
    }
    for e in head().iter_errors(v) {
        let path = e.instance_path().as_str().to_string();
        let mut msg = format!("{e}");
        if path == "/config/capabilities" && msg.contains("embedding") {
            msg.push_str(" (capabilities.embedding was removed from the spec after v0.0.7)");
        }
        if path.is_empty() && msg.contains("\"config\" is a required property") {
            msg.push_str(" (v0.0.7 producers omit an empty config; the current spec requires it)");
        }
        r.error(format!("config:{path}"), None, msg);
    }
}
