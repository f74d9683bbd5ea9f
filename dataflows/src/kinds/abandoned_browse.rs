//! `abandoned_browse`: a session of product views that led nowhere.
//!
//! Let `L` be the time of the user's latest activity. Fires at the first
//! time `τ >= L + delay` at which, on the state known at `τ`, `L` is still
//! the latest activity and the session containing it has a `product_view`
//! and no `cart_add` and no `order_placed`; `items` = the distinct products
//! viewed in it, most recent first, at most `max_items`. *id*: `(u, L)`.
//! The timer is shared with the other session kinds ([`super::session`]).

use crate::model::Item;
use crate::state::ActKind;

/// The rule on the last session (application order): the distinct viewed
/// products, latest first, at most `max_items`; `None` when the session
/// has a `cart_add` or an order, or no view.
pub fn items(session: &[&ActKind], max_items: usize) -> Option<Vec<Item>> {
    if session
        .iter()
        .any(|k| matches!(k, ActKind::CartAdd | ActKind::Order))
    {
        return None;
    }
    let mut items: Vec<Item> = Vec::new();
    for kind in session.iter().rev() {
        if let ActKind::View { product } = kind {
            if !items.iter().any(|i| &i.product_id == product) {
                items.push(Item::product(product.clone()));
                if items.len() == max_items {
                    break;
                }
            }
        }
    }
    (!items.is_empty()).then_some(items)
}
