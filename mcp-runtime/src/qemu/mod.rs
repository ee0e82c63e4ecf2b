//! The QEMU backend: [`Qemu`] runs each instance as a VM in its own
//! `qemu-system-x86_64` process, and owns one state directory per VM under
//! [`QemuConfig::state_dir`] (see [`vm`] for its layout).
//!
//! QEMU is launched with `-daemonize`: it returns once the VM is set up (or
//! fails, with its reason on stderr, and leaves nothing running), and the VM
//! then lives in its own session, independent of the agent. Everything the
//! backend knows is in the state directories, the pidfiles and the QMP
//! sockets, so a new [`Qemu`] over the same state directory (an agent
//! restart) finds the running VMs as they are, with nothing duplicated.
//!
//! - Boot: a raw disk image (`image`), or a kernel with optional initrd and
//!   command line ([`crate::KernelBoot`]), plus `image` as a disk if set.
//!   Paths must be absolute; resolving a definition's relative paths is the
//!   caller's business. QEMU is handed the files open, never their paths
//!   ([`boot`]), at every launch.
//! - Network: QEMU's user-mode network, one `hostfwd` per published port.
//!   Host ports are checked to be free before launching.
//! - Stop: the ACPI power button through QMP (`system_powerdown`), then QMP
//!   `quit` after the timeout, then SIGKILL.
//! - Images are files on the node: [`Runtime::image_exists`] checks the
//!   file, and [`Runtime::pull`] cannot fetch one (see there).
//! - `cmd`, `env`, `network`, `user` and `restart` of the spec do not apply
//!   to a VM and are ignored (a unikernel's arguments are built into its
//!   image); volumes are refused. A VM that stops is not restarted by the
//!   backend: that is the monitor's business.
//!
//! Operations on one VM are not serialised against each other: the caller
//! (the agent's reconciler) runs one operation per instance at a time.

pub mod boot;
pub mod qmp;
pub mod serial;
pub mod vm;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use command_fds::CommandFdExt as _;
use futures::StreamExt as _;
use futures::stream;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::OnceCell;

use self::boot::{BootFiles, OpenAsNamed, OpenBootFiles};
use self::qmp::{QmpClient, QmpError};
use self::vm::{ResolvedAccel, VmDir, VmRecord};
use crate::spec::{InstanceDetails, LogChunk, LogStreamKind};
use crate::{
    EventStream, InstanceInfo, InstanceSpec, InstanceState, LogOptions, LogStream, Runtime,
    RuntimeError, RuntimeEvent, RuntimeKind, RuntimeResult, RuntimeVersion, VmSupport,
};

/// How long one QMP exchange may take.
const QMP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long QEMU may take to set a VM up before `-daemonize` returns.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long QEMU gets to exit after QMP `quit`, and after SIGKILL.
const EXIT_WAIT: Duration = Duration::from_secs(5);
/// How often process liveness is polled while waiting for an exit.
const EXIT_POLL: Duration = Duration::from_millis(50);
/// How often the event stream looks at the VMs.
const EVENT_POLL: Duration = Duration::from_millis(250);
/// How often a followed log looks for new output.
const LOG_POLL: Duration = Duration::from_millis(200);
/// Most bytes of console output in one log chunk (and read at once).
const LOG_CHUNK: usize = 64 * 1024;

/// Runs file work on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)?
}
/// How long the KVM probe may take before KVM is judged unusable.
const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// A KVM probe slower than this fails: a working KVM runs the probe VM in
/// well under a second (TCG takes about 0.15 s), while the nested KVM of
/// the test hosts takes seconds there and hangs real guests.
const KVM_PROBE_SLOW: Duration = Duration::from_secs(2);

/// Which accelerator VMs run under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    /// KVM when it is usable (see [`probe_kvm`]), else TCG.
    #[default]
    Auto,
    /// KVM; a VM fails to start if QEMU cannot use it.
    Kvm,
    /// TCG software emulation: slow, works everywhere.
    Tcg,
}

impl Accel {
    /// Parses `auto`, `kvm` or `tcg` (as in the agent configuration).
    pub fn parse(s: &str) -> Option<Accel> {
        match s {
            "auto" => Some(Accel::Auto),
            "kvm" => Some(Accel::Kvm),
            "tcg" => Some(Accel::Tcg),
            _ => None,
        }
    }

