//! Deploys: checking what can be known first (`preflight`), recording the
//! intent, converging the components in dependency order (pull, create,
//! replace through a staged instance, gate on readiness, roll back), sync
//! of many services, and recovery of what an interrupted deploy left.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use futures::stream::{self, StreamExt};
use mcp_core::servicedef::{ComponentDef, ServiceDef};
use mcp_core::wire::{Action, DeployOptions, PullPolicy};
use mcp_runtime::{InstanceInfo, InstanceState, RuntimeError, labels};

use super::gate::Gate;
use super::{ComponentOutcome, Converged, Reconciler, STAGED_SUFFIX, ownership, plan};
use crate::error::AgentError;
use crate::registry::{ComponentRecord, ServiceRecord};

/// Services a sync deploys at once.
const SYNC_CONCURRENCY: usize = 4;

/// One step of a component's deploy, for progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployProgress {
    /// The component.
    pub component: String,
    /// `pulling`, `creating`, `starting`, `waiting`, `ready`, `started`
    /// (not waited for), `rolling-back` or `skipped`.
    pub phase: &'static str,
    /// For `waiting`, the last probe's result; otherwise a short note.
    pub detail: String,
}

/// Where a deploy reports its progress.
pub type ProgressFn = dyn Fn(DeployProgress) + Send + Sync;

/// What [`Reconciler::recover`] did, per (service, component).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Leftovers resolved (and started when their service is active).
    pub resolved: Vec<(String, String)>,
    /// Those that could not be: to try again later.
    pub failed: Vec<(String, String)>,
}

/// Event kind of a leftover of an interrupted deploy that could not be
/// resolved or started.
pub const RECOVERY_FAILED: &str = "recovery-failed";

/// Event kind of a leftover resolved on a later try.
pub const RECOVERED: &str = "recovered";

impl Reconciler {
    /// Deploys a service definition: pulls images, creates what is new,
    /// replaces what changed, leaves what did not, and removes components the
    /// definition no longer has. With `only`, touches that component alone.
    ///
    /// A component that fails keeps its previous instance and registry record.
    pub async fn deploy(
        &self,
        def: &ServiceDef,
        only: Option<&str>,
        pull: PullPolicy,
    ) -> Result<Vec<ComponentOutcome>, AgentError> {
        self.deploy_with(def, only, pull, DeployOptions::default(), &|_| {})
            .await
    }

