//! Service definitions in Python: [`ServiceDef`], [`Component`] and
//! [`Route`] wrap the validated Rust model (so a definition built here is
//! exactly what `mcp` would send), plus reading and editing definition
//! files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::time::Duration;

use mcp_core::servicedef::{self, ComponentDef, HealthProbe, RouteDef, format_port, format_volume};
use pyo3::prelude::*;

use crate::error::{Error, definition_error};
use crate::types::record;

/// A validated service definition.
#[pyclass(module = "metacircular_mcp", frozen, eq)]
#[derive(Debug, Clone)]
pub struct ServiceDef {
    pub(crate) inner: servicedef::ServiceDef,
    /// The file it was read from, when it was.
    pub(crate) path: Option<PathBuf>,
}

impl PartialEq for ServiceDef {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner
    }
}

impl ServiceDef {
    pub(crate) fn new(inner: servicedef::ServiceDef, path: Option<PathBuf>) -> Self {
        ServiceDef { inner, path }
    }

    /// A changed copy, validated with the format's rules.
    fn changed(
        &self,
        change: impl FnOnce(&mut servicedef::ServiceDef) -> Result<(), Error>,
    ) -> PyResult<ServiceDef> {
        let mut def = self.inner.clone();
        change(&mut def)?;
        let checked =
            servicedef::ServiceDef::from_proto(&def.to_proto()).map_err(definition_error)?;
        Ok(ServiceDef::new(checked, None))
    }
}

#[pymethods]
impl ServiceDef {
    /// The service's name.
    #[getter]
    fn name(&self) -> &str {
        &self.inner.name
    }

    /// Whether its components should run.
    #[getter]
    fn active(&self) -> bool {
        self.inner.active
    }

    /// The node it runs on, when the definition names one.
    #[getter]
    fn node(&self) -> Option<&str> {
        self.inner.node.as_deref()
    }

    /// `core` or `worker`.
    #[getter]
    fn tier(&self) -> &'static str {
        self.inner.tier.as_str()
    }

    /// The components, in file order.
    #[getter]
    fn components(&self) -> Vec<Component> {
        self.inner
            .components
            .iter()
            .map(|c| Component { inner: c.clone() })
            .collect()
    }

    /// The file it was read from, when it was.
    #[getter]
    fn path(&self) -> Option<String> {
        self.path.as_ref().map(|p| p.display().to_string())
    }

    /// The component called `name`, or `None`.
    fn component(&self, name: &str) -> Option<Component> {
        self.inner
            .component(name)
            .map(|c| Component { inner: c.clone() })
    }

    /// A copy whose component `component` runs `image`.
    fn with_image(&self, component: &str, image: &str) -> PyResult<ServiceDef> {
        self.changed(|def| {
            let known: Vec<String> = def.components.iter().map(|c| c.name.clone()).collect();
            let c = def
                .components
                .iter_mut()
                .find(|c| c.name == component)
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "service {:?} has no component {component:?} (components: {})",
                        def.name,
                        known.join(", ")
                    ))
                })?;
            c.image = image.to_string();
            Ok(())
        })
    }

    /// A copy with `active` set.
    fn with_active(&self, active: bool) -> PyResult<ServiceDef> {
        self.changed(|def| {
            def.active = active;
            Ok(())
        })
    }

    /// The definition as TOML text, in the format's canonical layout.
    fn to_toml(&self) -> String {
        servicedef::to_toml(&self.inner)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let components = self
            .inner
            .components
            .iter()
            .map(|c| Component { inner: c.clone() }.repr(py))
            .collect::<PyResult<Vec<String>>>()?;
        Ok(format!(
            "ServiceDef(name={}, active={}, node={}, tier={}, components=[{}])",
            repr(py, &self.inner.name)?,
            repr(py, self.inner.active)?,
            repr(py, &self.inner.node)?,
            repr(py, self.inner.tier.as_str())?,
            components.join(", ")
        ))
    }
}

/// A component of a service: a container or a unikernel VM.
#[pyclass(module = "metacircular_mcp", frozen, eq)]
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    inner: ComponentDef,
}

#[pymethods]
impl Component {
    /// The component's name; its instance is `<service>-<name>`.
    #[getter]
    fn name(&self) -> &str {
        &self.inner.name
    }

    /// The image (for a unikernel: the disk image, or an extra disk).
    #[getter]
    fn image(&self) -> &str {
        &self.inner.image
    }

