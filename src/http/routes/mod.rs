//! The handlers, one file per resource.

pub mod control;
pub mod dashboard;
pub mod dead_letters;
pub mod docs;
pub mod documents;
pub mod health;
pub mod items;
pub mod jobs;
pub mod observe;
pub mod schedules;
pub mod search;
