//! CloudFormation YAML to JSON: short-form intrinsics (`!Ref`, `!Sub`, `!GetAtt A.B`, ...) become
//! their long JSON form, scalars are typed by the YAML 1.2 core schema (quoted scalars stay
//! strings), and anything CloudFormation's JSON form cannot express is an error.
//!
//! Stack templates are authored in YAML for readability and rendered to canonical JSON; this
//! module is the conversion in between. It works on the spanned tree of [`crate::yaml`], so an
//! error points at the line of the rendered template.

use serde_json::{Map, Number, Value as Json};

use crate::error::Diagnostic;
use crate::yaml::{Node, Resolved, Value};

/// The JSON key of a short-form intrinsic tag (`!Sub` → `Fn::Sub`), if `tag` is one.
pub fn intrinsic(tag: &str) -> Option<&'static str> {
    Some(match tag {
        "!Ref" => "Ref",
        "!Condition" => "Condition",
        "!Sub" => "Fn::Sub",
        "!GetAtt" => "Fn::GetAtt",
        "!Join" => "Fn::Join",
        "!Select" => "Fn::Select",
        "!Split" => "Fn::Split",
        "!If" => "Fn::If",
        "!Equals" => "Fn::Equals",
        "!And" => "Fn::And",
        "!Or" => "Fn::Or",
        "!Not" => "Fn::Not",
        "!FindInMap" => "Fn::FindInMap",
        "!Base64" => "Fn::Base64",
        "!Cidr" => "Fn::Cidr",
        "!GetAZs" => "Fn::GetAZs",
        "!ImportValue" => "Fn::ImportValue",
        "!Transform" => "Fn::Transform",
        "!ToJsonString" => "Fn::ToJsonString",
        "!Length" => "Fn::Length",
        _ => return None,
    })
}

fn err(node: &Node, message: String, help: &str, file: &str) -> Diagnostic {
    Diagnostic {
        file: file.to_owned(),
        span: Some(node.span),
        path: None,
        message,
        help: Some(help.to_owned()),
        source_line: None,
    }
}

/// Converts a parsed CloudFormation YAML document to JSON. `file` names the document in errors.
pub fn to_json(node: &Node, file: &str) -> Result<Json, Diagnostic> {
    let untagged = untagged(node, file)?;
    let Some(tag) = node.tag.as_deref() else {
        return Ok(untagged);
    };
    let Some(key) = intrinsic(tag) else {
        return Err(err(
            node,
            format!("unknown YAML tag `{tag}`"),
            "use a CloudFormation short-form intrinsic (`!Ref`, `!Sub`, `!GetAtt`, `!Join`, `!If`, ...)",
            file,
        ));
    };
    let arg = match (key, untagged) {
        // `!GetAtt Resource.Attribute` → ["Resource", "Attribute"] (split at the first dot;
        // attributes may contain dots, resources may not).
        ("Fn::GetAtt", Json::String(s)) => match s.split_once('.') {
            Some((res, attr)) if !res.is_empty() && !attr.is_empty() => Json::Array(vec![
                Json::String(res.to_owned()),
                Json::String(attr.to_owned()),
            ]),
            _ => {
                return Err(err(
                    node,
                    format!("`!GetAtt {s}` needs the form `Resource.Attribute`"),
                    "write e.g. `!GetAtt ArtifactKey.Arn`",
                    file,
                ));
            }
        },
        ("Ref" | "Condition", v @ Json::String(_)) => v,
        ("Ref" | "Condition", _) => {
            return Err(err(
                node,
                format!("`{tag}` takes a name"),
                "write e.g. `!Ref ArtifactBucket`",
                file,
            ));
        }
        (_, v) => v,
    };
    let mut m = Map::new();
    m.insert(key.to_owned(), arg);
    Ok(Json::Object(m))
}