    /// `container` or `unikernel`.
    #[getter]
    fn runtime(&self) -> &'static str {
        self.inner.runtime.as_str()
    }

    /// Command and arguments; empty for the image's default.
    #[getter]
    fn cmd(&self) -> Vec<String> {
        self.inner.cmd.clone()
    }

    /// Environment variables.
    #[getter]
    fn env(&self) -> BTreeMap<String, String> {
        self.inner.env.clone()
    }

    /// Published ports, in canonical form (`127.0.0.1:8443:8443/tcp`).
    #[getter]
    fn ports(&self) -> Vec<String> {
        self.inner.ports.iter().map(format_port).collect()
    }

    /// Mounts, in canonical form (`/srv/web/data:/data:rw`).
    #[getter]
    fn volumes(&self) -> Vec<String> {
        self.inner.volumes.iter().map(format_volume).collect()
    }

    /// The network it joins.
    #[getter]
    fn network(&self) -> Option<&str> {
        self.inner.network.as_deref()
    }

    /// The user it runs as.
    #[getter]
    fn user(&self) -> Option<&str> {
        self.inner.user.as_deref()
    }

    /// Its restart policy.
    #[getter]
    fn restart(&self) -> Option<&str> {
        self.inner.restart.as_deref()
    }

    /// The memory limit or size as written (`256M`).
    #[getter]
    fn memory(&self) -> Option<&str> {
        self.inner.memory.as_ref().map(|m| m.text())
    }

    /// The memory limit or size in bytes.
    #[getter]
    fn memory_bytes(&self) -> Option<u64> {
        self.inner.memory.as_ref().map(|m| m.bytes())
    }

    /// Virtual CPUs (unikernel).
    #[getter]
    fn vcpus(&self) -> Option<u32> {
        self.inner.vcpus
    }

    /// Edge routes.
    #[getter]
    fn routes(&self) -> Vec<Route> {
        self.inner.routes.iter().map(Route::from).collect()
    }

    /// The kernel a unikernel boots directly, as written.
    #[getter]
    fn kernel(&self) -> Option<&str> {
        self.inner.kernel.as_deref()
    }

    /// Its initial ramdisk, as written.
    #[getter]
    fn initrd(&self) -> Option<&str> {
        self.inner.initrd.as_deref()
    }

    /// Its kernel command line.
    #[getter]
    fn append(&self) -> Option<&str> {
        self.inner.append.as_deref()
    }

    /// Its health check, when it has one.
    #[getter]
    fn health(&self) -> Option<HealthCheck> {
        self.inner.health.as_ref().map(HealthCheck::from)
    }

    /// The components of the service it starts after.
    #[getter]
    fn depends_on(&self) -> Vec<String> {
        self.inner.depends_on.clone()
    }

    /// The digest of everything that makes up its instance; a change
    /// means the instance is replaced.
    #[getter]
    fn spec_hash(&self) -> String {
        self.inner.spec_hash()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        self.repr(py)
    }
}

impl Component {
    /// `Component(name=..., ...)`, leaving out what is unset or empty.
    fn repr(&self, py: Python<'_>) -> PyResult<String> {
        let c = &self.inner;
        let mut parts = vec![
            format!("name={}", repr(py, &c.name)?),
            format!("image={}", repr(py, &c.image)?),
            format!("runtime={}", repr(py, c.runtime.as_str())?),
        ];
        if !c.cmd.is_empty() {
            parts.push(format!("cmd={}", repr(py, &c.cmd)?));
        }
        if !c.env.is_empty() {
            parts.push(format!("env={}", repr(py, &c.env)?));
        }
        if !c.ports.is_empty() {
            parts.push(format!("ports={}", repr(py, self.ports())?));
        }
        if !c.volumes.is_empty() {
            parts.push(format!("volumes={}", repr(py, self.volumes())?));
        }
        for (key, value) in [
            ("network", &c.network),
            ("user", &c.user),
            ("restart", &c.restart),
            ("kernel", &c.kernel),
            ("initrd", &c.initrd),
            ("append", &c.append),
        ] {
            if let Some(v) = value {
                parts.push(format!("{key}={}", repr(py, v)?));
            }
        }
        if let Some(m) = &c.memory {
            parts.push(format!("memory={}", repr(py, m.text())?));
        }
        if let Some(v) = c.vcpus {
            parts.push(format!("vcpus={v}"));
        }
        if !c.routes.is_empty() {
            parts.push(format!("routes={}", repr(py, self.routes())?));
        }
        if let Some(h) = self.health() {
            parts.push(format!("health={}", h.__repr__(py)?));
        }
        if !c.depends_on.is_empty() {
            parts.push(format!("depends_on={}", repr(py, &c.depends_on)?));
        }
        Ok(format!("Component({})", parts.join(", ")))
    }
}

/// Python's `repr()` of a value.
fn repr<'py, T>(py: Python<'py>, value: T) -> PyResult<String>
where
    T: pyo3::IntoPyObjectExt<'py>,
{
    Ok(value.into_bound_py_any(py)?.repr()?.to_string())
}

