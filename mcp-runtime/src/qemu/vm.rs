//! One VM's state directory, its record, its QEMU command line, and the
//! checks made before launching it.
//!
//! Layout of `<state_dir>/<name>/`:
//! - `vm.json`: the [`VmRecord`] (the spec it was created from, its id,
//!   times, how it last ended);
//! - `qmp.sock`: QEMU's QMP socket while it runs;
//! - `pid`: QEMU's pidfile while it runs;
//! - `serial.sock`: the socket QEMU serves the serial console on while it
//!   runs (see [`super::serial`]);
//! - `serial.log`, `serial.log.1`: the guest's serial console, appended
//!   across runs, each at most the configured size.

use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{InstanceSpec, PortMapping, RuntimeError, RuntimeResult};

/// The record file in a VM's state directory.
pub const RECORD_FILE: &str = "vm.json";
/// The QMP socket in a VM's state directory.
pub const QMP_SOCKET: &str = "qmp.sock";
/// The pidfile in a VM's state directory.
pub const PID_FILE: &str = "pid";
/// The serial console log in a VM's state directory.
pub const SERIAL_LOG: &str = "serial.log";
/// The serial console log before the last rotation.
pub const SERIAL_ROTATED: &str = "serial.log.1";
/// The socket QEMU serves the serial console on.
pub const SERIAL_SOCKET: &str = "serial.sock";

pub use mcp_core::instance::MIN_VM_MEMORY_BYTES as MIN_MEMORY_BYTES;
/// Memory when the spec sets none.
pub const DEFAULT_MEMORY_BYTES: u64 = 256 << 20;
pub use mcp_core::instance::MAX_VCPUS;

/// What MCP keeps of a VM between runs (and agent restarts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    /// The VM's id: a UUID, also given to QEMU (`-uuid`), which lets a pid
    /// be told apart from a reused one.
    pub id: String,
    /// What the VM was created from. Its `name` is the name at creation;
    /// the directory name is authoritative after a rename.
    pub spec: InstanceSpec,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Last start time, Unix seconds; 0 when never started.
    pub started_at: i64,
    /// Last time MCP saw or made it stop, Unix seconds; 0 when not known.
    #[serde(default)]
    pub finished_at: i64,
    /// How the last run ended, when MCP stopped it: 0 when QEMU exited on
    /// its own after the power button or `quit`, 137 when it was killed.
    /// `None` when it never ran or ended without MCP asking (a crash, a
    /// guest shutdown, a kill by someone else).
    #[serde(default)]
    pub exit_code: Option<i64>,
    /// The accelerator of the last start (`kvm` or `tcg`).
    #[serde(default)]
    pub accel: String,
}

/// The paths of one VM's state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDir {
    /// The directory, `<state_dir>/<name>`.
    pub dir: PathBuf,
}

impl VmDir {
    /// The directory of VM `name` under `state_dir`.
    pub fn new(state_dir: &Path, name: &str) -> VmDir {
        VmDir {
            dir: state_dir.join(name),
        }
    }

    /// The record file.
    pub fn record(&self) -> PathBuf {
        self.dir.join(RECORD_FILE)
    }

    /// The QMP socket.
    pub fn qmp(&self) -> PathBuf {
        self.dir.join(QMP_SOCKET)
    }

    /// The socket QEMU serves the serial console on.
    pub fn serial_socket(&self) -> PathBuf {
        self.dir.join(SERIAL_SOCKET)
    }

    /// The pidfile.
    pub fn pidfile(&self) -> PathBuf {
        self.dir.join(PID_FILE)
    }

    /// The serial console log.
    pub fn serial(&self) -> PathBuf {
        self.dir.join(SERIAL_LOG)
    }

    /// Reads the record; `None` when the directory or record is missing.
    pub fn load(&self) -> RuntimeResult<Option<VmRecord>> {
        let path = self.record();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                RuntimeError::Protocol(format!("corrupt VM record {}: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("read", &path, &e)),
        }
    }

    /// Writes the record atomically (a temporary file renamed over it).
    pub fn save(&self, record: &VmRecord) -> RuntimeResult<()> {
        let path = self.record();
        let tmp = self.dir.join(format!("{RECORD_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|e| RuntimeError::Invalid(format!("cannot encode VM record: {e}")))?;
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| io_error("write", &path, &e))
    }

    /// The pid in the pidfile, if there is one that parses.
    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.pidfile())
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .filter(|pid| *pid > 1)
    }

