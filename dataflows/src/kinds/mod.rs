//! One function per trigger kind: each takes the maintained collections it
//! needs and returns the kind's candidates, `(user, (τ, candidate, lookup))`
//! (or, for the core kinds, complete candidates), present at the times its
//! conditions hold (triggers.md). The product side ([`crate::catalog`])
//! completes them, the gate filters them, and `fire_once` turns the first
//! appearance of each into a trigger record.
//!
//! The three session kinds share one timer ([`session`]); each keeps its
//! rule in its own module.

pub mod abandoned_browse;
pub mod abandoned_cart;
pub mod abandoned_category;
pub mod abandoned_search;
pub mod back_in_stock;
pub mod cancelled_alternative;
pub mod new_in_category;
pub mod order_timers;
pub mod price_drop;
pub mod reactivation;
pub mod session;
pub mod wishlist_reminder;

pub use abandoned_cart::abandoned_cart;
pub use back_in_stock::back_in_stock;
pub use cancelled_alternative::cancelled_alternative;
pub use new_in_category::new_in_category;
pub use order_timers::{complementary, review_request};
pub use price_drop::price_drop;
pub use reactivation::reactivation;
pub use session::session_kinds;
pub use wishlist_reminder::wishlist_reminder;
