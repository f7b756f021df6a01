//! The gRPC face: `containerd.services.snapshots.v1.Snapshots` on top of
//! [`Snapshots`], with containerd-client's message types.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;

use containerd_client::services::v1::snapshots::*;
use tonic::{Request, Response, Status};

use crate::filters::Filters;
use crate::meta::{Kind, Record};
use crate::model::{ModelFetcher, is_model_prepare, prepare_model};
use crate::snapshots::Snapshots;

pub mod generated {
    include!(concat!(
        env!("OUT_DIR"),
        "/containerd.services.snapshots.v1.Snapshots.rs"
    ));
}

pub use generated::snapshots_server::{Snapshots as SnapshotsApi, SnapshotsServer};

/// `google.protobuf.Empty` (prost maps it to `()`).
pub type Empty = ();

pub struct Service {
    pub snaps: Arc<Snapshots>,
    pub fetcher: Arc<ModelFetcher>,
}

fn ts(nanos: i128) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (nanos / 1_000_000_000) as i64,
        nanos: (nanos % 1_000_000_000) as i32,
    }
}

pub fn info(r: &Record) -> Info {
    Info {
        name: r.name.clone(),
        parent: r.parent.clone(),
        kind: match r.kind {
            Kind::View => 1,
            Kind::Active => 2,
            Kind::Committed => 3,
        },
        created_at: Some(ts(r.created)),
        updated_at: Some(ts(r.updated)),
        labels: r
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn btree(m: HashMap<String, String>) -> BTreeMap<String, String> {
    m.into_iter().collect()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::error::Result<T> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(Status::from)
}

type ListStream =
    Pin<Box<dyn futures::Stream<Item = Result<ListSnapshotsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SnapshotsApi for Service {
    async fn prepare(
        &self,
        req: Request<PrepareSnapshotRequest>,
    ) -> Result<Response<PrepareSnapshotResponse>, Status> {
        let r = req.into_inner();
        let labels = btree(r.labels);
        tracing::debug!(key = %r.key, parent = %r.parent, "prepare");
        if is_model_prepare(&labels) {
            return Err(prepare_model(&self.snaps, &self.fetcher, &r.parent, labels)
                .await
                .into());
        }
        if crate::cri::is_cri_prepare(&labels)
            && let Some(model) = self
                .fetcher
                .cri
                .model_labels(&self.fetcher.client, &labels, &r.parent)
                .await
        {
            // A ModelPack layer pulled through CRI: our labels, derived from
            // the verified manifest and config, replace nothing the caller sent.
            let mut labels = labels;
            labels.extend(model.to_labels());
            return Err(prepare_model(&self.snaps, &self.fetcher, &r.parent, labels)
                .await
                .into());
        }
        let s = self.snaps.clone();
        let mounts = blocking(move || s.create(Kind::Active, &r.key, &r.parent, labels)).await?;
        Ok(Response::new(PrepareSnapshotResponse { mounts }))
    }

    async fn view(
        &self,
        req: Request<ViewSnapshotRequest>,
    ) -> Result<Response<ViewSnapshotResponse>, Status> {
        let r = req.into_inner();
        let s = self.snaps.clone();
        let mounts =
            blocking(move || s.create(Kind::View, &r.key, &r.parent, btree(r.labels))).await?;
        Ok(Response::new(ViewSnapshotResponse { mounts }))
    }

    async fn mounts(
        &self,
        req: Request<MountsRequest>,
    ) -> Result<Response<MountsResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(MountsResponse {
            mounts: self.snaps.mounts(&r.key)?,
        }))
    }

    async fn commit(&self, req: Request<CommitSnapshotRequest>) -> Result<Response<()>, Status> {
        let r = req.into_inner();
        let s = self.snaps.clone();
        blocking(move || s.commit(&r.name, &r.key, btree(r.labels))).await?;
        Ok(Response::new(()))
    }

    async fn remove(&self, req: Request<RemoveSnapshotRequest>) -> Result<Response<()>, Status> {
        let r = req.into_inner();
        let s = self.snaps.clone();
        blocking(move || s.remove(&r.key)).await?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        req: Request<StatSnapshotRequest>,
    ) -> Result<Response<StatSnapshotResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(StatSnapshotResponse {
            info: Some(info(&self.snaps.stat(&r.key)?)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateSnapshotRequest>,
    ) -> Result<Response<UpdateSnapshotResponse>, Status> {
        let r = req.into_inner();
        let i = r
            .info
            .ok_or_else(|| Status::invalid_argument("update without info"))?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let rec = self.snaps.update_labels(&i.name, btree(i.labels), &paths)?;
        Ok(Response::new(UpdateSnapshotResponse {
            info: Some(info(&rec)),
        }))
    }

    type ListStream = ListStream;

    async fn list(
        &self,
        req: Request<ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let r = req.into_inner();
        let f = Filters::parse(&r.filters).map_err(Status::invalid_argument)?;
        let all: Vec<Info> = self
            .snaps
            .meta
            .all()?
            .iter()
            .filter(|r| f.matches(r))
            .map(info)
            .collect();
        let batches: Vec<Result<ListSnapshotsResponse, Status>> = all
            .chunks(100)
            .map(|c| Ok(ListSnapshotsResponse { info: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(batches))))
    }

    async fn usage(&self, req: Request<UsageRequest>) -> Result<Response<UsageResponse>, Status> {
        let r = req.into_inner();
        let s = self.snaps.clone();
        let (size, inodes) = blocking(move || s.usage(&r.key)).await?;
        Ok(Response::new(UsageResponse { size, inodes }))
    }

    async fn cleanup(&self, _req: Request<CleanupRequest>) -> Result<Response<()>, Status> {
        let s = self.snaps.clone();
        blocking(move || s.cleanup()).await?;
        Ok(Response::new(()))
    }
}
