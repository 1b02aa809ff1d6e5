//! `read_osc_file` on the hand-written diffs in tests/fixtures/osc.

use std::path::PathBuf;
use tilepipe::osm::{Object, ObjectId, ObjectType};
use tilepipe::replication::osc::{read_osc_file, OscErrorKind};
use tilepipe::replication::Action;

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
