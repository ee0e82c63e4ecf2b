//! Services leaving nodes: those on a node down past `lost_after` or
//! drained are moved one at a time (each new copy deployed through the
//! health gate before the old one is stopped), and stale copies a
//! returning node still holds are stopped. Nothing moves or stops while
//! the master is in its recovery window.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use mcp_proto::v1 as pb;

use crate::dispatch::{Dispatch, on_fleet};

/// Moves services and stops stale copies every `every` until `stop` is
/// set; a move that failed is tried again after `retry_after`.
pub async fn run(
    dispatch: Dispatch,
    every: Duration,
    retry_after: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut failed: BTreeMap<String, Instant> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(every) => {}
        }
        if dispatch.fleet().in_recovery() {
            continue;
        }
        for fence in dispatch.fleet().take_fences() {
            dispatch.stop_stale_copy(fence).await;
        }
        failed.retain(|_, at| at.elapsed() < retry_after);
        let skip: BTreeSet<String> = failed.keys().cloned().collect();
        let next = on_fleet(dispatch.fleet(), move |f| f.next_move(&skip)).await;
        let def = match next {
            Ok(Some(def)) => def,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for services to move");
                continue;
            }
        };
        let request = pb::DeployRequest {
            service: Some(def.to_proto()),
            ..Default::default()
        };
        match dispatch.deploy(request, &|_| {}).await {
            Ok(done) => {
                if done.results.iter().any(mcp_core::client::is_failure) {
                    failed.insert(def.name.clone(), Instant::now());
                } else {
                    tracing::info!(service = %def.name, node = %done.node, generation = done.generation, "service moved");
                }
            }
            Err(e) => {
                tracing::warn!(service = %def.name, error = %e, "move failed; trying again later");
                let (service, detail) = (def.name.clone(), e.to_string());
                let _ = on_fleet(dispatch.fleet(), move |f| {
                    Ok(f.store()
                        .record_event("", &service, "move-failed", &detail)?)
                })
                .await;
                failed.insert(def.name.clone(), Instant::now());
            }
        }
    }
}
