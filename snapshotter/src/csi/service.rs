//! The CSI gRPC surface: Identity (`GetPluginInfo`, `GetPluginCapabilities`,
//! `Probe`) and Node (`NodeGetCapabilities`, `NodeGetInfo`,
//! `NodePublishVolume`, `NodeUnpublishVolume`, `NodeGetVolumeStats`; stage,
//! expand and the rest answer Unimplemented, as a node-only plugin without
//! `STAGE_UNSTAGE_VOLUME` should). Thin: requests are checked in
//! `request.rs`, the work is `volumes.rs`, errors become the status codes
//! kubelet acts on (Unavailable is retried; InvalidArgument, NotFound and
//! PermissionDenied are shown on the pod). Secrets are never logged.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::request;
use super::volumes::{VolumeError, Volumes};
use crate::csi_proto as csi;
use crate::csi_proto::identity_server::Identity;
use crate::csi_proto::node_server::Node;

pub use crate::csi_proto::identity_server;
pub use crate::csi_proto::node_server;

impl From<VolumeError> for Status {
    fn from(e: VolumeError) -> Self {
        match e {
            VolumeError::Invalid(m) => Status::invalid_argument(m),
            VolumeError::NotFound(m) => Status::not_found(m),
            VolumeError::PermissionDenied(m) => Status::permission_denied(m),
            VolumeError::Unavailable(m) => Status::unavailable(m),
            VolumeError::AlreadyExists(m) => Status::already_exists(m),
            VolumeError::FailedPrecondition(m) => Status::failed_precondition(m),
            VolumeError::Internal(m) => Status::internal(m),
        }
    }
}

#[derive(Clone)]
pub struct CsiService {
    pub volumes: Arc<Volumes>,
}

#[tonic::async_trait]
impl Identity for CsiService {
    async fn get_plugin_info(
        &self,
        _: Request<csi::GetPluginInfoRequest>,
    ) -> Result<Response<csi::GetPluginInfoResponse>, Status> {
        Ok(Response::new(csi::GetPluginInfoResponse {
            name: self.volumes.opts.driver_name.clone(),
            vendor_version: env!("CARGO_PKG_VERSION").into(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<csi::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<csi::GetPluginCapabilitiesResponse>, Status> {
        // Node service only: no controller, no topology constraints.
        Ok(Response::new(csi::GetPluginCapabilitiesResponse {
            capabilities: vec![],
        }))
    }

    async fn probe(
        &self,
        _: Request<csi::ProbeRequest>,
    ) -> Result<Response<csi::ProbeResponse>, Status> {
        Ok(Response::new(csi::ProbeResponse { ready: Some(true) }))
    }
}

fn invalid(m: String) -> Status {
    Status::invalid_argument(m)
}

#[tonic::async_trait]
impl Node for CsiService {
    async fn node_stage_volume(
        &self,
        _: Request<csi::NodeStageVolumeRequest>,
    ) -> Result<Response<csi::NodeStageVolumeResponse>, Status> {
        Err(Status::unimplemented("no STAGE_UNSTAGE_VOLUME capability"))
    }

    async fn node_unstage_volume(
        &self,
        _: Request<csi::NodeUnstageVolumeRequest>,
    ) -> Result<Response<csi::NodeUnstageVolumeResponse>, Status> {
        Err(Status::unimplemented("no STAGE_UNSTAGE_VOLUME capability"))
    }

    async fn node_publish_volume(
        &self,
        req: Request<csi::NodePublishVolumeRequest>,
    ) -> Result<Response<csi::NodePublishVolumeResponse>, Status> {
        let req = req.into_inner();
        let publish = request::parse(&req).map_err(invalid)?;
        let cred =
            request::credential(&req.secrets, &publish.reference.registry).map_err(invalid)?;
        self.volumes.publish(publish, cred).await?;
        Ok(Response::new(csi::NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        req: Request<csi::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<csi::NodeUnpublishVolumeResponse>, Status> {
        let req = req.into_inner();
        request::volume_id(&req.volume_id).map_err(invalid)?;
        let target = request::target_path(&req.target_path).map_err(invalid)?;
        self.volumes.unpublish(&req.volume_id, &target).await?;
        Ok(Response::new(csi::NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        req: Request<csi::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<csi::NodeGetVolumeStatsResponse>, Status> {
        let req = req.into_inner();
        request::volume_id(&req.volume_id).map_err(invalid)?;
        if req.volume_path.is_empty() {
            return Err(invalid("volume_path is required".into()));
        }
        let (bytes, files, healthy) = self
            .volumes
            .stats(&req.volume_id, std::path::Path::new(&req.volume_path))
            .await?;
        use csi::volume_usage::Unit;
        let usage = |unit: Unit, used: u64| csi::VolumeUsage {
            available: 0,
            total: used as i64,
            used: used as i64,
            unit: unit as i32,
        };
        Ok(Response::new(csi::NodeGetVolumeStatsResponse {
            usage: vec![usage(Unit::Bytes, bytes), usage(Unit::Inodes, files)],
            volume_condition: Some(csi::VolumeCondition {
                abnormal: !healthy,
                message: if healthy {
                    "model view mounted".into()
                } else {
                    "the model view is not mounted at this path".into()
                },
            }),
        }))
    }

    async fn node_expand_volume(
        &self,
        _: Request<csi::NodeExpandVolumeRequest>,
    ) -> Result<Response<csi::NodeExpandVolumeResponse>, Status> {
        Err(Status::unimplemented("model volumes are read-only"))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<csi::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<csi::NodeGetCapabilitiesResponse>, Status> {
        use csi::node_service_capability::{Rpc, Type, rpc};
        let cap = |t: rpc::Type| csi::NodeServiceCapability {
            r#type: Some(Type::Rpc(Rpc { r#type: t as i32 })),
        };
        Ok(Response::new(csi::NodeGetCapabilitiesResponse {
            capabilities: vec![
                cap(rpc::Type::GetVolumeStats),
                cap(rpc::Type::VolumeCondition),
            ],
        }))
    }

    async fn node_get_info(
        &self,
        _: Request<csi::NodeGetInfoRequest>,
    ) -> Result<Response<csi::NodeGetInfoResponse>, Status> {
        Ok(Response::new(csi::NodeGetInfoResponse {
            node_id: self.volumes.opts.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: None,
        }))
    }
}