    /// [`deploy`](Self::deploy), reporting progress and with `options`.
    ///
    /// Components start in dependency order (`depends_on`), those of one
    /// wave at once; a component whose dependency failed is not deployed.
    /// Every created or replaced instance must become ready (running, and
    /// healthy when it has a health check) within the deploy timeout. A
    /// replaced component that does not is put back: with host ports its
    /// old instance was stopped and starts again; without, the old
    /// instance was never stopped (the new one ran beside it).
    pub async fn deploy_with(
        &self,
        def: &ServiceDef,
        only: Option<&str>,
        pull: PullPolicy,
        options: DeployOptions,
        progress: &ProgressFn,
    ) -> Result<Vec<ComponentOutcome>, AgentError> {
        if let Some(name) = only
            && !def.components.iter().any(|c| c.name == name)
        {
            return Err(AgentError::NotFound(format!(
                "service {:?} has no component {name:?}",
                def.name
            )));
        }
        let _guard = self.locks.lock(&def.name).await;
        self.runtime.ping().await?;
        let previous_service = self.registry.get_service(&def.name)?;
        let previous: BTreeMap<String, ComponentRecord> = self
            .registry
            .components(&def.name)?
            .into_iter()
            .map(|c| (c.name.clone(), c))
            .collect();
        let targets: Vec<&ComponentDef> = def
            .components
            .iter()
            .filter(|c| only.is_none_or(|o| o == c.name))
            .collect();
        let dropped: Vec<&ComponentRecord> = if only.is_none() {
            previous
                .values()
                .filter(|p| !def.components.iter().any(|c| c.name == p.name))
                .collect()
        } else {
            Vec::new()
        };

        // What can be known before anything changes is checked for every
        // component first: a refusal leaves the whole service as it was.
        let specs = self.preflight(def, &targets).await?;

        // Record the intent first, so a crash mid-way leaves the registry
        // naming what the operator asked for.
        let service = ServiceRecord::from_def(def);
        let intent: Vec<ComponentRecord> = targets
            .iter()
            .map(|c| ComponentRecord {
                container_id: previous.get(&c.name).and_then(|p| p.container_id.clone()),
                ..ComponentRecord::from_def(&def.name, c)
            })
            .collect();
        self.registry.record_deploy(&service, &intent, &[])?;

        let wait = (!options.no_wait).then(|| options.timeout.unwrap_or(self.deploy.timeout));
        let planned: Vec<(&ComponentDef, mcp_runtime::InstanceSpec)> =
            targets.iter().copied().zip(specs).collect();
        let converged = self
            .converge_in_order(def, &planned, &previous, pull, wait, progress)
            .await;
        let removed = join_all(
            dropped
                .iter()
                .map(|p| self.remove_instance(&def.name, &p.name)),
        )
        .await;

        // Settle the registry: successes keep their new record, failures get
        // their previous record back (or none, when they are new).
        let mut settled = Vec::new();
        let mut forget = Vec::new();
        let mut outcomes = Vec::new();
        for (component, result) in converged {
            match result {
                Ok((action, id)) => {
                    settled.push(ComponentRecord {
                        container_id: id.clone(),
                        ..ComponentRecord::from_def(&def.name, component)
                    });
                    outcomes.push(ComponentOutcome::ok(&component.name, action, id));
                }
                Err(err) => {
                    tracing::warn!(service = %def.name, component = %component.name, error = %err, "deploy failed");
                    if let AgentError::NotReady {
                        rolled_back: true, ..
                    } = &err
                    {
                        tracing::warn!(service = %def.name, component = %component.name, "rolled back to the previous version");
                    }
                    match previous.get(&component.name) {
                        Some(p) => settled.push(p.clone()),
                        None => forget.push(component.name.clone()),
                    }
                    outcomes.push(ComponentOutcome::failed(&component.name, &err));
                }
            }
        }
        for (record, result) in dropped.iter().zip(removed) {
            match result {
                Ok(()) => {
                    forget.push(record.name.clone());
                    outcomes.push(ComponentOutcome::ok(&record.name, Action::Removed, None));
                }
                Err(err) => outcomes.push(ComponentOutcome::failed(&record.name, &err)),
            }
        }
        let all_failed = !outcomes.is_empty() && outcomes.iter().all(ComponentOutcome::is_failure);
        if all_failed && previous_service.is_none() {
            self.registry.delete_service(&def.name)?;
        } else {
            let service = match (&previous_service, all_failed) {
                (Some(prev), true) => prev.clone(),
                _ => service,
            };
            self.registry.record_deploy(&service, &settled, &forget)?;
        }

        // The revision history: what was created, replaced or failed.
        self.record_revisions(&def.name, &targets, &outcomes);

        self.observed.invalidate();
        self.record_events(&def.name, "deployed", &outcomes);
        Ok(outcomes)
    }

    /// Checks, before anything changes, what would make the node refuse any
    /// of `targets` for a reason it can know now: a unikernel on a node
    /// without QEMU, a volume outside `[security] allowed_volume_roots`,
    /// the files a VM boots from (missing, or where they may
    /// not be), an instance name another service's component also has, a
    /// host port an active service's component already publishes, an
    /// instance of the name that belongs to another service or that MCP
    /// does not manage. Returns each target's instance spec, its VM files
    /// resolved.
    async fn preflight(
        &self,
        def: &ServiceDef,
        targets: &[&ComponentDef],
    ) -> Result<Vec<mcp_runtime::InstanceSpec>, AgentError> {
        if let Some(c) = targets
            .iter()
            .find(|c| c.runtime == mcp_runtime::RuntimeKind::Unikernel)
            && self.runtime.vm_support().await.is_none()
        {
            return Err(AgentError::Conflict(format!(
                "{}/{}: this node cannot run unikernels: the agent found no QEMU at start ([unikernel] qemu)",
                def.name, c.name
            )));
        }
        self.volume_roots.check(def, targets)?;
        let specs = targets
            .iter()
            .map(|c| self.spec_for(&def.name, c))
            .collect::<Result<Vec<_>, _>>()?;
        let owners = self.owners()?;
        for c in targets {
            if let Some((service, component)) = owners.name_taken_by(&def.name, &c.name) {
                return Err(AgentError::Conflict(ownership::shared_name(
                    &def.name, &c.name, service, component,
                )));
            }
        }
        self.check_host_ports(def, targets)?;
        let found = join_all(specs.iter().map(|s| self.runtime.inspect(&s.name))).await;
        for ((c, spec), inst) in targets.iter().zip(&specs).zip(found) {
            if let Some(inst) = inst?
                && let Some(why) =
                    ownership::refusal(&owners.owner(&inst), &def.name, &c.name, &spec.name)
            {
                return Err(AgentError::Conflict(why));
            }
        }
        Ok(specs)
    }