    /// The pid of this VM's QEMU if it is alive: the pidfile's process
    /// exists, is not a zombie, and carries the VM's id on its command line
    /// (so a reused pid is not mistaken for it).
    pub fn live_pid(&self, id: &str) -> Option<i32> {
        let pid = self.pid()?;
        process_is_vm(pid, id).then_some(pid)
    }

    /// Removes what only a running QEMU needs (pidfile, QMP and console
    /// sockets).
    pub fn clear_runtime_files(&self) {
        for path in [self.pidfile(), self.qmp(), self.serial_socket()] {
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove");
            }
        }
    }
}

/// Whether process `pid` is alive (not a zombie) and its command line holds
/// `id`.
pub fn process_is_vm(pid: i32, id: &str) -> bool {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let Ok(stat) = std::fs::read_to_string(proc_dir.join("stat")) else {
        return false;
    };
    // The state is the field after the parenthesised command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, Some("Z") | Some("X") | None) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(proc_dir.join("cmdline")) else {
        return false;
    };
    cmdline.split(|b| *b == 0).any(|arg| arg == id.as_bytes())
}

/// A `std::io::Error` on `path` as a runtime error.
pub fn io_error(what: &str, path: &Path, e: &std::io::Error) -> RuntimeError {
    RuntimeError::Api {
        operation: format!("{what} {}", path.display()),
        status: 0,
        message: e.to_string(),
    }
}

/// Checks a VM name: it becomes a directory name.
pub fn check_name(name: &str) -> RuntimeResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::Invalid(format!(
            "invalid VM name {name:?}: use letters, digits, '-', '_' and '.', not first '.'"
        )))
    }
}

/// Checks that `path` (a `what`, such as `image`) is an absolute path to a
/// regular file.
pub fn check_file(what: &str, path: &str) -> RuntimeResult<()> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(RuntimeError::Invalid(format!(
            "{what} {path:?} is not an absolute path"
        )));
    }
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(RuntimeError::Invalid(format!(
            "{what} {path} is not a regular file"
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(RuntimeError::Invalid(format!(
            "{what} file {path} does not exist"
        ))),
        Err(e) => Err(RuntimeError::Invalid(format!(
            "{what} file {path} cannot be read: {e}"
        ))),
    }
}

/// Checks everything of a spec that can be checked without launching: the
/// name, the boot files, memory, vcpus, ports, and that nothing is asked
/// that a VM cannot do (volumes).
pub fn check_spec(spec: &InstanceSpec) -> RuntimeResult<()> {
    check_name(&spec.name)?;
    match &spec.kernel {
        Some(boot) => {
            check_file("kernel", &boot.kernel)?;
            if let Some(initrd) = &boot.initrd {
                check_file("initrd", initrd)?;
            }
            if !spec.image.is_empty() {
                check_file("disk image", &spec.image)?;
            }
        }
        None => {
            if spec.image.is_empty() {
                return Err(RuntimeError::Invalid(format!(
                    "VM {}: no disk image and no kernel to boot",
                    spec.name
                )));
            }
            check_file("disk image", &spec.image)?;
        }
    }
    if let Some(bytes) = spec.memory_bytes
        && bytes < MIN_MEMORY_BYTES
    {
        return Err(RuntimeError::Invalid(format!(
            "VM {}: memory of {bytes} bytes is below the minimum of {} MiB",
            spec.name,
            MIN_MEMORY_BYTES >> 20
        )));
    }
    if let Some(vcpus) = spec.vcpus
        && !(1..=MAX_VCPUS).contains(&vcpus)
    {
        return Err(RuntimeError::Invalid(format!(
            "VM {}: vcpus must be between 1 and {MAX_VCPUS}, not {vcpus}",
            spec.name
        )));
    }
    if !spec.volumes.is_empty() {
        return Err(RuntimeError::Invalid(format!(
            "VM {}: volumes cannot be mounted into a VM",
            spec.name
        )));
    }
    for port in &spec.ports {
        if !matches!(port.protocol.as_str(), "tcp" | "udp") {
            return Err(RuntimeError::Invalid(format!(
                "VM {}: port {port}: protocol must be tcp or udp",
                spec.name
            )));
        }
        if port.host_ip.contains(',') || port.host_ip.contains(':') {
            return Err(RuntimeError::Invalid(format!(
                "VM {}: port {port}: QEMU's user network forwards IPv4 host addresses only",
                spec.name
            )));
        }
    }
    Ok(())
}

/// Checks that every host port of `ports` is free by binding it for a
/// moment. A [`RuntimeError::Conflict`] names the first one taken.
pub fn check_ports_free(ports: &[PortMapping]) -> RuntimeResult<()> {
    for port in ports {
        let ip = if port.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            port.host_ip.as_str()
        };
        let addr = format!("{ip}:{}", port.host_port);
        let result = if port.protocol == "udp" {
            UdpSocket::bind(&addr).map(drop)
        } else {
            TcpListener::bind(&addr).map(drop)
        };
        if let Err(e) = result {
            return Err(if e.kind() == std::io::ErrorKind::AddrInUse {
                RuntimeError::Conflict(format!(
                    "host port {addr}/{} is already in use",
                    port.protocol
                ))
            } else {
                RuntimeError::Invalid(format!(
                    "host port {addr}/{} cannot be bound: {e}",
                    port.protocol
                ))
            });
        }
    }
    Ok(())
}

