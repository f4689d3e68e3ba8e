//! The dialect's edges, each against a hand-written expectation.

use super::*;
use crate::error::Error;

fn filter(w: &str) -> Filter {
    Filter::parse(Some(w), None).expect("valid filter")
}

fn doc_filter(d: &str) -> Filter {
    Filter::parse(None, Some(d)).expect("valid filter")
}

fn json(m: &str) -> Option<Metadata> {
    Some(Metadata::Json(m.to_owned()))
}

fn matches(w: &str, meta: &str) -> bool {
    filter(w).matches(json(meta).as_ref(), None)
}

fn part_of(w: Option<&str>, d: Option<&str>) -> String {
    match Filter::parse(w, d) {
        Err(Error::InvalidFilter { part, .. }) => part,
        other => panic!("expected InvalidFilter for {w:?} / {d:?}, got {other:?}"),
    }
}

#[test]
fn a_bare_value_is_eq_and_several_keys_are_and() {
    assert!(matches(r#"{"a": 1}"#, r#"{"a": 1, "b": 2}"#));
    assert!(!matches(r#"{"a": 1}"#, r#"{"a": 2}"#));
    assert!(matches(r#"{"a": 1, "b": 2}"#, r#"{"a": 1, "b": 2}"#));
    assert!(!matches(r#"{"a": 1, "b": 3}"#, r#"{"a": 1, "b": 2}"#));
    assert!(matches(r#"{"y": {"$gt": 1, "$lt": 3}}"#, r#"{"y": 2}"#));
    assert!(!matches(r#"{"y": {"$gt": 1, "$lt": 3}}"#, r#"{"y": 3}"#));
    assert!(matches("{}", r#"{"x": 1}"#));
    assert!(matches("{}", "[1]"), "{{}} matches everything");
}

#[test]
fn comparisons_follow_types() {
    // int vs float compare numerically
    assert!(matches(r#"{"a": 1.0}"#, r#"{"a": 1}"#));
    assert!(matches(r#"{"a": {"$gte": 1}}"#, r#"{"a": 1.0}"#));
    assert!(matches(r#"{"a": {"$lt": 2.5}}"#, r#"{"a": 2}"#));
    // strings only with strings, ordered by bytes
    assert!(!matches(r#"{"a": "1"}"#, r#"{"a": 1}"#));
    assert!(matches(r#"{"a": {"$gt": "B"}}"#, r#"{"a": "a"}"#));
    assert!(!matches(r#"{"a": {"$gt": "b"}}"#, r#"{"a": "B"}"#));
    assert!(!matches(r#"{"a": {"$gt": 0}}"#, r#"{"a": "5"}"#));
    // booleans are not numbers
    assert!(!matches(r#"{"a": true}"#, r#"{"a": 1}"#));
    assert!(!matches(r#"{"a": 1}"#, r#"{"a": true}"#));
    assert!(matches(r#"{"a": true}"#, r#"{"a": true}"#));
    // a type mismatch passes $ne and $nin
    assert!(matches(r#"{"a": {"$ne": 1}}"#, r#"{"a": "1"}"#));
    assert!(matches(r#"{"a": {"$nin": [1, 2]}}"#, r#"{"a": true}"#));
    // an object-valued field equals no scalar
    assert!(!matches(r#"{"a": 1}"#, r#"{"a": {"b": 1}}"#));
    assert!(matches(r#"{"a": {"$ne": 1}}"#, r#"{"a": {"b": 1}}"#));
}

#[test]
fn missing_fields_match_only_ne_and_nin() {
    for (op, expect) in [
        (r#"{"$eq": 1}"#, false),
        (r#"{"$ne": 1}"#, true),
        (r#"{"$gt": 1}"#, false),
        (r#"{"$gte": 1}"#, false),
        (r#"{"$lt": 1}"#, false),
        (r#"{"$lte": 1}"#, false),
        (r#"{"$in": [1]}"#, false),
        (r#"{"$nin": [1]}"#, true),
    ] {
        let w = format!(r#"{{"a": {op}}}"#);
        assert_eq!(matches(&w, r#"{"b": 1}"#), expect, "{w} on a missing field");
        assert_eq!(matches(&w, r#"{"a": null}"#), expect, "{w} on null");
        // no metadata is an empty object
        assert_eq!(
            filter(&w).matches(None, None),
            expect,
            "{w} without metadata"
        );
    }
}

#[test]
fn metadata_that_is_not_an_object_matches_no_field_predicate() {
    for meta in [
        Metadata::Text("plain".into()),
        Metadata::Json("[1, 2]".into()),
        Metadata::Json("3".into()),
        Metadata::Json("\"s\"".into()),
    ] {
        for w in [
            r#"{"a": 1}"#,
            r#"{"a": {"$ne": 1}}"#,
            r#"{"a": {"$nin": []}}"#,
        ] {
            assert!(!filter(w).matches(Some(&meta), None), "{w} on {meta:?}");
        }
        assert!(filter(r#"{"$not": {"a": 1}}"#).matches(Some(&meta), None));
    }
}

#[test]
fn list_fields_match_if_any_element_does() {
    let m = r#"{"tags": ["x", "y", 3]}"#;
    assert!(matches(r#"{"tags": "x"}"#, m));
    assert!(matches(r#"{"tags": {"$in": ["z", "y"]}}"#, m));
    assert!(matches(r#"{"tags": {"$gt": 2}}"#, m));
    assert!(!matches(r#"{"tags": {"$ne": "x"}}"#, m));
    assert!(matches(r#"{"tags": {"$ne": "z"}}"#, m));
    assert!(!matches(r#"{"tags": {"$nin": ["y"]}}"#, m));
    assert!(matches(r#"{"tags": {"$nin": ["q"]}}"#, m));
    assert!(!matches(r#"{"tags": "q"}"#, m));
    assert!(!matches(r#"{"tags": "x"}"#, r#"{"tags": []}"#));
    assert!(matches(r#"{"tags": {"$ne": "x"}}"#, r#"{"tags": []}"#));
}

#[test]
fn in_and_nin_with_empty_lists() {
    assert!(!matches(r#"{"a": {"$in": []}}"#, r#"{"a": 1}"#));
    assert!(matches(r#"{"a": {"$nin": []}}"#, r#"{"a": 1}"#));
}

#[test]
fn dotted_paths_reach_nested_objects_and_exact_keys_win() {
    assert!(matches(r#"{"a.b": 1}"#, r#"{"a": {"b": 1}}"#));
    assert!(matches(r#"{"a.b.c": "x"}"#, r#"{"a": {"b": {"c": "x"}}}"#));
    assert!(!matches(r#"{"a.b": 1}"#, r#"{"a": 1}"#));
    assert!(
        matches(r#"{"a.b": {"$ne": 1}}"#, r#"{"a": 1}"#),
        "through a non-object is missing"
    );
    assert!(matches(r#"{"a.b": 2}"#, r#"{"a.b": 2, "a": {"b": 1}}"#));
    assert!(!matches(r#"{"a.b": 1}"#, r#"{"a.b": 2, "a": {"b": 1}}"#));
}

#[test]
fn and_or_not_combine() {
    let m = r#"{"a": 1, "b": "x"}"#;
    assert!(matches(r#"{"$and": [{"a": 1}, {"b": "x"}]}"#, m));
    assert!(!matches(r#"{"$and": [{"a": 1}, {"b": "y"}]}"#, m));
    assert!(matches(r#"{"$or": [{"a": 2}, {"b": "x"}]}"#, m));
    assert!(!matches(r#"{"$or": [{"a": 2}, {"b": "y"}]}"#, m));
    assert!(matches(r#"{"$not": {"a": 2}}"#, m));
    assert!(!matches(r#"{"$not": {"a": 1}}"#, m));
    assert!(
        matches(r#"{"$not": {"c": 1}}"#, m),
        "$not of a missing field's $eq"
    );
}

#[test]
fn where_document_contains() {
    let f = doc_filter(r#"{"$contains": "cat"}"#);
    assert!(f.matches(None, Some("a cat sat")));
    assert!(!f.matches(None, Some("a Cat sat")), "case-sensitive");
    assert!(!f.matches(None, None));
    let f = doc_filter(r#"{"$not_contains": "cat"}"#);
    assert!(f.matches(None, None));
    assert!(!f.matches(None, Some("cats")));
    let f = doc_filter(
        r#"{"$or": [{"$contains": "dog"}, {"$and": [{"$contains": "a"}, {"$not_contains": "z"}]}]}"#,
    );
    assert!(f.matches(None, Some("a")));
    assert!(!f.matches(None, Some("az")));
    assert!(f.matches(None, Some("hotdog z")));
    // both parts must match
    let f = Filter::parse(Some(r#"{"a": 1}"#), Some(r#"{"$contains": "x"}"#)).expect("valid");
    assert!(f.matches(json(r#"{"a": 1}"#).as_ref(), Some("x")));
    assert!(!f.matches(json(r#"{"a": 1}"#).as_ref(), Some("y")));
    assert!(!f.matches(json(r#"{"a": 2}"#).as_ref(), Some("x")));
}

#[test]
fn malformed_filters_name_the_offending_part() {
    let w = |s: &str| part_of(Some(s), None);
    let d = |s: &str| part_of(None, Some(s));
    assert_eq!(
        w(r#"{"$and": [{"a": 1}, {"year": {"$gt": true}}]}"#),
        "where.$and[1].year.$gt"
    );
    assert_eq!(w(r#"{"a": {"$regex": "x"}}"#), "where.a.$regex");
    assert_eq!(w(r#"{"$nor": []}"#), "where.$nor");
    assert_eq!(w(r#"{"a": null}"#), "where.a");
    assert_eq!(w(r#"{"a": [1]}"#), "where.a");
    assert_eq!(w(r#"{"a": {}}"#), "where.a");
    assert_eq!(w(r#"{"a": {"$eq": {"b": 1}}}"#), "where.a.$eq");
    assert_eq!(w(r#"{"a": {"$in": 1}}"#), "where.a.$in");
    assert_eq!(w(r#"{"a": {"$in": [1, null]}}"#), "where.a.$in[1]");
    assert_eq!(w(r#"{"$and": []}"#), "where.$and");
    assert_eq!(w(r#"{"$or": {"a": 1}}"#), "where.$or");
    assert_eq!(w(r#"{"$not": [{"a": 1}]}"#), "where.$not");
    assert_eq!(w("[1]"), "where");
    assert_eq!(w("{"), "where");
    assert_eq!(d(r#"{"$contains": 1}"#), "where_document.$contains");
    assert_eq!(
        d(r#"{"$or": [{"$contains": "a"}, {"$like": "b"}]}"#),
        "where_document.$or[1].$like"
    );
    assert_eq!(
        d(r#"{"$contains": "a", "$not_contains": "b"}"#),
        "where_document"
    );
    assert_eq!(d("{}"), "where_document");
    assert_eq!(d(r#"{"$and": []}"#), "where_document.$and");
}

fn nested_not(levels: usize) -> String {
    // `levels` where objects: the top one and levels - 1 `$not`s.
    let mut s = r#"{"a": 1}"#.to_owned();
    for _ in 1..levels {
        s = format!(r#"{{"$not": {s}}}"#);
    }
    s
}

#[test]
fn limits_of_depth_and_size() {
    // The innermost field's operand is a scalar, so `levels` objects are `levels` levels.
    assert!(Filter::parse(Some(&nested_not(MAX_FILTER_DEPTH)), None).is_ok());
    let err = Filter::parse(Some(&nested_not(MAX_FILTER_DEPTH + 1)), None).unwrap_err();
    assert!(matches!(err, Error::InvalidFilter { .. }), "{err}");
    // An operator object is a level too.
    let mut s = r#"{"a": {"$eq": 1}}"#.to_owned();
    for _ in 2..MAX_FILTER_DEPTH {
        s = format!(r#"{{"$not": {s}}}"#);
    }
    assert!(Filter::parse(Some(&s), None).is_ok());
    let s = format!(r#"{{"$not": {s}}}"#);
    assert!(Filter::parse(Some(&s), None).is_err());

    let mut doc = r#"{"$contains": "x"}"#.to_owned();
    for _ in 1..=MAX_FILTER_DEPTH {
        doc = format!(r#"{{"$and": [{doc}]}}"#);
    }
    assert_eq!(
        part_of(None, Some(&doc)).matches("$and").count(),
        MAX_FILTER_DEPTH
    );

    let pad = " ".repeat(MAX_FILTER_BYTES - 2);
    let exact = format!("{{{pad}}}");
    assert_eq!(exact.len(), MAX_FILTER_BYTES);
    assert!(Filter::parse(Some(&exact), None).is_ok());
    let over = format!("{{ {pad}}}");
    assert_eq!(part_of(Some(&over), None), "where");
    assert_eq!(part_of(None, Some(&over)), "where_document");
}

#[test]
fn errors_say_what_is_accepted() {
    let err = Filter::parse(Some(r#"{"a": {"$gt": true}}"#), None).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("where.a.$gt") && text.contains("number or a string"),
        "{text}"
    );
}