    /// Refuses a component of `targets` that publishes a host port a
    /// component of another active service already publishes (the same
    /// port and protocol on an overlapping host address): one of the two
    /// could never start.
    fn check_host_ports(
        &self,
        def: &ServiceDef,
        targets: &[&ComponentDef],
    ) -> Result<(), AgentError> {
        let others: Vec<(ServiceRecord, Vec<ComponentRecord>)> = self
            .registry
            .list_services()?
            .into_iter()
            .filter(|s| s.active && s.name != def.name)
            .map(|s| {
                let comps = self.registry.components(&s.name)?;
                Ok((s, comps))
            })
            .collect::<Result<_, AgentError>>()?;
        for c in targets {
            for port in &self.publish.ports(&c.ports) {
                let taken = others.iter().find_map(|(s, comps)| {
                    comps.iter().find_map(|o| {
                        self.publish
                            .ports(&o.definition.ports)
                            .iter()
                            .any(|p| {
                                p.host_port == port.host_port
                                    && p.protocol == port.protocol
                                    && mcp_core::servicedef::host_ips_overlap(
                                        &p.host_ip,
                                        &port.host_ip,
                                    )
                            })
                            .then_some((s.name.as_str(), o.name.as_str()))
                    })
                });
                if let Some((service, component)) = taken {
                    let host = match port.host_ip.as_str() {
                        "" => port.host_port.to_string(),
                        ip if ip.contains(':') => format!("[{ip}]:{}", port.host_port),
                        ip => format!("{ip}:{}", port.host_port),
                    };
                    return Err(AgentError::Conflict(format!(
                        "{}/{}: host port {host}/{} is already published by component {component:?} of service {service:?}",
                        def.name, c.name, port.protocol
                    )));
                }
            }
        }
        Ok(())
    }