    /// `auto`, `kvm` or `tcg`.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Auto => "auto",
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Where QEMU is and where VMs keep their state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuConfig {
    /// The `qemu-system-x86_64` binary: a path, or a name looked up in `PATH`.
    pub qemu: PathBuf,
    /// The directory holding one state directory per VM; created on demand.
    pub state_dir: PathBuf,
    /// The accelerator.
    pub accel: Accel,
    /// The most bytes of each VM's `serial.log` (see [`serial`]).
    pub log_max_size: u64,
}

impl Default for QemuConfig {
    fn default() -> QemuConfig {
        QemuConfig {
            qemu: PathBuf::from("qemu-system-x86_64"),
            state_dir: PathBuf::from("/var/lib/mcp/vms"),
            accel: Accel::Auto,
            log_max_size: serial::DEFAULT_MAX_SIZE,
        }
    }
}

/// The QEMU backend. Holds no connection or process: everything is found
/// again in the state directory on each call.
#[derive(Debug)]
pub struct Qemu {
    config: QemuConfig,
    accel: OnceCell<ResolvedAccel>,
    boot_files: Arc<dyn BootFiles>,
    serial: serial::SerialLogs,
}

impl Qemu {
    /// A backend over `config.state_dir`. Touches nothing until called.
    pub fn new(config: QemuConfig) -> Qemu {
        Qemu {
            serial: serial::SerialLogs::new(config.log_max_size),
            config,
            accel: OnceCell::new(),
            boot_files: Arc::new(OpenAsNamed),
        }
    }

