//! `abandoned_search`: a search the user did not follow up.
//!
//! Fires at `T = L + delay` (`L` = latest activity) if the last session
//! contains a `search` after which the session has no `product_view`,
//! `cart_add` or `order_placed`; `query` = the last such search's query.
//! *id*: `(u, L)`. The timer is shared with the other session kinds
//! ([`super::session`]).

use crate::state::ActKind;

/// The rule on the last session (application order): the query of its last
/// search, if nothing after that search is a view, a `cart_add` or an order.
pub fn query(session: &[&ActKind]) -> Option<crate::model::Str> {
    let i = session
        .iter()
        .rposition(|k| matches!(k, ActKind::Search { .. }))?;
    if session[i + 1..]
        .iter()
        .any(|k| matches!(k, ActKind::View { .. } | ActKind::CartAdd | ActKind::Order))
    {
        return None;
    }
    match session[i] {
        ActKind::Search { query } => Some(query.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(q: &str) -> ActKind {
        ActKind::Search { query: q.into() }
    }

    #[test]
    fn last_search_without_follow_up() {
        let view = ActKind::View {
            product: "p".into(),
        };
        let (a, b) = (search("a"), search("b"));
        assert_eq!(query(&[&a, &b]), Some("b".into()));
        assert_eq!(query(&[&a, &view]), None);
        assert_eq!(query(&[&a, &view, &b]), Some("b".into()));
        assert_eq!(query(&[&a, &ActKind::Other]), Some("a".into()));
        assert_eq!(query(&[&view]), None);
    }
}
