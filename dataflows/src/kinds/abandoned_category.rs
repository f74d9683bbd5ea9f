//! `abandoned_category`: a category visited without opening a product.
//!
//! Fires at `T = L + delay` if the last session contains a
//! `category_view` and no `product_view`. `category_id` = the last viewed
//! category; `items` = the category's `top_n` best sellers (most units
//! ordered in `[T - 7 d, T]`, ties by product id), excluding out-of-stock
//! products, looked up on the product side
//! ([`crate::catalog::Lookup::BestSellers`]). *id*: `(u, L)`. The timer is
//! shared with the other session kinds ([`super::session`]).

use crate::state::ActKind;

/// The rule on the last session (application order): its last viewed
/// category, if it has no `product_view`.
pub fn category(session: &[&ActKind]) -> Option<crate::model::Str> {
    if session.iter().any(|k| matches!(k, ActKind::View { .. })) {
        return None;
    }
    session.iter().rev().find_map(|k| match k {
        ActKind::CategoryView { category } => Some(category.clone()),
        _ => None,
    })
}
