//! Writes `manifest.json` the way `mos create-fw-bundle` does: Go's `json.MarshalIndent` with a
//! one-space indent, no trailing newline, keys in the order of mos's Go structs, then the extra keys
//! sorted (Go marshals maps with sorted keys).

/// Top-level keys in the order of mos's `FirmwareManifest` struct (`common/fwbundle/fw_bundle.go`).
pub(crate) const TOP_KEYS: [&str; 7] =
    ["name", "platform", "description", "version", "build_id", "build_timestamp", "parts"];

/// Part keys in the order of mos's `firmwarePart` struct (`common/fwbundle/fw_part.go`). An extra
/// part key from this list takes its struct slot; any other extra key follows them, sorted.
const PART_KEYS: [&str; 18] = [
    "type",
    "src",
    "addr",
    "size",
    "fill",
    "flash",
    "cs_sha1",
    "cs_sha256",
    "fs_size",
    "fs_block_size",
    "fs_erase_size",
    "fs_page_size",
    "encrypt",
    "ptn",
    "falloc",
    "sig",
    "sig_cert",
    "sign",
];

/// Part keys that the builder computes itself; [`crate::PartSpec::extra`] refuses them.
pub(crate) const PART_KEYS_GENERATED: [&str; 5] = ["type", "src", "size", "cs_sha1", "cs_sha256"];

/// A JSON value about to be written: either raw JSON text (written as given) or an object.
pub(crate) enum Value {
    Raw(String),
    Object(Vec<(String, Value)>),
}

/// Orders `fields` as mos would: keys named in `struct_order` first, in that order, then the
/// others sorted by key. Keys are unique (the callers hold them in maps).
pub(crate) fn order_fields(fields: &mut [(String, Value)], struct_order: &[&str]) {
    let rank = |key: &str| struct_order.iter().position(|k| *k == key).unwrap_or(struct_order.len());
    fields.sort_by(|(a, _), (b, _)| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
}

/// Orders the fields of one part (see [`PART_KEYS`]).
pub(crate) fn order_part_fields(fields: &mut [(String, Value)]) {
    order_fields(fields, &PART_KEYS);
}

/// Renders `value` as Go's `json.MarshalIndent(v, "", " ")` would.
pub(crate) fn render(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, 0);
    out
}

fn write_value(out: &mut String, value: &Value, depth: usize) {
    let fields = match value {
        Value::Raw(text) => return out.push_str(text),
        Value::Object(fields) => fields,
    };
    if fields.is_empty() {
        return out.push_str("{}");
    }
    out.push('{');
    for (index, (key, value)) in fields.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push('\n');
        push_indent(out, depth + 1);
        out.push_str(&json_string(key));
        out.push_str(": ");
        write_value(out, value, depth + 1);
    }
    out.push('\n');
    push_indent(out, depth);
    out.push('}');
}

fn push_indent(out: &mut String, depth: usize) {
    out.extend(std::iter::repeat_n(' ', depth));
}

/// Quotes `text` as a JSON string, escaped as Go's `encoding/json` escapes it (so a manifest matches
/// mos's byte for byte): `\"`, `\\`, `\n`, `\r`, `\t`, other control characters as `\u00XX`, and
/// `<`, `>`, `&`, U+2028, U+2029 as `\uXXXX`.
///
/// Use it to build string values for [`crate::Bundle::attr`] and [`crate::PartSpec::extra`]:
///
/// ```
/// assert_eq!(ota_bundle::json_string("app_0"), r#""app_0""#);
/// assert_eq!(ota_bundle::json_string("a\"b\n<c>"), r#""a\"b\n\u003cc\u003e""#);
/// ```
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0}'..='\u{1f}' | '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Lower-case hex of `bytes`, as mos writes `cs_sha1` and `cs_sha256`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Value {
        Value::Raw(text.to_string())
    }

    #[test]
    fn json_string_escapes_as_go_does() {
        let cases = [
            ("plain", r#""plain""#),
            ("q\"b\\s", r#""q\"b\\s""#),
            ("\n\r\t", r#""\n\r\t""#),
            ("\u{0}\u{8}\u{c}\u{1f}", r#""\u0000\u0008\u000c\u001f""#),
            ("<a&b>", r#""\u003ca\u0026b\u003e""#),
            ("\u{2028}\u{2029}", r#""\u2028\u2029""#),
            ("é€😀\u{7f}", "\"é€😀\u{7f}\""),
        ];
        for (input, expected) in cases {
            assert_eq!(json_string(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn render_indents_one_space_per_level_like_marshal_indent() {
        let value = Value::Object(vec![
            ("a".to_string(), raw("1")),
            ("empty".to_string(), Value::Object(vec![])),
            ("o".to_string(), Value::Object(vec![("b".to_string(), raw("true"))])),
        ]);
        assert_eq!(render(&value), "{\n \"a\": 1,\n \"empty\": {},\n \"o\": {\n  \"b\": true\n }\n}");
    }

    #[test]
    fn order_fields_puts_struct_keys_first_then_sorts_the_rest() {
        let mut fields: Vec<(String, Value)> =
            ["zz", "size", "aa", "src", "type"].iter().map(|k| (k.to_string(), raw("0"))).collect();
        order_part_fields(&mut fields);
        let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["type", "src", "size", "aa", "zz"]);
    }
}
