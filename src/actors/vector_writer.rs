//! Vector writer: the one path by which vectors reach the vector store. Upserts wait until the
//! points are durable; point ids derive from item ids, so a repeated write is harmless.
//!
//! A write the store refuses for good ([`VectorError::is_transient`] false: a point of the
//! wrong dimension, an invalid payload) is split point by point, so the points it accepts are
//! stored and only the refused ones fail, each with the store's reason.

use crate::domain::ItemId;
use crate::vectors::{VectorError, VectorPoint, VectorStore};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::Arc;

/// The points the store refused for good, with its reasons; an `Err` is a failure of the
/// whole write that may pass.
pub type UpsertResult = Result<Vec<(ItemId, String)>, VectorError>;

pub enum VectorWriterMsg {
    Upsert {
        points: Vec<VectorPoint>,
        reply: RpcReplyPort<UpsertResult>,
    },
}

pub struct VectorWriter;

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

    async fn upsert(
        myself: &ActorRef<VectorWriterMsg>,
        store: &dyn VectorStore,
        points: Vec<VectorPoint>,
    ) -> UpsertResult {
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
}

impl Actor for VectorWriter {
    type Msg = VectorWriterMsg;
    type State = Arc<dyn VectorStore>;
    type Arguments = Arc<dyn VectorStore>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        store: Arc<dyn VectorStore>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(store)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        store: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::fault::fault_point!(myself);
        match message {
            VectorWriterMsg::Upsert { points, reply } => {
                let result = Self::upsert(&myself, store.as_ref(), points).await;
                let _ = reply.send(result);
            }
        }
        Ok(())
    }
}
