//! Vector writer: the one path by which the pipeline's vectors reach the vector store, and the
//! place where a write that lost a race with a delete or a change is dropped.
//!
//! Each write is checked against SQL twice. **Before**, the items' current state stamps each
//! point (its version and metadata): an item deleted meanwhile is not written, one whose
//! content changed is not written either (its vector is stale: the item is embedded again).
//! The store's version gate then keeps a point that already holds a higher version. **After**,
//! SQL is read again: an item deleted during the write gets its point removed (up to the
//! version written, so a newer incarnation's point stays); one whose version moved on (new
//! metadata) is written again from the top; one whose content changed is reported superseded.
//! Whatever the interleaving with the API's deletes and metadata updates, the store ends with
//! the newest version — or none, for a deleted item.
//!
//! A write the store refuses for good ([`VectorError::is_transient`] false: a point of the
//! wrong dimension, an invalid payload) is split point by point, so the points it accepts are
//! stored and only the refused ones fail, each with the store's reason. A database that cannot
//! be read counts as an unavailable store: the worker holds its vectors and writes again.

use crate::domain::ItemId;
use crate::embedding::{ComputedVector, NotStored};
use crate::store::{CurrentItem, Store};
use crate::vectors::{VectorError, VectorPoint, VectorStore};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::Arc;

/// The inputs whose vectors were not stored, and why; an `Err` is a failure of the whole write
/// that may pass.
pub type WriteResult = Result<Vec<(ItemId, NotStored)>, VectorError>;

pub enum VectorWriterMsg {
    Upsert {
        vectors: Vec<ComputedVector>,
        reply: RpcReplyPort<WriteResult>,
    },
}

#[derive(Clone)]
pub struct VectorWriterArgs {
    pub vectors: Arc<dyn VectorStore>,
    pub store: Store,
    /// The model and generation recorded in every point.
    pub model: String,
    pub generation: i64,
}

/// Times one batch is written again because metadata changed under it, before the writer
/// leaves the rest to the metadata outbox (which applies the newest metadata anyway).
const MAX_REWRITES: usize = 3;

pub struct VectorWriter;

fn database_unavailable(e: crate::store::StoreError) -> VectorError {
    VectorError::Unavailable(format!("reading the items' current versions: {e}"))
}

impl VectorWriter {
    async fn write(
        _myself: &ActorRef<VectorWriterMsg>,
        store: &dyn VectorStore,
        points: Vec<VectorPoint>,
    ) -> Result<(), VectorError> {
        if let Some(reason) = crate::fault::fault_reject!(
            _myself,
            &points
                .iter()
                .map(|p| p.item_id.as_str())
                .collect::<Vec<_>>()
        ) {
            return Err(VectorError::Rejected(reason));
        }
        if let Some(reason) = crate::fault::fault_store!(_myself) {
            return Err(VectorError::Unavailable(reason));
        }
        store.upsert(points).await
    }