record! {
    /// An edge route of a component.
    Route {
        /// The host name served.
        hostname: String,
        /// The component's port it leads to.
        port: u16,
        /// Whether an edge node publishes it.
        public: bool,
    }
}

impl From<&RouteDef> for Route {
    fn from(r: &RouteDef) -> Self {
        Route {
            hostname: r.hostname.clone(),
            port: r.port,
            public: r.public,
        }
    }
}

record! {
    /// A component's health check.
    HealthCheck {
        /// `command`, `tcp` or `http`.
        kind: String,
        /// For `command`: the program and its arguments, run in the container.
        command: Vec<String>,
        /// For `tcp` and `http`: the container port probed.
        port: Option<u16>,
        /// For `http`: the path requested.
        path: Option<String>,
        /// For `http`: the status expected; `None` for any 2xx.
        status: Option<u16>,
        /// Time between two checks.
        interval: Duration,
        /// Time one check may take.
        timeout: Duration,
        /// Consecutive failures after which the component is unhealthy.
        retries: u32,
        /// Time after a start during which failures do not count.
        start_period: Duration,
    }
}

impl From<&servicedef::HealthCheck> for HealthCheck {
    fn from(h: &servicedef::HealthCheck) -> Self {
        let (command, port, path, status) = match &h.probe {
            HealthProbe::Command { argv } => (argv.clone(), None, None, None),
            HealthProbe::Tcp { port } => (Vec::new(), Some(*port), None, None),
            HealthProbe::Http { port, path, status } => {
                (Vec::new(), Some(*port), Some(path.clone()), *status)
            }
        };
        HealthCheck {
            kind: h.probe.kind().to_string(),
            command,
            port,
            path,
            status,
            interval: h.interval,
            timeout: h.timeout,
            retries: h.retries,
            start_period: h.start_period,
        }
    }
}

/// What a `str | os.PathLike` argument given as a definition means.
pub(crate) enum Source {
    /// TOML text.
    Text(String),
    /// A file.
    File(PathBuf),
}

/// Reads a `parse_service` argument: a `str` holding a newline or `=` is
/// TOML text, any other `str` or path-like object a file.
pub(crate) fn source_of(arg: &Bound<'_, PyAny>) -> PyResult<Source> {
    if let Ok(text) = arg.extract::<String>()
        && (text.contains('\n') || text.contains('='))
    {
        return Ok(Source::Text(text));
    }
    Ok(Source::File(arg.extract::<PathBuf>()?))
}

/// Parses and validates a service definition: TOML text (any `str`
/// holding a newline or `=`), or the path of a file.
///
/// Raises `InvalidDefinitionError` (with `file`, `line`, `column`) for an
/// invalid definition and `OSError` for a file that cannot be read.
#[pyfunction]
#[pyo3(signature = (source, /, *, origin = None))]
pub fn parse_service(source: &Bound<'_, PyAny>, origin: Option<String>) -> PyResult<ServiceDef> {
    match source_of(source)? {
        Source::Text(text) => {
            let origin = origin.unwrap_or_else(|| "<string>".to_string());
            servicedef::parse(&text, Path::new(&origin))
                .map(|d| ServiceDef::new(d, None))
                .map_err(definition_error)
        }
        Source::File(path) => load(&path),
    }
}

/// Loads the definition file at `path`.
pub(crate) fn load(path: &Path) -> PyResult<ServiceDef> {
    servicedef::load(path)
        .map(|d| ServiceDef::new(d, Some(path.to_path_buf())))
        .map_err(definition_error)
}

/// Loads every `*.toml` definition in a directory, in file-name order.
/// Any invalid file, or two files defining one service, raises; nothing
/// is returned then.
#[pyfunction]
pub fn load_services(directory: PathBuf) -> PyResult<Vec<ServiceDef>> {
    servicedef::load_dir(&directory)
        .map(|defs| {
            defs.into_iter()
                .map(|(path, def)| ServiceDef::new(def, Some(path)))
                .collect()
        })
        .map_err(definition_error)
}

/// Rewrites one component's `image` in a definition file, changing only
/// that value (comments and layout are kept), atomically. Returns whether
/// the file changed. The result must be a valid definition.
#[pyfunction]
pub fn set_image(path: PathBuf, component: &str, image: &str) -> PyResult<bool> {
    servicedef::write_image(&path, component, image).map_err(definition_error)
}

/// Rewrites the `active` key of a definition file, changing only that
/// value, atomically (what `mcp stop` / `mcp start` do before pushing).
#[pyfunction]
pub fn set_active(path: PathBuf, active: bool) -> PyResult<()> {
    servicedef::write_active(&path, active).map_err(definition_error)
}