/// QEMU's accelerator for one launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedAccel {
    /// Hardware virtualisation.
    Kvm,
    /// Software emulation.
    Tcg,
}

impl ResolvedAccel {
    /// `kvm` or `tcg`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResolvedAccel::Kvm => "kvm",
            ResolvedAccel::Tcg => "tcg",
        }
    }
}

/// The `qemu-system-x86_64` arguments that launch `record` in `dir`,
/// daemonized (QEMU returns once the VM is set up, or fails with its reason
/// on stderr).
pub fn qemu_args(record: &VmRecord, dir: &VmDir, accel: ResolvedAccel) -> Vec<String> {
    let spec = &record.spec;
    let memory_mib = spec
        .memory_bytes
        .unwrap_or(DEFAULT_MEMORY_BYTES)
        .div_ceil(1 << 20);
    let vcpus = spec.vcpus.unwrap_or(1);
    let mut args: Vec<String> = vec![
        "-name".into(),
        spec.name.clone(),
        "-uuid".into(),
        record.id.clone(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-accel".into(),
        accel.as_str().into(),
        "-m".into(),
        format!("{memory_mib}M"),
        "-smp".into(),
        vcpus.to_string(),
        "-display".into(),
        "none".into(),
        // A guest that reboots or crashes ends the QEMU process: the
        // monitor sees it as exited, as with a container.
        "-no-reboot".into(),
        "-chardev".into(),
        format!(
            "socket,id=serial0,path={},server=on,wait=off",
            comma_escape(&dir.serial_socket().to_string_lossy())
        ),
        "-serial".into(),
        "chardev:serial0".into(),
        "-qmp".into(),
        format!(
            "unix:{},server=on,wait=off",
            comma_escape(&dir.qmp().to_string_lossy())
        ),
        "-pidfile".into(),
        dir.pidfile().to_string_lossy().into_owned(),
        "-daemonize".into(),
    ];
    let mut netdev = String::from("user,id=net0");
    for port in &spec.ports {
        netdev.push_str(&format!(
            ",hostfwd={}:{}:{}-:{}",
            port.protocol, port.host_ip, port.host_port, port.container_port
        ));
    }
    args.extend([
        "-netdev".into(),
        netdev,
        "-device".into(),
        "virtio-net-pci,netdev=net0".into(),
    ]);
    if !spec.image.is_empty() {
        args.extend([
            "-drive".into(),
            format!("file={},format=raw,if=virtio", comma_escape(&spec.image)),
        ]);
    }
    if let Some(boot) = &spec.kernel {
        args.extend(["-kernel".into(), boot.kernel.clone()]);
        if let Some(initrd) = &boot.initrd {
            args.extend(["-initrd".into(), initrd.clone()]);
        }
        if let Some(append) = &boot.append {
            args.extend(["-append".into(), append.clone()]);
        }
    }
    args
}

/// QEMU's option syntax doubles commas inside a value.
fn comma_escape(s: &str) -> String {
    s.replace(',', ",,")
}

/// A new VM id: a version-4-shaped UUID from the clock, the process id and a
/// counter (unique on the node, which is all it must be).
pub fn new_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mix = u128::from(std::process::id()) << 64
        ^ u128::from(COUNTER.fetch_add(1, Ordering::Relaxed)) << 96
        ^ nanos;
    let hex = format!("{mix:032x}");
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KernelBoot;

    fn record(spec: InstanceSpec) -> VmRecord {
        VmRecord {
            id: "0000-id".into(),
            spec,
            created_at: 1,
            started_at: 0,
            finished_at: 0,
            exit_code: None,
            accel: String::new(),
        }
    }

    #[test]
    fn kernel_boot_argv() {
        let spec = InstanceSpec {
            name: "svc-api".into(),
            ports: vec![PortMapping {
                host_ip: "127.0.0.1".into(),
                host_port: 18080,
                container_port: 8080,
                protocol: "tcp".into(),
            }],
            memory_bytes: Some(256 << 20),
            vcpus: Some(2),
            kernel: Some(KernelBoot {
                kernel: "/k".into(),
                initrd: Some("/i".into()),
                append: Some("console=ttyS0".into()),
            }),
            ..InstanceSpec::default()
        };
        let dir = VmDir::new(Path::new("/state"), "svc-api");
        let args = qemu_args(&record(spec), &dir, ResolvedAccel::Tcg).join(" ");
        assert!(args.contains("-accel tcg -m 256M -smp 2"), "{args}");
        assert!(
            args.contains("-netdev user,id=net0,hostfwd=tcp:127.0.0.1:18080-:8080"),
            "{args}"
        );
        assert!(
            args.contains("-kernel /k -initrd /i -append console=ttyS0"),
            "{args}"
        );
        assert!(
            args.contains("-qmp unix:/state/svc-api/qmp.sock,server=on,wait=off"),
            "{args}"
        );
        assert!(args.contains("-uuid 0000-id"), "{args}");
        assert!(!args.contains("-drive"), "{args}");
    }

    #[test]
    fn disk_boot_argv_escapes_commas_and_rounds_memory_up() {
        let spec = InstanceSpec {
            name: "a".into(),
            image: "/img/a,b.raw".into(),
            memory_bytes: Some((64 << 20) + 1),
            ..InstanceSpec::default()
        };
        let dir = VmDir::new(Path::new("/s"), "a");
        let args = qemu_args(&record(spec), &dir, ResolvedAccel::Kvm).join(" ");
        assert!(
            args.contains("-drive file=/img/a,,b.raw,format=raw,if=virtio"),
            "{args}"
        );
        assert!(args.contains("-accel kvm -m 65M -smp 1"), "{args}");
        assert!(!args.contains("-kernel"), "{args}");
    }

    #[test]
    fn spec_checks_name_what_is_wrong() {
        let base = InstanceSpec {
            name: "a".into(),
            image: "/nonexistent/mcp/disk.raw".into(),
            ..InstanceSpec::default()
        };
        let err = check_spec(&base).expect_err("missing image");
        assert_eq!(
            err.to_string(),
            "invalid request: disk image file /nonexistent/mcp/disk.raw does not exist"
        );
        let relative = InstanceSpec {
            image: "disk.raw".into(),
            ..base.clone()
        };
        assert!(
            check_spec(&relative)
                .expect_err("relative")
                .to_string()
                .contains("not an absolute path")
        );
        let bad_name = InstanceSpec {
            name: "../x".into(),
            ..base.clone()
        };
        assert!(
            check_spec(&bad_name)
                .expect_err("name")
                .to_string()
                .contains("invalid VM name")
        );
    }

    #[test]
    fn ids_are_uuid_shaped_and_distinct() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }

    #[test]
    fn a_taken_port_is_a_conflict() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let err = check_ports_free(&[PortMapping {
            host_ip: "127.0.0.1".into(),
            host_port: port,
            container_port: 80,
            protocol: "tcp".into(),
        }])
        .expect_err("taken");
        assert!(matches!(err, RuntimeError::Conflict(_)), "{err}");
        assert!(err.to_string().contains("already in use"), "{err}");
    }

    #[test]
    fn this_process_is_not_a_vm() {
        let pid = i32::try_from(std::process::id()).expect("pid");
        assert!(!process_is_vm(pid, "no-such-id-on-the-command-line"));
    }
}