    /// This backend, opening the files VMs boot from through `boot_files`
    /// (at every launch: see [`boot`]) rather than as they are named.
    pub fn with_boot_files(mut self, boot_files: Arc<dyn BootFiles>) -> Qemu {
        self.boot_files = boot_files;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &QemuConfig {
        &self.config
    }

    /// The state directory of VM `name` (it may not exist).
    pub fn vm_dir(&self, name: &str) -> VmDir {
        VmDir::new(&self.config.state_dir, name)
    }

    /// The accelerator VMs get: for [`Accel::Auto`], probed once (see
    /// [`probe_kvm`]) and remembered.
    pub async fn resolved_accel(&self) -> ResolvedAccel {
        *self
            .accel
            .get_or_init(|| async {
                match self.config.accel {
                    Accel::Kvm => ResolvedAccel::Kvm,
                    Accel::Tcg => ResolvedAccel::Tcg,
                    Accel::Auto => match probe_kvm(&self.config.qemu).await {
                        Ok(()) => ResolvedAccel::Kvm,
                        Err(reason) => {
                            tracing::info!(reason, "KVM not usable; VMs run under TCG");
                            ResolvedAccel::Tcg
                        }
                    },
                }
            })
            .await
    }

    /// Finds a VM by name or id: its directory and record.
    fn find(&self, name_or_id: &str) -> RuntimeResult<Option<(VmDir, VmRecord)>> {
        if vm::check_name(name_or_id).is_ok() {
            let dir = self.vm_dir(name_or_id);
            if let Some(record) = dir.load()? {
                return Ok(Some((dir, record)));
            }
        }
        Ok(self
            .all()?
            .into_iter()
            .find(|(_, record)| record.id == name_or_id))
    }

    /// Whether a VM of this name or id exists (it has a record).
    pub fn has(&self, name_or_id: &str) -> bool {
        matches!(self.find(name_or_id), Ok(Some(_)))
    }

    /// Like [`find`](Self::find), but a missing VM is [`RuntimeError::NotFound`].
    fn get(&self, name_or_id: &str) -> RuntimeResult<(VmDir, VmRecord)> {
        self.find(name_or_id)?
            .ok_or_else(|| RuntimeError::NotFound(name_or_id.to_string()))
    }

    /// Every VM directory with a record, by name.
    fn all(&self) -> RuntimeResult<Vec<(VmDir, VmRecord)>> {
        let entries = match std::fs::read_dir(&self.config.state_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(vm::io_error("read", &self.config.state_dir, &e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if vm::check_name(&name).is_err() {
                continue;
            }
            let dir = self.vm_dir(&name);
            match dir.load() {
                Ok(Some(record)) => out.push((dir, record)),
                Ok(None) => {}
                Err(e) => tracing::warn!(dir = %dir.dir.display(), error = %e, "skipping VM"),
            }
        }
        out.sort_by(|a, b| a.0.dir.cmp(&b.0.dir));
        Ok(out)
    }

    /// The instance info of a VM; `details` adds the configuration.
    async fn info(&self, dir: &VmDir, record: &VmRecord, details: bool) -> InstanceInfo {
        let name = dir_name(dir);
        let alive = dir.live_pid(&record.id).is_some();
        if alive {
            // A VM found running (after an agent restart, say) gets its
            // console copied again.
            self.serial.ensure(&dir.dir, &record.id);
        }
        let (state, status, exit_code) = match alive {
            true => match query_status(dir).await {
                Ok(s) => {
                    let state = match s.status.as_str() {
                        "running" => InstanceState::Running,
                        "paused" | "suspended" => InstanceState::Paused,
                        "shutdown" => InstanceState::Other("stopping".into()),
                        other => InstanceState::Other(other.to_string()),
                    };
                    let status = match state {
                        InstanceState::Running => format!("Up since {}", record.started_at),
                        _ => format!("QEMU state {}", s.status),
                    };
                    (state, status, None)
                }
                Err(e) => (
                    InstanceState::Running,
                    format!("Up (QMP not answering: {e})"),
                    None,
                ),
            },
            false if record.started_at == 0 => {
                (InstanceState::Created, "Created".to_string(), None)
            }
            false => {
                let status = match record.exit_code {
                    Some(code) => format!("Exited ({code})"),
                    None => "Exited (QEMU process gone)".to_string(),
                };
                (InstanceState::Exited, status, record.exit_code)
            }
        };
        let spec = &record.spec;
        InstanceInfo {
            id: record.id.clone(),
            name,
            image: spec.image.clone(),
            image_id: spec
                .kernel
                .as_ref()
                .map(|k| k.kernel.clone())
                .unwrap_or_else(|| spec.image.clone()),
            state,
            status,
            exit_code,
            labels: spec.labels.clone(),
            ports: spec.ports.clone(),
            created_at: record.created_at,
            started_at: record.started_at,
            runtime: RuntimeKind::Unikernel,
            details: details.then(|| InstanceDetails {
                cmd: spec.cmd.clone(),
                env: spec.env.clone(),
                volumes: Vec::new(),
                networks: Vec::new(),
                user: String::new(),
                restart: spec.restart.clone().unwrap_or_default(),
                memory_bytes: spec.memory_bytes.unwrap_or(vm::DEFAULT_MEMORY_BYTES),
            }),
        }
    }

    /// Launches QEMU for a VM that does not run; returns once it runs.
    async fn launch(&self, dir: &VmDir, record: &mut VmRecord) -> RuntimeResult<()> {
        let name = dir_name(dir);
        vm::check_spec(&InstanceSpec {
            name: name.clone(),
            ..record.spec.clone()
        })?;
        vm::check_ports_free(&record.spec.ports)?;
        // Opened before anything is cleared: a file the policy refuses
        // leaves the VM as it was.
        let files = OpenBootFiles::open(self.boot_files.as_ref(), &record.spec)?;
        dir.clear_runtime_files();
        let accel = self.resolved_accel().await;
        let launched = VmRecord {
            spec: files.spec,
            ..record.clone()
        };
        let args = vm::qemu_args(&launched, dir, accel);
        tracing::info!(vm = %name, accel = accel.as_str(), "launching qemu");
        tracing::debug!(vm = %name, ?args, "qemu argv");
        let operation = format!("start {name}");
        let mut command = tokio::process::Command::new(&self.config.qemu);
        command.fd_mappings(files.mappings).map_err(|_| {
            RuntimeError::Invalid(format!("{operation}: boot file descriptors collide"))
        })?;
        let child = command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| RuntimeError::Unavailable {
                endpoint: self.config.qemu.display().to_string(),
                reason: format!("cannot run qemu: {e}"),
            })?;
        let output = match tokio::time::timeout(LAUNCH_TIMEOUT, child.wait_with_output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => {
                self.cleanup_failed_launch(dir, &record.id).await;
                return Err(RuntimeError::Api {
                    operation,
                    status: 0,
                    message: format!("waiting for qemu: {e}"),
                });
            }
            Err(_) => {
                self.cleanup_failed_launch(dir, &record.id).await;
                return Err(RuntimeError::Api {
                    operation,
                    status: 0,
                    message: format!(
                        "qemu did not finish setting up within {} s",
                        LAUNCH_TIMEOUT.as_secs()
                    ),
                });
            }
        };
        if !output.status.success() {
            self.cleanup_failed_launch(dir, &record.id).await;
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
            let code = output.status.code().unwrap_or(0);
            let message = if stderr.is_empty() {
                format!("qemu exited with status {code} and said nothing")
            } else {
                stderr
            };
            if message.contains("host forwarding") {
                return Err(RuntimeError::Conflict(format!(
                    "{operation}: a host port cannot be forwarded: {message}"
                )));
            }
            return Err(RuntimeError::Api {
                operation,
                status: u16::try_from(code).unwrap_or(0),
                message,
            });
        }
        if dir.live_pid(&record.id).is_none() {
            self.cleanup_failed_launch(dir, &record.id).await;
            return Err(RuntimeError::Api {
                operation,
                status: 0,
                message: format!(
                    "qemu exited right after setting up the VM; see {}",
                    dir.serial().display()
                ),
            });
        }
        self.serial.ensure(&dir.dir, &record.id);
        record.started_at = now();
        record.finished_at = 0;
        record.exit_code = None;
        record.accel = accel.as_str().to_string();
        if let Err(e) = dir.save(record) {
            // Without its record the VM would be orphaned: stop it.
            self.cleanup_failed_launch(dir, &record.id).await;
            return Err(e);
        }
        Ok(())
    }

    /// Kills whatever a failed launch left running and clears its files.
    async fn cleanup_failed_launch(&self, dir: &VmDir, id: &str) {
        if let Some(pid) = dir.live_pid(id) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            wait_gone(dir, id, EXIT_WAIT).await;
        }
        dir.clear_runtime_files();
    }

    /// Stops a running VM: power button, wait up to `timeout`, QMP `quit`,
    /// SIGKILL. Records how it ended. Not running is not an error.
    async fn halt(
        &self,
        dir: &VmDir,
        record: &mut VmRecord,
        timeout: Duration,
    ) -> RuntimeResult<()> {
        let name = dir_name(dir);
        let Some(pid) = dir.live_pid(&record.id) else {
            return Ok(());
        };
        let mut code = 0;
        let mut gone = false;
        if !timeout.is_zero() {
            match QmpClient::connect(&dir.qmp(), QMP_TIMEOUT).await {
                Ok(mut qmp) => match qmp.system_powerdown().await {
                    Ok(()) => {
                        tracing::info!(vm = %name, "power button pressed");
                        gone = wait_gone(dir, &record.id, timeout).await;
                    }
                    Err(e) => tracing::warn!(vm = %name, error = %e, "system_powerdown failed"),
                },
                Err(e) => tracing::warn!(vm = %name, error = %e, "no QMP for a graceful stop"),
            }
        }
        if !gone {
            tracing::info!(vm = %name, "guest still up: qmp quit");
            if let Ok(mut qmp) = QmpClient::connect(&dir.qmp(), QMP_TIMEOUT).await
                && let Err(e) = qmp.quit().await
            {
                tracing::warn!(vm = %name, error = %e, "qmp quit failed");
            }
            gone = wait_gone(dir, &record.id, EXIT_WAIT).await;
        }
        if !gone {
            tracing::warn!(vm = %name, pid, "qemu still up: SIGKILL");
            code = 137;
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            gone = wait_gone(dir, &record.id, EXIT_WAIT).await;
        }
        if !gone {
            return Err(RuntimeError::Api {
                operation: format!("stop {name}"),
                status: 0,
                message: format!("qemu (pid {pid}) did not exit after SIGKILL"),
            });
        }
        self.serial.drained(&record.id, EXIT_WAIT).await;
        dir.clear_runtime_files();
        record.finished_at = now();
        record.exit_code = Some(code);
        dir.save(record)
    }
}

#[async_trait]
impl Runtime for Qemu {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Unikernel
    }

