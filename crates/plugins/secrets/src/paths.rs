//! What a secret path may look like (documented in `docs/secrets.md`).
//!
//! - 1 to 512 bytes, of 1 to 32 segments separated by single `/`;
//! - segments of 1 to 128 characters from `A-Z a-z 0-9 . _ -`;
//! - no leading or trailing `/`, no empty segment (`a//b`), no `.` or `..` segment;
//! - the last segment may not be `versions` (it names the version history of the path before it).
//!
//! Paths are case-sensitive and stored exactly as given.

pub const MAX_LEN: usize = 512;
pub const MAX_SEGMENTS: usize = 32;
pub const MAX_SEGMENT_LEN: usize = 128;

/// `Ok` when `path` follows the rules, else why not (safe to show: the path is the caller's).
pub fn validate(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("path must not be empty".into());
    }
    if path.len() > MAX_LEN {
        return Err(format!("path must be at most {MAX_LEN} bytes"));
    }
    if path.starts_with('/') || path.ends_with('/') {
        return Err("path must not start or end with `/`".into());
    }
    let segments: Vec<&str> = path.split('/').collect();
    if segments.len() > MAX_SEGMENTS {
        return Err(format!("path must have at most {MAX_SEGMENTS} segments"));
    }
    for segment in &segments {
        if segment.is_empty() {
            return Err("path must not contain empty segments (`//`)".into());
        }
        if *segment == "." || *segment == ".." {
            return Err("path must not contain `.` or `..` segments".into());
        }
        if segment.len() > MAX_SEGMENT_LEN {
            return Err(format!("each path segment must be at most {MAX_SEGMENT_LEN} characters"));
        }
        if !segment.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
            return Err("path segments may contain only letters, digits, `.`, `_` and `-`".into());
        }
    }
    if segments.last().is_some_and(|s| *s == "versions") {
        return Err("the last path segment must not be `versions`".into());
    }
    Ok(())
}

/// Whether a listing `prefix` is acceptable: empty, or characters a path may hold.
pub fn validate_prefix(prefix: &str) -> Result<(), String> {
    if prefix.len() > MAX_LEN {
        return Err(format!("prefix must be at most {MAX_LEN} bytes"));
    }
    if !prefix.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/')) {
        return Err("prefix may contain only letters, digits, `.`, `_`, `-` and `/`".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn good_and_bad_paths() {
        for ok in ["a", "prod/database/password", "A-b_c.d/e", "x/.hidden", "versions/x", "a/versions2"] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(129);
        let deep = vec!["a"; 33].join("/");
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "a/../b",
            "..",
            ".",
            "a/./b",
            "a b",
            "a/b?c",
            "ä",
            "a/versions",
            "versions",
            &long,
            &deep,
            "a\\b",
            "a%2Fb",
        ] {
            assert!(validate(bad).is_err(), "{bad}");
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::{MAX_LEN, MAX_SEGMENT_LEN, MAX_SEGMENTS, validate, validate_prefix};

        /// The rules of `docs/secrets.md`, stated independently of `validate`.
        fn follows_the_rules(path: &str) -> bool {
            let segments: Vec<&str> = path.split('/').collect();
            !path.is_empty()
                && path.len() <= MAX_LEN
                && segments.len() <= MAX_SEGMENTS
                && segments.iter().all(|s| {
                    !s.is_empty()
                        && s.len() <= MAX_SEGMENT_LEN
                        && *s != "."
                        && *s != ".."
                        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
                })
                && segments.last() != Some(&"versions")
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

            /// Any string at all: no panic, and accepted exactly when it follows the rules.
            #[test]
            fn any_string_is_judged_by_the_rules(path in any::<String>()) {
                prop_assert_eq!(validate(&path).is_ok(), follows_the_rules(&path));
                let _ = validate_prefix(&path);
            }

            /// Strings close to valid paths (the characters that matter, slashes and dots).
            #[test]
            fn near_miss_paths_are_judged_by_the_rules(path in "[a-zA-Z0-9._/ %-]{0,40}") {
                prop_assert_eq!(validate(&path).is_ok(), follows_the_rules(&path));
            }

            /// Every path built by the rules is accepted.
            #[test]
            fn paths_built_by_the_rules_are_accepted(segments in prop::collection::vec("[a-zA-Z0-9_-][a-zA-Z0-9._-]{0,20}", 1..8)) {
                let path = segments.join("/");
                prop_assume!(!path.ends_with("/versions") && path != "versions");
                prop_assert!(validate(&path).is_ok(), "{}", path);
            }
        }
    }
}
