//! The planning of a reconcile job: compares SQL with the vector store and repairs, a bounded
//! page per planner step, in two phases recorded in the job's planning cursor (so a restart
//! resumes where it stopped):
//!
//! 1. `points:<point id>` — pages through every stored point: a point whose item does not
//!    exist (or lives in another context) is an orphan and is deleted, up to the version it
//!    holds (a point written since by a new incarnation stays);
//! 2. `items:<item id>` — pages through the COMPLETED items and fetches their points: an item
//!    whose point is missing, or holds another content hash, model, dimension or generation,
//!    is planned as a task that embeds it again (`reembed`, fresh attempts; these are the
//!    job's items, so its counters count the repairs); one whose point holds an older version
//!    or other metadata gets its payload refreshed at once.
//!
//! What it found is the job's `result` ([`Findings`]), written after every page. This module
//! finds; the planner writes the pages it answers, as it writes an embed job's.

use crate::domain::ItemId;
use crate::point_sync::{PointSync, SyncError};
use crate::store::{PayloadChange, PlannedItem, Store, StoreError};
use crate::vectors::{VectorError, VectorPoint, VectorStore};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// What a reconcile job compares SQL with, and what its points should hold.
pub struct Reconciling<'a> {
    pub store: &'a Store,
    pub vectors: &'a dyn VectorStore,
    pub point_sync: &'a PointSync,
    pub model: &'a str,
    pub dimension: usize,
    pub generation: i64,
    pub page_size: usize,
}

/// One page of a reconcile job: the items to embed again, where the next page starts (`None`
/// when the job is done), and the findings so far.
#[derive(Debug)]
pub struct ReconcilePage {
    pub repairs: Vec<PlannedItem>,
    pub next_cursor: Option<String>,
    pub findings: Findings,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Vectors(#[from] VectorError),
    #[error(transparent)]
    Sync(#[from] SyncError),
}

/// What a reconcile job found and repaired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Findings {
    pub points_scanned: u64,
    /// Points without an item, deleted.
    pub orphans_deleted: u64,
    pub items_checked: u64,
    /// COMPLETED items without a point: embedded again.
    pub points_missing: u64,
    /// COMPLETED items whose point holds another content hash, model, dimension or generation:
    /// embedded again.
    pub points_stale: u64,
    /// Points whose payload held an older version or other metadata: refreshed.
    pub payloads_refreshed: u64,
}

impl Findings {
    pub fn from_result(result: Option<&serde_json::Value>) -> Self {
        result
            .and_then(|r| serde_json::from_value(r.clone()).ok())
            .unwrap_or_default()
    }
}

/// Where a reconcile job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Points(Option<uuid::Uuid>),
    Items(String),
}

const POINTS: &str = "points:";
const ITEMS: &str = "items:";

impl Phase {
    fn of(cursor: Option<&str>) -> Self {
        match cursor {
            None => Self::Points(None),
            Some(c) => match c.strip_prefix(ITEMS) {
                Some(after) => Self::Items(after.to_owned()),
                None => Self::Points(
                    c.strip_prefix(POINTS)
                        .and_then(|id| uuid::Uuid::parse_str(id).ok()),
                ),
            },
        }
    }
}

/// Compares one page (after `cursor`), deletes the orphans and refreshes the payloads found on
/// it, and answers the items to embed again.
pub async fn page(
    on: &Reconciling<'_>,
    cursor: Option<&str>,
    mut findings: Findings,
) -> Result<ReconcilePage, ReconcileError> {
    match Phase::of(cursor) {
        Phase::Points(from) => {
            let page = on.vectors.scroll(from, on.page_size).await?;
            let ids: Vec<ItemId> = page.points.iter().map(|p| p.item_id.clone()).collect();
            let current = on.store.current_items(&ids).await?;
            let orphans: Vec<(ItemId, i64)> = page
                .points
                .iter()
                .filter(|p| {
                    current
                        .get(&p.item_id)
                        .is_none_or(|item| item.context_id != p.context_id)
                })
                .map(|p| (p.item_id.clone(), p.version))
                .collect();
            if !orphans.is_empty() {
                tracing::info!(count = orphans.len(), "deleting points without an item");
                on.vectors.delete(&orphans).await?;
            }
            findings.points_scanned += page.points.len() as u64;
            findings.orphans_deleted += orphans.len() as u64;
            let next = match page.next {
                Some(next) => format!("{POINTS}{next}"),
                None => ITEMS.to_owned(),
            };
            Ok(ReconcilePage {
                repairs: Vec::new(),
                next_cursor: Some(next),
                findings,
            })
        }
        Phase::Items(after) => {
            let items = on.store.completed_page(&after, on.page_size).await?;
            let Some(last) = items.last() else {
                return Ok(ReconcilePage {
                    repairs: Vec::new(),
                    next_cursor: None,
                    findings,
                });
            };
            let next = format!("{ITEMS}{last_id}", last_id = last.id);
            let ids: Vec<ItemId> = items.iter().map(|i| i.id.clone()).collect();
            let points: HashMap<ItemId, VectorPoint> = on
                .vectors
                .get(&ids)
                .await?
                .into_iter()
                .map(|p| (p.item_id.clone(), p))
                .collect();
            let mut repairs = Vec::new();
            let mut refresh = Vec::new();
            for item in &items {
                match points.get(&item.id) {
                    None => {
                        findings.points_missing += 1;
                        repairs.push(item.id.clone());
                    }
                    Some(p)
                        if p.content_hash != item.content_hash
                            || p.model != on.model
                            || p.vector.len() != on.dimension
                            || p.generation != on.generation =>
                    {
                        findings.points_stale += 1;
                        repairs.push(item.id.clone());
                    }
                    Some(p) if p.version < item.version || p.metadata != item.metadata => {
                        refresh.push(PayloadChange {
                            item_id: item.id.clone(),
                            version: item.version,
                            metadata: item.metadata.clone(),
                        });
                    }
                    Some(_) => {}
                }
            }
            findings.items_checked += items.len() as u64;
            if !refresh.is_empty() {
                on.point_sync.apply_payloads(&refresh).await?;
                findings.payloads_refreshed += refresh.len() as u64;
            }
            Ok(ReconcilePage {
                // Repairs get fresh attempts: the item was COMPLETED, this is a new try.
                repairs: repairs
                    .into_iter()
                    .map(|id| PlannedItem { id, attempts: 0 })
                    .collect(),
                next_cursor: Some(next),
                findings,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_names_the_phase() {
        assert_eq!(Phase::of(None), Phase::Points(None));
        let id = uuid::Uuid::new_v4();
        assert_eq!(
            Phase::of(Some(&format!("points:{id}"))),
            Phase::Points(Some(id))
        );
        assert_eq!(Phase::of(Some("items:")), Phase::Items(String::new()));
        assert_eq!(Phase::of(Some("items:a-1")), Phase::Items("a-1".into()));
        let f = Findings {
            orphans_deleted: 3,
            ..Findings::default()
        };
        assert_eq!(
            Findings::from_result(Some(&serde_json::to_value(f).unwrap())),
            f
        );
    }
}
