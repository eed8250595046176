//! The handlers, one file per resource.

pub mod control;
pub mod health;
pub mod items;
pub mod jobs;
pub mod search;
