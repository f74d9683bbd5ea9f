//! One function per trigger kind: each takes the maintained collections it
//! needs and returns the kind's candidates, `(user, Candidate)`, present at
//! the times its conditions hold (triggers.md). `fire_once` turns the first
//! appearance of each candidate into a trigger record.

pub mod abandoned_browse;
pub mod abandoned_cart;
pub mod back_in_stock;
pub mod price_drop;

pub use abandoned_browse::abandoned_browse;
pub use abandoned_cart::abandoned_cart;
pub use back_in_stock::back_in_stock;
pub use price_drop::price_drop;