fn untagged(node: &Node, file: &str) -> Result<Json, Diagnostic> {
    Ok(match &node.value {
        Value::Scalar(s) => {
            // A tagged scalar is the argument of an intrinsic: always text (`!Ref 123` is "123").
            if node.tag.is_some() {
                return Ok(Json::String(s.text.clone()));
            }
            match s.resolve() {
                Resolved::Null => Json::Null,
                Resolved::Bool(b) => Json::Bool(b),
                Resolved::Int(i) => Json::Number(i.into()),
                Resolved::Float(f) => match Number::from_f64(f) {
                    Some(n) => Json::Number(n),
                    None => {
                        return Err(err(
                            node,
                            format!("`{}` is not a number JSON can hold", s.text),
                            "quote the value to make it a string",
                            file,
                        ));
                    }
                },
                Resolved::Str => Json::String(s.text.clone()),
            }
        }
        Value::Seq(items) => Json::Array(
            items
                .iter()
                .map(|n| to_json(n, file))
                .collect::<Result<_, _>>()?,
        ),
        Value::Map(entries) => {
            let mut m = Map::new();
            for e in entries {
                m.insert(e.key.clone(), to_json(&e.value, file)?);
            }
            Json::Object(m)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::SourceFile;
    use crate::yaml::{ParseOptions, parse};
    use serde_json::json;

    fn convert(src: &str) -> Result<Json, Diagnostic> {
        let file = SourceFile::new("t.yml", src);
        let node = parse(&file, ParseOptions { allow_tags: true })?;
        to_json(&node, "t.yml")
    }

    #[test]
    fn short_forms_become_long_forms() {
        let v = convert(
            "a: !Ref Bucket\n\
             b: !GetAtt Key.Arn\n\
             c: !GetAtt [Key, Arn]\n\
             d: !Sub \"arn:${AWS::Partition}:s3:::${Bucket}/*\"\n\
             e: !Join [\",\", [x, !Ref Y]]\n\
             f: !If [IsProd, !Ref A, !Ref AWS::NoValue]\n\
             g: !GetAtt Stack.Outputs.Name\n\
             h: !Sub [\"${X}\", {X: !Ref Y}]\n\
             i: !Condition IsProd\n",
        )
        .expect("converts");
        assert_eq!(
            v,
            json!({
                "a": {"Ref": "Bucket"},
                "b": {"Fn::GetAtt": ["Key", "Arn"]},
                "c": {"Fn::GetAtt": ["Key", "Arn"]},
                "d": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${Bucket}/*"},
                "e": {"Fn::Join": [",", ["x", {"Ref": "Y"}]]},
                "f": {"Fn::If": ["IsProd", {"Ref": "A"}, {"Ref": "AWS::NoValue"}]},
                "g": {"Fn::GetAtt": ["Stack", "Outputs.Name"]},
                "h": {"Fn::Sub": ["${X}", {"X": {"Ref": "Y"}}]},
                "i": {"Condition": "IsProd"},
            })
        );
    }

    #[test]
    fn scalars_follow_the_core_schema_and_quotes_keep_strings() {
        let v = convert(
            "n: 30\nb: true\nq: \"true\"\nz: \"012345678901\"\nf: 0.5\nnull: ~\ns: yes\nr: !Ref 123\n",
        )
        .expect("converts");
        assert_eq!(
            v,
            json!({"n": 30, "b": true, "q": "true", "z": "012345678901", "f": 0.5, "null": null, "s": "yes", "r": {"Ref": "123"}})
        );
    }

    #[test]
    fn rejects_unknown_tags_and_malformed_intrinsics() {
        let e = convert("a: !Evil x\n").expect_err("unknown tag");
        assert!(
            e.message.contains("unknown YAML tag `!Evil`"),
            "{}",
            e.message
        );
        assert_eq!(e.span.map(|s| s.start.line), Some(1));
        assert!(convert("a: !GetAtt NoDot\n").is_err());
        assert!(convert("a: !Ref [x]\n").is_err());
        assert!(convert("a: .nan\n").is_err());
    }

    #[test]
    fn escaped_values_stay_single_strings() {
        let hostile = "x\"}, \"Evil\": {\"Type\": \"AWS::IAM::User\"";
        let src = format!("a: {}\n", crate::render::escape::quote(hostile));
        let v = convert(&src).expect("converts");
        assert_eq!(v, json!({"a": hostile}));
    }
}
