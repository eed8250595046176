//! Vector writer: the one path by which vectors reach the vector store. Upserts wait until the
//! points are durable; point ids derive from item ids, so a repeated write is harmless.

use crate::vectors::{VectorError, VectorPoint, VectorStore};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::Arc;

pub enum VectorWriterMsg {
    Upsert {
        points: Vec<VectorPoint>,
        reply: RpcReplyPort<Result<(), VectorError>>,
    },
}

pub struct VectorWriter;

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
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        store: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::fault::fault_point!(_myself);
        match message {
            VectorWriterMsg::Upsert { points, reply } => {
                let count = points.len();
                let result = match crate::fault::fault_store!(_myself) {
                    Some(reason) => Err(crate::vectors::VectorError::Unavailable(reason)),
                    None => store.upsert(points).await,
                };
                if let Err(e) = &result {
                    tracing::warn!(error = %e, count, "vector upsert failed");
                }
                let _ = reply.send(result);
            }
        }
        Ok(())
    }
}