    /// Writes the points; returns those the store refused for good, with its reasons.
    async fn upsert(
        myself: &ActorRef<VectorWriterMsg>,
        store: &dyn VectorStore,
        points: Vec<VectorPoint>,
    ) -> Result<Vec<(ItemId, String)>, VectorError> {
        let count = points.len();
        match Self::write(myself, store, points.clone()).await {
            Ok(()) => Ok(Vec::new()),
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, count, "vector upsert failed");
                Err(e)
            }
            Err(e) if count == 1 => Ok(vec![(points[0].item_id.clone(), e.to_string())]),
            Err(e) => {
                tracing::warn!(error = %e, count, "the vector store refused a write; writing its points one by one");
                let mut refused = Vec::new();
                for point in points {
                    let item = point.item_id.clone();
                    match Self::write(myself, store, vec![point]).await {
                        Ok(()) => {}
                        Err(e) if e.is_transient() => return Err(e),
                        Err(e) => refused.push((item, e.to_string())),
                    }
                }
                Ok(refused)
            }
        }
    }

    /// The point of a vector for the item as it stands, or why there is none.
    fn stamp(
        args: &VectorWriterArgs,
        computed: &ComputedVector,
        current: Option<&CurrentItem>,
    ) -> Result<VectorPoint, NotStored> {
        let Some(current) = current else {
            return Err(NotStored::Deleted);
        };
        if current.content_hash != computed.content_hash
            || current.context_id != computed.context_id
        {
            return Err(NotStored::Superseded);
        }
        Ok(VectorPoint {
            item_id: computed.item_id.clone(),
            context_id: computed.context_id.clone(),
            content_hash: computed.content_hash.clone(),
            model: args.model.clone(),
            generation: args.generation,
            version: current.version,
            metadata: current.metadata.clone(),
            vector: computed.vector.clone(),
        })
    }

    /// Checks, writes and checks again (see the module docs).
    async fn store_vectors(
        myself: &ActorRef<VectorWriterMsg>,
        args: &VectorWriterArgs,
        vectors: Vec<ComputedVector>,
    ) -> WriteResult {
        let mut not_stored = Vec::new();
        let mut pending = vectors;
        for round in 0..=MAX_REWRITES {
            if pending.is_empty() {
                break;
            }
            let ids: Vec<ItemId> = pending.iter().map(|v| v.item_id.clone()).collect();
            let before = args
                .store
                .current_items(&ids)
                .await
                .map_err(database_unavailable)?;
            let mut points = Vec::with_capacity(pending.len());
            // Beside `points`, one for one: a request may carry the same item twice (two jobs
            // holding it), so they are matched by position, not by id.
            let mut sources: Vec<ComputedVector> = Vec::with_capacity(pending.len());
            let mut gone = Vec::new();
            for computed in pending.drain(..) {
                match Self::stamp(args, &computed, before.get(&computed.item_id)) {
                    Ok(point) => {
                        points.push(point);
                        sources.push(computed);
                    }
                    Err(why) => {
                        if why == NotStored::Deleted {
                            gone.push(computed.item_id.clone());
                        }
                        not_stored.push((computed.item_id, why));
                    }
                }
            }
            // A point this request wrote before (a write retried after a failed check) goes
            // with its item: up to the tombstone's version, so a new incarnation's stays.
            if !gone.is_empty() {
                let tombstones = args
                    .store
                    .tombstone_versions(&gone)
                    .await
                    .map_err(database_unavailable)?;
                let removed: Vec<(ItemId, i64)> = tombstones.into_iter().collect();
                args.vectors.delete(&removed).await?;
            }
            if points.is_empty() {
                break;
            }
            let written: Vec<(ItemId, i64)> = points
                .iter()
                .map(|p| (p.item_id.clone(), p.version))
                .collect();
            let refused = Self::upsert(myself, args.vectors.as_ref(), points).await?;
            let refused_ids: std::collections::HashSet<ItemId> =
                refused.iter().map(|(id, _)| id.clone()).collect();
            not_stored.extend(
                refused
                    .into_iter()
                    .map(|(id, reason)| (id, NotStored::Refused(reason))),
            );
            let written: Vec<((ItemId, i64), ComputedVector)> = written
                .into_iter()
                .zip(sources)
                .filter(|((id, _), _)| !refused_ids.contains(id))
                .collect();
            let ids: Vec<ItemId> = written.iter().map(|((id, _), _)| id.clone()).collect();
            let after = args
                .store
                .current_items(&ids)
                .await
                .map_err(database_unavailable)?;
            let mut removed = Vec::new();
            for ((id, version), source) in written {
                match after.get(&id) {
                    None => {
                        removed.push((id.clone(), version));
                        not_stored.push((id, NotStored::Deleted));
                    }
                    Some(now) if now.content_hash != source.content_hash => {
                        // The newer content's write replaces this point (a higher version).
                        not_stored.push((id, NotStored::Superseded));
                    }
                    Some(now) if now.version != version && round < MAX_REWRITES => {
                        pending.push(source);
                    }
                    Some(_) => {}
                }
            }
            if !removed.is_empty() {
                tracing::debug!(
                    count = removed.len(),
                    "items deleted while their vectors were written; removing the points"
                );
                args.vectors.delete(&removed).await?;
            }
        }
        Ok(not_stored)
    }
}

impl Actor for VectorWriter {
    type Msg = VectorWriterMsg;
    type State = VectorWriterArgs;
    type Arguments = VectorWriterArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: VectorWriterArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        args: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::fault::fault_point!(myself);
        match message {
            VectorWriterMsg::Upsert { vectors, reply } => {
                let result = Self::store_vectors(&myself, args, vectors).await;
                let _ = reply.send(result);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::domain::{ContentHash, ContextId, ItemContent};
    use crate::store::NewItem;

    /// Two jobs holding one item can put it twice in one request: both vectors are written
    /// (the same point), and the writer answers for both instead of panicking.
    #[tokio::test]
    async fn the_same_item_twice_in_one_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::defaults();
        settings.database.url = format!("sqlite://{}", dir.path().join("t.db").display());
        settings.vectors.path = dir.path().join("vectors").display().to_string();
        let store = Store::connect(&settings.database).await.unwrap();
        store.migrate().await.unwrap();
        let vectors = crate::vectors::open(&settings.vectors, None).await.unwrap();
        vectors.ensure_collection(4).await.unwrap();
        let context = ContextId::parse("ctx").unwrap();
        let id = ItemId::parse("twice").unwrap();
        store
            .upsert_items(
                &context,
                &[NewItem {
                    id: id.clone(),
                    content: ItemContent::parse("the text".into(), 100).unwrap(),
                    metadata: None,
                }],
                &[],
            )
            .await
            .unwrap();
        let args = VectorWriterArgs {
            vectors: vectors.clone(),
            store,
            model: "m".into(),
            generation: 1,
        };
        let (writer, handle) = Actor::spawn(None, VectorWriter, args).await.unwrap();
        let computed = ComputedVector {
            item_id: id.clone(),
            context_id: context,
            content_hash: ContentHash::of("the text"),
            vector: vec![0.5; 4],
        };
        let answer = ractor::call!(writer, |reply| VectorWriterMsg::Upsert {
            vectors: vec![computed.clone(), computed],
            reply,
        })
        .expect("the writer answers");
        let not_stored = answer.expect("the write succeeds");
        assert!(not_stored.is_empty(), "{not_stored:?}");
        assert_eq!(vectors.count().await.unwrap(), 1);
        writer.stop(None);
        handle.await.unwrap();
    }
}
