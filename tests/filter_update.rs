//! Filters over records that `update` changed: the column caches and field indexes a filter
//! reads must follow an in-place metadata or document change at once (committed or not), and
//! survive reopen and compaction. The expected counts are worked out by hand from the writes.

use srvdb::{Database, Filter, Metadata, OpenOptions, Select, Store, Update};

fn meta(json: &str) -> Option<Metadata> {
    Some(Metadata::from_text(json))
}

fn count(db: &Database, where_json: &str) -> u64 {
    let filter = Filter::parse(Some(where_json), None).expect("valid filter");
    db.count_matching(&filter).expect("count")
}

fn ids_matching(db: &Database, where_json: &str) -> Vec<String> {
    let filter = Filter::parse(Some(where_json), None).expect("valid filter");
    db.records(&Select::all().filter(&filter))
        .expect("records")
        .into_iter()
        .map(|r| r.id)
        .collect()
}

fn scenario(indexed: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = Database::open(dir.path(), OpenOptions::default()).expect("open");
        if indexed {
            db.create_field_index("color").expect("index");
        }
        let ids = ["a", "b", "c", "d"];
        let vectors = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, -1.0, 0.0];
        let metas = [
            meta(r#"{"color": "red"}"#),
            meta(r#"{"color": "red"}"#),
            meta(r#"{"color": "blue"}"#),
            None,
        ];
        db.add(&ids, &vectors, &metas).expect("add");
        // Build the caches before the update (uncommitted rows).
        assert_eq!(count(&db, r#"{"color": "red"}"#), 2);
        db.update(&Update::ids(&["a"]).metadatas(&[meta(r#"{"color": "blue"}"#)]))
            .expect("update pending row");
        assert_eq!(count(&db, r#"{"color": "red"}"#), 1);
        assert_eq!(ids_matching(&db, r#"{"color": "blue"}"#), ["a", "c"]);
        db.persist().expect("persist");
        // A committed row, changed in place; then cleared.
        db.update(&Update::ids(&["c"]).metadatas(&[meta(r#"{"color": "red"}"#)]))
            .expect("update committed row");
        assert_eq!(ids_matching(&db, r#"{"color": "red"}"#), ["b", "c"]);
        db.update(&Update::ids(&["b"]).metadatas(&[None]))
            .expect("clear");
        assert_eq!(ids_matching(&db, r#"{"color": "red"}"#), ["c"]);
        // `$ne` matches the record without metadata and the cleared one.
        assert_eq!(
            ids_matching(&db, r#"{"color": {"$ne": "red"}}"#),
            ["a", "b", "d"]
        );
        // Filtered search sees the new values too.
        let filter = Filter::parse(Some(r#"{"color": "red"}"#), None).expect("filter");
        let hits = db.search_filtered(&[1.0, 0.0], 4, &filter).expect("search");
        assert_eq!(
            hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
            ["c"]
        );
        db.persist().expect("persist");
    }
    let db = Database::open(dir.path(), OpenOptions::default()).expect("reopen");
    assert_eq!(ids_matching(&db, r#"{"color": "red"}"#), ["c"]);
    assert_eq!(ids_matching(&db, r#"{"color": "blue"}"#), ["a"]);
    db.delete(&["a"]).expect("delete");
    db.compact().expect("compact");
    assert_eq!(ids_matching(&db, r#"{"color": "red"}"#), ["c"]);
    assert_eq!(count(&db, r#"{"color": "blue"}"#), 0);
    db.update(&Update::ids(&["d"]).metadatas(&[meta(r#"{"color": "blue"}"#)]))
        .expect("update after compaction");
    assert_eq!(
        ids_matching(&db, r#"{"color": {"$in": ["blue", "red"]}}"#),
        ["c", "d"]
    );
}

#[test]
fn filters_follow_updates_without_an_index() {
    scenario(false);
}

#[test]
fn filters_follow_updates_through_a_field_index() {
    scenario(true);
}
