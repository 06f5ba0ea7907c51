//! Cursors of the collections' REST lists (`?cursor=&limit=`): the edge row of a keyset page
//! and the query it belongs to, signed with the kernel's cursor key so that a client can
//! neither forge a position nor carry one over to another query.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nexus_kernel::query::hmac_sha256;
use serde::{Deserialize, Serialize};

use crate::service::Edge;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// [`signature`] of the query.
    pub q: String,
    pub edge: Edge,
    /// The rows before the edge rather than after it.
    pub back: bool,
}

/// What identifies a query for its cursors: the collection, its filter and its sort (the page
/// size and the selected fields may change from page to page).
pub fn signature(key: &[u8], collection: &str, filter_and_sort: &[(String, String)]) -> String {
    let mut text = collection.to_string();
    for (k, v) in filter_and_sort {
        text.push('\n');
        text.push_str(k);
        text.push('=');
        text.push_str(v);
    }
    let mac = hmac_sha256(key, text.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.get(..12).unwrap_or_default())
}

pub fn seal(key: &[u8], cursor: &Cursor) -> String {
    nexus_kernel::query::seal(key, cursor)
}

/// The cursor in `token`; `None` when it was not made by [`seal`] with `key`.
pub fn open(key: &[u8], token: &str) -> Option<Cursor> {
    nexus_kernel::query::unseal(key, token)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_cursor_opens_with_its_key_only_and_unchanged() {
        let c = Cursor {
            q: String::from("s"),
            edge: Edge { keys: vec![Some(json!(3)), None, Some(json!(null))], id: "a".into() },
            back: true,
        };
        let token = seal(b"k1", &c);
        assert_eq!(open(b"k1", &token), Some(c));
        assert_eq!(open(b"k2", &token), None);
        let (body, mac) = token.split_once('.').unwrap_or_default();
        assert_eq!(open(b"k1", &format!("{body}x.{mac}")), None);
        assert_eq!(open(b"k1", "garbage"), None);
    }
}
