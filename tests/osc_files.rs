//! `read_osc_file` on the hand-written diffs in tests/fixtures/osc.

use std::path::PathBuf;
use tilepipe::osm::osc::{read_osc_file, OscErrorKind};
use tilepipe::osm::Action;
use tilepipe::osm::{Object, ObjectId, ObjectType};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/osc")
        .join(name)
}

#[test]
fn plain_file() {
    let set = read_osc_file(&fixture("small.osc")).unwrap();
    assert_eq!(set.counts().counts, [[2, 1, 1], [1, 0, 1], [0, 1, 0]]);
    let cafe = set
        .get(ObjectId {
            kind: ObjectType::Node,
            id: 101,
        })
        .unwrap();
    assert_eq!(cafe.action, Action::Create);
    let Object::Node(node) = &cafe.object else {
        panic!("not a node")
    };
    assert_eq!(node.tags[1].1, "Café & Bar \"Rhein\"");
    let relation = set
        .get(ObjectId {
            kind: ObjectType::Relation,
            id: 301,
        })
        .unwrap();
    assert_eq!(relation.object.meta().user.as_deref(), Some("Jørn"));
}

#[test]
fn gzip_is_recognised_by_content_not_name() {
    let plain = read_osc_file(&fixture("small.osc")).unwrap();
    assert_eq!(read_osc_file(&fixture("small.osc.gz")).unwrap(), plain);
    assert_eq!(
        read_osc_file(&fixture("gzip-without-extension.osc")).unwrap(),
        plain
    );
}

#[test]
fn errors_name_the_file_and_line() {
    let path = fixture("bad-nd.osc");
    let error = read_osc_file(&path).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("{}:11: way 201: <nd> without ref", path.display())
    );
}

#[test]
fn truncated_files_are_rejected() {
    let path = fixture("truncated.osc");
    let error = read_osc_file(&path).unwrap_err();
    assert!(matches!(error.kind, OscErrorKind::UnexpectedEof), "{error}");
    assert_eq!(
        error.to_string(),
        format!(
            "{}:11: way 201: unexpected end of file before </osmChange> (truncated diff?)",
            path.display()
        )
    );

    let error = read_osc_file(&fixture("truncated.osc.gz")).unwrap_err();
    assert!(
        matches!(
            error.kind,
            OscErrorKind::Io(_) | OscErrorKind::UnexpectedEof
        ),
        "{error}"
    );
}

#[test]
fn missing_file() {
    let path = fixture("no-such-file.osc");
    let error = read_osc_file(&path).unwrap_err();
    assert!(matches!(error.kind, OscErrorKind::Io(_)));
    assert!(error
        .to_string()
        .starts_with(&format!("{}:0: I/O error", path.display())));
}

/// `tilepipe apply` on a diff with a control character XML forbids: a clear
/// error naming the file and line, given before the database is even
/// contacted, so nothing can have been applied.
#[test]
fn apply_refuses_a_file_with_forbidden_characters() {
    let dir = tempfile::tempdir().unwrap();
    let small = std::fs::read_to_string(fixture("small.osc")).unwrap();
    for (name, replacement) in [("raw.osc", "Jør\u{0}n"), ("reference.osc", "J&#x1;rn")] {
        let bad = small.replace("Jørn", replacement);
        assert_ne!(bad, small);
        let line = bad.lines().position(|l| l.contains(replacement)).unwrap() + 1;
        let path = dir.path().join(name);
        std::fs::write(&path, &bad).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tilepipe"))
            // Nothing listens there: reaching the database would be an error
            // of its own kind.
            .args([
                "-c",
                "/dev/null",
                "-d",
                "postgresql://nobody@127.0.0.1:9/none",
                "apply",
            ])
            .arg(&path)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let expected = format!("{}:{line}:", path.display());
        assert!(stderr.contains(&expected), "{stderr}");
        assert!(stderr.contains("is not allowed in XML 1.0"), "{stderr}");
        assert!(!stderr.contains("connect"), "{stderr}");
    }
}