    /// The binary and the accelerator. For `auto`, KVM is probed when the
    /// first VM starts (the probe takes seconds on a host whose KVM crawls,
    /// too long for a query); until then the accelerator reads `auto`.
    async fn vm_support(&self) -> Option<VmSupport> {
        let accel = match self.config.accel {
            Accel::Kvm => ResolvedAccel::Kvm.as_str(),
            Accel::Tcg => ResolvedAccel::Tcg.as_str(),
            Accel::Auto => self.accel.get().map_or("auto", |a| a.as_str()),
        };
        Some(VmSupport {
            qemu: self.config.qemu.display().to_string(),
            accel: accel.to_string(),
        })
    }

    /// Runs `qemu-system-x86_64 --version`; `api_version` is `qmp`.
    async fn ping(&self) -> RuntimeResult<RuntimeVersion> {
        let unavailable = |reason: String| RuntimeError::Unavailable {
            endpoint: self.config.qemu.display().to_string(),
            reason,
        };
        let output = tokio::time::timeout(
            QMP_TIMEOUT,
            tokio::process::Command::new(&self.config.qemu)
                .arg("--version")
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| unavailable("qemu --version did not answer".into()))?
        .map_err(|e| unavailable(format!("cannot run qemu: {e}")))?;
        if !output.status.success() {
            return Err(unavailable(format!(
                "qemu --version failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let version = text
            .lines()
            .next()
            .and_then(|l| l.split("version ").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .unwrap_or_default()
            .to_string();
        Ok(RuntimeVersion {
            version,
            api_version: "qmp".into(),
        })
    }

    /// For VMs an image is a file on the node: it exists when the file does.
    async fn image_exists(&self, image: &str) -> RuntimeResult<bool> {
        let path = Path::new(image);
        if !path.is_absolute() {
            return Err(RuntimeError::Invalid(format!(
                "VM image {image:?} is not an absolute path"
            )));
        }
        Ok(path.is_file())
    }

    /// VM images are files put on the node, never pulled: this succeeds
    /// (doing nothing) when the file is there, and otherwise fails with a
    /// [`RuntimeError::Pull`] saying so.
    async fn pull(&self, image: &str) -> RuntimeResult<()> {
        if self.image_exists(image).await? {
            Ok(())
        } else {
            Err(RuntimeError::Pull {
                image: image.to_string(),
                reason: "VM images are files on the node and cannot be pulled; \
                         the file does not exist: copy it to the node first"
                    .into(),
            })
        }
    }

    async fn create(&self, spec: &InstanceSpec) -> RuntimeResult<String> {
        vm::check_spec(spec)?;
        let dir = self.vm_dir(&spec.name);
        std::fs::create_dir_all(&self.config.state_dir)
            .map_err(|e| vm::io_error("create", &self.config.state_dir, &e))?;
        match std::fs::create_dir(&dir.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(RuntimeError::Conflict(format!(
                    "a VM named {} already exists",
                    spec.name
                )));
            }
            Err(e) => return Err(vm::io_error("create", &dir.dir, &e)),
        }
        let record = VmRecord {
            id: vm::new_id(),
            spec: spec.clone(),
            created_at: now(),
            started_at: 0,
            finished_at: 0,
            exit_code: None,
            accel: String::new(),
        };
        if let Err(e) = dir.save(&record) {
            let _ = std::fs::remove_dir_all(&dir.dir);
            return Err(e);
        }
        tracing::info!(vm = %spec.name, id = %record.id, "created");
        Ok(record.id)
    }

    async fn start(&self, name: &str) -> RuntimeResult<()> {
        let (dir, mut record) = self.get(name)?;
        if dir.live_pid(&record.id).is_some() {
            return Ok(());
        }
        self.launch(&dir, &mut record).await
    }

    async fn stop(&self, name: &str, timeout: Duration) -> RuntimeResult<()> {
        let (dir, mut record) = self.get(name)?;
        self.halt(&dir, &mut record, timeout).await
    }

    async fn remove(&self, name: &str, force: bool) -> RuntimeResult<()> {
        let (dir, mut record) = self.get(name)?;
        if dir.live_pid(&record.id).is_some() {
            if !force {
                return Err(RuntimeError::Conflict(format!(
                    "VM {} is running: stop it first",
                    dir_name(&dir)
                )));
            }
            self.halt(&dir, &mut record, Duration::ZERO).await?;
        }
        std::fs::remove_dir_all(&dir.dir).map_err(|e| vm::io_error("remove", &dir.dir, &e))?;
        tracing::info!(vm = %dir_name(&dir), "removed");
        Ok(())
    }

    /// Renames the VM's state directory. Works on a running VM too: QEMU
    /// keeps its open files, and its socket moves with the directory.
    async fn rename(&self, name: &str, new_name: &str) -> RuntimeResult<()> {
        vm::check_name(new_name)?;
        let (dir, _) = self.get(name)?;
        let target = self.vm_dir(new_name);
        if target.dir.exists() {
            return Err(RuntimeError::Conflict(format!(
                "rename {}: a VM named {new_name} already exists",
                dir_name(&dir)
            )));
        }
        std::fs::rename(&dir.dir, &target.dir).map_err(|e| vm::io_error("rename", &dir.dir, &e))?;
        Ok(())
    }

    async fn inspect(&self, name: &str) -> RuntimeResult<Option<InstanceInfo>> {
        match self.find(name)? {
            Some((dir, record)) => Ok(Some(self.info(&dir, &record, true).await)),
            None => Ok(None),
        }
    }

    async fn list(&self) -> RuntimeResult<Vec<InstanceInfo>> {
        let vms = self.all()?;
        let infos = vms
            .iter()
            .map(|(dir, record)| self.info(dir, record, false));
        Ok(futures::future::join_all(infos).await)
    }

    /// The serial console (`serial.log.1` then `serial.log`). `tail`
    /// counts lines; `follow` keeps reading what is appended (across
    /// rotations), a bounded piece at a time, until the VM is removed (or
    /// renamed) or the stream is dropped. Files are read on blocking
    /// threads. Carriage returns before newlines are dropped.
    async fn logs(&self, name: &str, options: &LogOptions) -> RuntimeResult<LogStream> {
        let (dir, _) = self.get(name)?;
        let path = dir.dir.clone();
        let (content, position) = blocking(move || serial::read_history(&path))
            .await
            .map_err(|e| vm::io_error("read", &dir.serial(), &e))?;
        // Only whole lines: a partial last line comes with the next read.
        let whole = content
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let (head, rest) = content.split_at(if options.follow { whole } else { content.len() });
        let pending = rest.to_vec();
        let mut first = tail_lines(head, options.tail);
        normalize_newlines(&mut first);
        let first: Vec<RuntimeResult<LogChunk>> = first
            .chunks(LOG_CHUNK)
            .map(|c| Ok(chunk(c.to_vec())))
            .collect();
        if !options.follow {
            return Ok(Box::pin(stream::iter(first)));
        }
        let follow = stream::unfold(
            (dir, position, pending),
            |(dir, mut at, mut pending)| async move {
                loop {
                    tokio::time::sleep(LOG_POLL).await;
                    if !dir.dir.exists() {
                        return None;
                    }
                    let path = dir.dir.clone();
                    let Ok((new, next)) =
                        blocking(move || serial::read_from(&path, at, LOG_CHUNK)).await
                    else {
                        continue;
                    };
                    at = next;
                    pending.extend_from_slice(&new);
                    let Some(end) = pending.iter().rposition(|b| *b == b'\n') else {
                        // A line longer than a chunk goes out as it is.
                        if pending.len() >= LOG_CHUNK {
                            let mut data = std::mem::take(&mut pending);
                            normalize_newlines(&mut data);
                            return Some((Ok(chunk(data)), (dir, at, pending)));
                        }
                        continue;
                    };
                    let mut data: Vec<u8> = pending.drain(..=end).collect();
                    normalize_newlines(&mut data);
                    return Some((Ok(chunk(data)), (dir, at, pending)));
                }
            },
        );
        Ok(Box::pin(stream::iter(first).chain(follow)))
    }

    /// VM events, by polling every 250 ms: `create`, `start`, `died` (the
    /// QEMU process is gone, whether stopped or crashed), `remove`. A
    /// rename shows as the old name's `remove` and the new name's `create`.
    async fn events(&self) -> RuntimeResult<EventStream> {
        let state_dir = self.config.state_dir.clone();
        let initial = snapshot(&state_dir);
        let events = stream::unfold(
            (state_dir, initial, std::collections::VecDeque::new()),
            |(state_dir, mut seen, mut pending)| async move {
                loop {
                    if let Some(event) = pending.pop_front() {
                        return Some((Ok(event), (state_dir, seen, pending)));
                    }
                    tokio::time::sleep(EVENT_POLL).await;
                    let now = snapshot(&state_dir);
                    pending.extend(diff(&seen, &now));
                    seen = now;
                }
            },
        );
        Ok(Box::pin(events))
    }
}

/// Name -> (id, alive) of every VM under `state_dir`.
fn snapshot(state_dir: &Path) -> BTreeMap<String, (String, bool)> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if vm::check_name(&name).is_err() {
            continue;
        }
        let dir = VmDir::new(state_dir, &name);
        if let Ok(Some(record)) = dir.load() {
            let alive = dir.live_pid(&record.id).is_some();
            out.insert(name, (record.id, alive));
        }
    }
    out
}

/// The events between two snapshots.
fn diff(
    before: &BTreeMap<String, (String, bool)>,
    after: &BTreeMap<String, (String, bool)>,
) -> Vec<RuntimeEvent> {
    let event = |action: &str, name: &str, id: &str| RuntimeEvent {
        action: action.into(),
        id: id.into(),
        name: name.into(),
        // A VM's snapshot is taken after the fact: nothing follows.
        settling: false,
    };
    let mut out = Vec::new();
    for (name, (id, alive)) in after {
        match before.get(name) {
            Some((old_id, was_alive)) if old_id == id => {
                if *alive && !was_alive {
                    out.push(event("start", name, id));
                } else if !alive && *was_alive {
                    out.push(event("died", name, id));
                }
            }
            Some((old_id, was_alive)) => {
                if *was_alive {
                    out.push(event("died", name, old_id));
                }
                out.push(event("remove", name, old_id));
                out.push(event("create", name, id));
                if *alive {
                    out.push(event("start", name, id));
                }
            }
            None => {
                out.push(event("create", name, id));
                if *alive {
                    out.push(event("start", name, id));
                }
            }
        }
    }
    for (name, (id, was_alive)) in before {
        if !after.contains_key(name) {
            // A VM renamed while running keeps running: no `died` then.
            let moved = after.values().any(|(other, _)| other == id);
            if *was_alive && !moved {
                out.push(event("died", name, id));
            }
            out.push(event("remove", name, id));
        }
    }
    out
}

/// Probes whether QEMU can run a guest under KVM here: `/dev/kvm` must open
/// read-write, and a throwaway VM under KVM (firmware only, no boot device,
/// set to exit instead of rebooting) must run to its end within a few
/// seconds, and quicker than 2 s. Nested KVM that opens but
/// hangs, crashes QEMU or crawls fails the probe.
/// `Err` says why KVM is not usable.
pub async fn probe_kvm(qemu: &Path) -> Result<(), String> {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return Err(format!("/dev/kvm cannot be opened read-write: {e}"));
    }
    let started = Instant::now();
    let child = tokio::process::Command::new(qemu)
        .args([
            "-nodefaults",
            "-no-user-config",
            "-accel",
            "kvm",
            "-m",
            "32M",
            "-display",
            "none",
            "-no-reboot",
            "-boot",
            "strict=on,reboot-timeout=0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", qemu.display()))?;
    match tokio::time::timeout(KVM_PROBE_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(output)) if output.status.success() => {
            let elapsed = started.elapsed();
            if elapsed > KVM_PROBE_SLOW {
                return Err(format!(
                    "a probe VM under KVM took {} ms (a working KVM takes well under {} ms)",
                    elapsed.as_millis(),
                    KVM_PROBE_SLOW.as_millis()
                ));
            }
            tracing::debug!(elapsed_ms = elapsed.as_millis(), "KVM probe passed");
            Ok(())
        }
        Ok(Ok(output)) => Err(format!(
            "a probe VM under KVM failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Ok(Err(e)) => Err(format!("waiting for the KVM probe: {e}")),
        Err(_) => Err(format!(
            "a probe VM under KVM did not finish within {} s",
            KVM_PROBE_TIMEOUT.as_secs()
        )),
    }
}

/// `query-status` over a fresh QMP session.
async fn query_status(dir: &VmDir) -> Result<qmp::QmpStatus, QmpError> {
    let mut client = QmpClient::connect(&dir.qmp(), QMP_TIMEOUT).await?;
    client.query_status().await
}

/// Waits up to `timeout` for the VM's QEMU to be gone; whether it is.
async fn wait_gone(dir: &VmDir, id: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if dir.live_pid(id).is_none() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(EXIT_POLL).await;
    }
}

/// The VM's current name: its directory's.
fn dir_name(dir: &VmDir) -> String {
    dir.dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The last `tail` lines of `data` (all of it for `None`).
fn tail_lines(data: &[u8], tail: Option<u32>) -> Vec<u8> {
    let Some(n) = tail else {
        return data.to_vec();
    };
    if n == 0 {
        return Vec::new();
    }
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let mut count = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            count += 1;
            if count == n {
                return data[i + 1..].to_vec();
            }
        }
    }
    data.to_vec()
}

/// Turns `\r\n` into `\n` (the guest's console writes both).
fn normalize_newlines(data: &mut Vec<u8>) {
    let mut out = Vec::with_capacity(data.len());
    for (i, b) in data.iter().enumerate() {
        if *b == b'\r' && data.get(i + 1) == Some(&b'\n') {
            continue;
        }
        out.push(*b);
    }
    *data = out;
}

fn chunk(data: Vec<u8>) -> LogChunk {
    LogChunk {
        stream: LogStreamKind::Stdout,
        data: Bytes::from(data),
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_counts_lines() {
        let data = b"a\nb\nc\n";
        assert_eq!(tail_lines(data, None), data.to_vec());
        assert_eq!(tail_lines(data, Some(2)), b"b\nc\n".to_vec());
        assert_eq!(tail_lines(data, Some(5)), data.to_vec());
        assert_eq!(tail_lines(data, Some(0)), Vec::<u8>::new());
        assert_eq!(tail_lines(b"a\nb", Some(1)), b"b".to_vec());
    }

    #[test]
    fn carriage_returns_before_newlines_go() {
        let mut data = b"up\r\nx\ry\r\n".to_vec();
        normalize_newlines(&mut data);
        assert_eq!(data, b"up\nx\ry\n".to_vec());
    }

    #[test]
    fn accel_words() {
        for a in [Accel::Auto, Accel::Kvm, Accel::Tcg] {
            assert_eq!(Accel::parse(a.as_str()), Some(a));
        }
        assert_eq!(Accel::parse("hvf"), None);
    }

    #[test]
    fn events_from_snapshots() {
        let snap = |v: &[(&str, &str, bool)]| {
            v.iter()
                .map(|(n, i, a)| (n.to_string(), (i.to_string(), *a)))
                .collect::<BTreeMap<_, _>>()
        };
        let actions = |e: Vec<RuntimeEvent>| {
            e.into_iter()
                .map(|e| format!("{} {}", e.action, e.name))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            actions(diff(&snap(&[]), &snap(&[("a", "1", true)]))),
            ["create a", "start a"]
        );
        assert_eq!(
            actions(diff(
                &snap(&[("a", "1", true)]),
                &snap(&[("a", "1", false)])
            )),
            ["died a"]
        );
        assert_eq!(
            actions(diff(&snap(&[("a", "1", false)]), &snap(&[]))),
            ["remove a"]
        );
        // A rename of a running VM.
        assert_eq!(
            actions(diff(&snap(&[("a", "1", true)]), &snap(&[("b", "1", true)]))),
            ["create b", "start b", "remove a"]
        );
    }
}