    /// Converges the `planned` components (each with its instance spec)
    /// wave by wave in dependency order (the components of a wave at once).
    /// A component whose dependency (directly or not) failed is not
    /// touched: it fails with the reason. Returns each component with its
    /// result, in the order they were handled.
    async fn converge_in_order<'d>(
        &self,
        def: &'d ServiceDef,
        planned: &[(&'d ComponentDef, mcp_runtime::InstanceSpec)],
        previous: &BTreeMap<String, ComponentRecord>,
        pull: PullPolicy,
        wait: Option<Duration>,
        progress: &ProgressFn,
    ) -> Vec<(&'d ComponentDef, Converged)> {
        let mut done: Vec<(&ComponentDef, Converged)> = Vec::new();
        let mut failed: Vec<String> = Vec::new();
        for wave in def.start_order() {
            let wave: Vec<&(&ComponentDef, mcp_runtime::InstanceSpec)> = wave
                .into_iter()
                .filter_map(|c| planned.iter().find(|(t, _)| t.name == c.name))
                .collect();
            let mut runnable = Vec::new();
            for planned @ (c, _) in wave {
                let c = *c;
                // A component that needs no change is left to converge
                // (unchanged, or started) whatever its dependencies did.
                let unchanged = previous
                    .get(&c.name)
                    .is_some_and(|p| p.spec_hash == c.spec_hash());
                match c.depends_on.iter().find(|d| failed.contains(d)) {
                    Some(dep) if !unchanged => {
                        progress(DeployProgress {
                            component: c.name.clone(),
                            phase: "skipped",
                            detail: format!("{dep} failed"),
                        });
                        failed.push(c.name.clone());
                        done.push((
                            c,
                            Err(AgentError::Conflict(format!(
                                "not deployed: it depends on {dep}, which failed"
                            ))),
                        ));
                    }
                    _ => runnable.push(planned),
                }
            }
            let results = join_all(runnable.iter().map(|(c, spec)| {
                self.converge(
                    &def.name,
                    c,
                    spec.clone(),
                    previous.get(&c.name),
                    def.active,
                    pull,
                    wait,
                    progress,
                )
            }))
            .await;
            for ((c, _), result) in runnable.into_iter().zip(results) {
                let c = *c;
                if result.is_err() {
                    failed.push(c.name.clone());
                }
                done.push((c, result));
            }
        }
        done
    }

    /// Makes one component's instance match `def` (whose instance `spec`
    /// has its VM files resolved); returns what was done and the instance
    /// id. A created or replaced instance must become ready within `wait`
    /// (not waited for when `None`; see [`deploy_with`](Self::deploy_with)).
    /// An instance of its name that is not the component's own is never
    /// touched.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn converge(
        &self,
        service: &str,
        def: &ComponentDef,
        spec: mcp_runtime::InstanceSpec,
        recorded: Option<&ComponentRecord>,
        active: bool,
        pull: PullPolicy,
        wait: Option<Duration>,
        progress: &ProgressFn,
    ) -> Result<(Action, Option<String>), AgentError> {
        let step = |phase: &'static str, detail: String| {
            progress(DeployProgress {
                component: def.name.clone(),
                phase,
                detail,
            })
        };
        let name = spec.name.clone();
        // Both looked up at once; a leftover of an interrupted deploy (rare)
        // is resolved first and the instance looked up again.
        let staged = format!("{name}{STAGED_SUFFIX}");
        let (leftover, current) =
            tokio::join!(self.runtime.inspect(&staged), self.runtime.inspect(&name));
        let leftover = match leftover {
            // Half created by an agent killed mid-deploy: podman names a
            // container its storage no longer knows (see `create_staged`).
            Err(RuntimeError::Api { status: 500, .. }) => {
                tracing::info!(instance = %staged, "removing a half-created instance left by an interrupted deploy");
                match self.runtime.remove(&staged, true).await {
                    Ok(()) | Err(RuntimeError::NotFound(_)) => None,
                    Err(e) => return Err(e.into()),
                }
            }
            other => other?,
        };
        let current = if leftover.is_some() {
            self.resolve_leftover(service, &def.name).await?;
            self.runtime.inspect(&name).await?
        } else {
            current?
        };
        if let Some(cur) = &current
            && let Some(why) =
                ownership::refusal(&self.owners()?.owner(cur), service, &def.name, &name)
        {
            return Err(AgentError::Conflict(why));
        }
        let hash = def.spec_hash();
        // An adopted instance carries no labels: the registry vouches for it
        // by id, with the hash of the definition recorded at adoption.
        let adopted = |cur: &InstanceInfo| {
            !cur.is_managed()
                && recorded.is_some_and(|r| r.container_id.as_deref() == Some(cur.id.as_str()))
        };
        let current_hash = |cur: &InstanceInfo| -> Option<String> {
            if adopted(cur) {
                recorded.map(|r| r.spec_hash.clone())
            } else {
                cur.label(labels::SPEC_HASH).map(str::to_string)
            }
        };
        let gate = Gate {
            service,
            def,
            spec: &spec,
            wait,
            progress: &step,
        };
        match current {
            Some(cur) if current_hash(&cur).as_deref() == Some(hash.as_str()) => {
                let running = cur.state == InstanceState::Running;
                if active && !running {
                    step("starting", String::new());
                    self.runtime.start(&name).await?;
                    Ok((Action::Started, Some(cur.id)))
                } else if !active && running {
                    self.runtime.stop(&name, self.stop_timeout).await?;
                    Ok((Action::Stopped, Some(cur.id)))
                } else {
                    Ok((Action::Unchanged, Some(cur.id)))
                }
            }
            Some(cur) => {
                self.ensure_image(&spec.image, pull, &step).await?;
                let id = self.replace(&cur, &gate, active).await?;
                Ok((Action::Updated, Some(id)))
            }
            // An inactive service gets no instances: its definition is
            // recorded, and its start makes them.
            None if !active => Ok((Action::Unchanged, None)),
            None => {
                self.ensure_image(&spec.image, pull, &step).await?;
                step("creating", String::new());
                let id = self.runtime.create(&spec).await?;
                if active {
                    step("starting", String::new());
                    let started = match self.runtime.start(&id).await {
                        Ok(()) => self.pass_gate(&id, &gate).await,
                        Err(err) => Err(err.into()),
                    };
                    if let Err(err) = started {
                        self.discard(&id).await;
                        return Err(err);
                    }
                }
                Ok((Action::Created, Some(id)))
            }
        }
    }

    async fn ensure_image(
        &self,
        image: &str,
        pull: PullPolicy,
        step: &(dyn Fn(&'static str, String) + Send + Sync),
    ) -> Result<(), AgentError> {
        if image.is_empty() {
            // A VM booting a kernel without a disk.
            return Ok(());
        }
        if pull == PullPolicy::Always || !self.runtime.image_exists(image).await? {
            step("pulling", image.to_string());
            self.runtime.pull(image).await?;
        }
        Ok(())
    }

    /// Replaces `old` with a new instance from the gate's spec, which must
    /// become ready before `old` is removed. The replacement is staged as
    /// `<name>.mcp-new` and takes the name once the old one is gone; `old`
    /// is addressed by id throughout, so a failure can always put it back.
    /// (Renaming the old, just-stopped instance instead races with podman's
    /// exit clean-up, which can write the old name back.)
    ///
    /// An instance that publishes host ports, or a VM with a disk image, is
    /// stopped before its replacement starts (the two cannot hold the same
    /// port, nor both lock the same disk for writing, as QEMU does): the
    /// component is down from that stop until the replacement runs, or,
    /// when it fails, until the old one is started again. One without host
    /// ports keeps running beside its replacement until that is ready.
    pub(super) async fn replace(
        &self,
        old: &InstanceInfo,
        gate: &Gate<'_>,
        active: bool,
    ) -> Result<String, AgentError> {
        let spec = gate.spec;
        let step = gate.progress;
        let name = &spec.name;
        let staged = mcp_runtime::InstanceSpec {
            name: format!("{name}{STAGED_SUFFIX}"),
            ..spec.clone()
        };
        let was_running = old.state == InstanceState::Running;
        let shares_disk =
            spec.runtime == mcp_runtime::RuntimeKind::Unikernel && !spec.image.is_empty();
        let stop_first = !spec.ports.is_empty() || shares_disk || !active;
        if stop_first {
            self.runtime.stop(&old.id, self.stop_timeout).await?;
        }
        let attempt = async {
            step("creating", String::new());
            let id = self.create_staged(gate, &staged).await?;
            if active {
                step("starting", String::new());
                let started = match self.runtime.start(&id).await {
                    Ok(()) => self.pass_gate(&id, gate).await,
                    Err(err) => Err(err.into()),
                };
                if let Err(err) = started {
                    self.discard(&id).await;
                    return Err(err);
                }
            }
            Ok(id)
        }
        .await;
        let new_id = match attempt {
            Ok(id) => id,
            Err(err) => {
                if stop_first {
                    step(
                        "rolling-back",
                        "starting the previous instance again".into(),
                    );
                    self.restart_old(old, was_running).await;
                }
                return Err(match err {
                    AgentError::NotReady { reason, .. } => AgentError::NotReady {
                        reason,
                        rolled_back: true,
                    },
                    other => other,
                });
            }
        };
        if !stop_first && let Err(err) = self.runtime.stop(&old.id, self.stop_timeout).await {
            self.discard(&new_id).await;
            return Err(err.into());
        }
        if let Err(err) = self.runtime.remove(&old.id, true).await {
            self.discard(&new_id).await;
            self.restart_old(old, was_running).await;
            return Err(err.into());
        }
        // Should this fail, the staged instance keeps running and the next
        // deploy or agent start gives it the name (`resolve_leftover`).
        self.runtime.rename(&new_id, name).await?;
        Ok(new_id)
    }

    /// Creates the staged replacement `<name>.mcp-new` of `gate`'s
    /// component. The deploy resolved any leftover of that name before it
    /// began, but a create sent by an agent killed mid-deploy can still be
    /// finishing in the runtime and take the name meanwhile: such a leftover
    /// of the component's own (of whatever version) is removed and the
    /// create tried once more. So is one the runtime cannot even inspect
    /// (podman, finishing such a create after its storage was freed, can
    /// name a container its storage no longer knows).
    async fn create_staged(
        &self,
        gate: &Gate<'_>,
        staged: &mcp_runtime::InstanceSpec,
    ) -> Result<String, AgentError> {
        let reason = match self.runtime.create(staged).await {
            Err(RuntimeError::Conflict(reason)) => reason,
            other => return Ok(other?),
        };
        let holder = match self.runtime.inspect(&staged.name).await {
            // Only this component's own: another service's staged instance
            // of the same name is never removed.
            Ok(Some(leftover)) => {
                if !self
                    .owners()?
                    .owner(&leftover)
                    .is(gate.service, &gate.def.name)
                {
                    return Err(RuntimeError::Conflict(reason).into());
                }
                leftover.id
            }
            Ok(None) => return Err(RuntimeError::Conflict(reason).into()),
            Err(RuntimeError::Api { status: 500, .. }) => staged.name.clone(),
            Err(e) => return Err(e.into()),
        };
        tracing::info!(instance = %staged.name, "removing instance left by an interrupted deploy");
        match self.runtime.remove(&holder, true).await {
            Ok(()) | Err(RuntimeError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(self.runtime.create(staged).await?)
    }

    /// Starts the instance a failed replacement stopped, if it was running.
    async fn restart_old(&self, old: &InstanceInfo, was_running: bool) {
        if was_running && let Err(err) = self.runtime.start(&old.id).await {
            tracing::error!(instance = %old.name, error = %err, "could not restart the previous instance");
        }
    }

    /// Removes an instance this reconciler created (by id), logging (not
    /// returning) errors.
    async fn discard(&self, id: &str) {
        match self.runtime.remove(id, true).await {
            Ok(()) | Err(RuntimeError::NotFound(_)) => {}
            Err(err) => {
                tracing::warn!(instance = %id, error = %err, "could not remove failed instance")
            }
        }
    }

    /// Resolves the `<name>.mcp-new` instance of `component` of `service`
    /// left by an interrupted replace: removed while `<name>` still exists
    /// (the replacement did not finish; the next deploy redoes it), given
    /// the name otherwise (the old one was already removed). A staged
    /// instance that is not the component's own is left alone.
    async fn resolve_leftover(&self, service: &str, component: &str) -> Result<(), AgentError> {
        let name = mcp_runtime::instance_name(service, component);
        let staged = format!("{name}{STAGED_SUFFIX}");
        let Some(leftover) = self.runtime.inspect(&staged).await? else {
            return Ok(());
        };
        if !self.owners()?.owner(&leftover).is(service, component) {
            tracing::warn!(instance = %staged, "not resolving a staged instance that belongs to another service");
            return Ok(());
        }
        if self.runtime.inspect(&name).await?.is_some() {
            tracing::info!(instance = %staged, "removing instance left by an interrupted deploy");
            self.runtime.remove(&leftover.id, true).await?;
        } else {
            tracing::info!(instance = %staged, "completing a deploy interrupted before the rename");
            self.runtime.rename(&leftover.id, &name).await?;
        }
        Ok(())
    }

    /// Resolves every leftover of interrupted deploys on the node and starts
    /// the resulting instances whose service is active. Run at agent start
    /// and whenever the runtime comes back. One that fails (a port taken
    /// meanwhile, say) does not stop the others: each failure is recorded as
    /// a `recovery-failed` event and returned, for
    /// [`Reconciler::recover_components`] to try again later.
    pub async fn recover(&self) -> Result<Recovery, AgentError> {
        let mut found = Vec::new();
        for inst in self.runtime.list().await? {
            let Some(base) = inst.name.strip_suffix(STAGED_SUFFIX) else {
                continue;
            };
            let (Some(service), Some(component)) =
                (inst.label(labels::SERVICE), inst.label(labels::COMPONENT))
            else {
                continue;
            };
            // Only MCP's, named as MCP names them, and only this agent's
            // services: another agent sharing the runtime's storage may be
            // mid-deploy of its own.
            if !inst.is_managed()
                || base != mcp_runtime::instance_name(service, component)
                || self.registry.get_service(service)?.is_none()
            {
                continue;
            }
            found.push((service.to_string(), component.to_string()));
        }
        Ok(self.recover_components(&found, false).await)
    }

    /// Resolves the leftovers of `components` ((service, component) pairs)
    /// and starts their instances when the service is active, each on its
    /// own: a failure is recorded as a `recovery-failed` event and returned.
    /// `retry` says that these failed before: a success is then recorded as
    /// a `recovered` event.
    pub async fn recover_components(
        &self,
        components: &[(String, String)],
        retry: bool,
    ) -> Recovery {
        let mut out = Recovery::default();
        for (service, component) in components {
            let result = async {
                let _guard = self.locks.lock(service).await;
                self.resolve_leftover(service, component).await?;
                // Either instance may have been left stopped mid-replace.
                let active = self
                    .registry
                    .get_service(service)?
                    .is_some_and(|s| s.active);
                let name = mcp_runtime::instance_name(service, component);
                if active
                    && let Some(inst) = self.runtime.inspect(&name).await?
                    && self.owners()?.owner(&inst).is(service, component)
                {
                    self.runtime.start(&inst.id).await?;
                }
                Ok::<(), AgentError>(())
            }
            .await;
            let (kind, detail) = match result {
                Ok(()) => {
                    out.resolved.push((service.clone(), component.clone()));
                    if !retry {
                        continue;
                    }
                    tracing::info!(
                        service,
                        component,
                        "recovered an instance left by an interrupted deploy"
                    );
                    (
                        RECOVERED,
                        "started the instance left by an interrupted deploy".to_string(),
                    )
                }
                Err(e) => {
                    tracing::warn!(service, component, error = %e, "could not recover an instance left by an interrupted deploy; trying again later");
                    out.failed.push((service.clone(), component.clone()));
                    (
                        RECOVERY_FAILED,
                        format!(
                            "could not start the instance left by an interrupted deploy: {e}; trying again later"
                        ),
                    )
                }
            };
            if let Err(e) = self
                .registry
                .record_event(service, Some(component), kind, &detail)
            {
                tracing::warn!(service, error = %e, "cannot record an event");
            }
        }
        self.observed.invalidate();
        out
    }

    /// Plans converging the node to exactly the services in `desired`
    /// (services outside it are removed only with `prune`) and, unless
    /// `dry_run`, carries the plan out: removals first, then a deploy of
    /// each service that is not unchanged, a few at a time. Returns the plan
    /// and, per service acted on, what was done.
    pub async fn sync(
        &self,
        desired: &[ServiceDef],
        prune: bool,
        dry_run: bool,
        pull: PullPolicy,
    ) -> Result<(plan::Plan, Vec<(String, Vec<ComponentOutcome>)>), AgentError> {
        let mut seen = std::collections::HashSet::new();
        for def in desired {
            if !seen.insert(def.name.as_str()) {
                return Err(AgentError::InvalidArgument(format!(
                    "service {:?} is in the set twice",
                    def.name
                )));
            }
        }
        if let Some(((i, a), (j, b))) = mcp_core::servicedef::shared_instance_name(desired) {
            return Err(AgentError::InvalidArgument(
                mcp_core::servicedef::shared_instance_name_message(
                    (&desired[j].name, b),
                    (&desired[i].name, a),
                ),
            ));
        }
        let mut recorded = Vec::new();
        for service in self.registry.list_services()? {
            let components = self.registry.components(&service.name)?;
            recorded.push((service, components));
        }
        let observed = self.runtime.list().await?;
        let plan = plan::plan(desired, &recorded, &observed, prune);
        if dry_run {
            return Ok((plan, Vec::new()));
        }
        let mut done = Vec::new();
        for s in plan
            .services
            .iter()
            .filter(|s| s.action == plan::ServiceAction::Remove)
        {
            let outcomes = match self.remove(&s.service).await {
                Ok(o) => o,
                Err(e) => vec![ComponentOutcome::failed("-", &e)],
            };
            done.push((s.service.clone(), outcomes));
        }
        let to_deploy: Vec<&ServiceDef> = desired
            .iter()
            .filter(|d| {
                plan.services
                    .iter()
                    .any(|s| s.service == d.name && s.action != plan::ServiceAction::Unchanged)
            })
            .collect();
        let deploys: Vec<_> = to_deploy
            .into_iter()
            .map(|def| self.deploy_named(def, pull))
            .collect();
        let mut deployed: Vec<(String, Vec<ComponentOutcome>)> = stream::iter(deploys)
            .buffer_unordered(SYNC_CONCURRENCY)
            .collect()
            .await;
        deployed.sort_by(|a, b| a.0.cmp(&b.0));
        done.extend(deployed);
        Ok((plan, done))
    }

    /// Deploys `def` for a sync: a failure of the whole service becomes one
    /// failed outcome, so the other services go on.
    async fn deploy_named(
        &self,
        def: &ServiceDef,
        pull: PullPolicy,
    ) -> (String, Vec<ComponentOutcome>) {
        let outcomes = match self.deploy(def, None, pull).await {
            Ok(o) => o,
            Err(e) => vec![ComponentOutcome::failed("-", &e)],
        };
        (def.name.clone(), outcomes)
    }
}
