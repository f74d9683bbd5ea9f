//! `new_in_category`: a product was listed in a category the user browsed.

use std::collections::BTreeMap;

use crate::campaign::NewInCategory;
use crate::catalog::{Lookup, Request};
use crate::model::{Item, Str, Time};
use crate::operators::{evaluate_with_facts, with_expiry, Candidate, Clock, Coll};
use crate::state::{At, Product, User};

/// A product's first `catalog` message at `t` in category `c` fires at `t`
/// for the users who viewed `c` (a `category_view`, or a `product_view`
/// with that `category_id`) in `[t - window, t]`; `items = [p]`,
/// `category_id = c`. "Placed no order in that interval" is the campaign's
/// `no_order_within_ms` filter, set to the window (see `lib.rs`).
/// *id*: `(u, p)`.
pub fn new_in_category<'s>(
    campaign: &str,
    params: &NewInCategory,
    clock: Clock,
    new_products: Coll<'s, (Str, (Product, Time))>,
    category_views: Coll<'s, (Str, (User, At))>,
) -> Coll<'s, Request> {
    let window = params.window_ms;
    let views = with_expiry(
        category_views,
        clock,
        &format!("{campaign}: category views in window"),
        move |(_, (_, at))| Some(at.ts().saturating_add(window)),
    );
    let name = campaign.to_string();
    evaluate_with_facts(
        new_products,
        views,
        &format!("{campaign}: category audience"),
        move |category: &Str,
              (product, t): (Product, Time),
              facts: &BTreeMap<(User, At), isize>,
              out: &mut Vec<Request>| {
            let mut last: Option<&User> = None;
            for (user, at) in facts.keys() {
                if last == Some(user) {
                    continue;
                }
                if at.visible(t) && at.ts() <= t && at.ts().saturating_add(window) >= t {
                    last = Some(user);
                    let c = Candidate {
                        category_id: Some(category.clone()),
                        ..Candidate::new(
                            &name,
                            "new_in_category",
                            &[user, &product],
                            vec![Item::product(product.clone())],
                        )
                    };
                    out.push((user.clone(), (t, c, Lookup::Enrich)));
                }
            }
        },
    )
}
