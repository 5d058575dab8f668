//! The logic behind `ha-admin`'s larger commands.
//!
//! | command | module |
//! |---|---|
//! | `ha-admin dlq list`, `ha-admin dlq replay` | [`dlq`] |

pub mod dlq;
