//! The handlers, one file per resource.

pub mod health;
pub mod items;
pub mod jobs;
