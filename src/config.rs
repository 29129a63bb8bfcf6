//! Configuration: `config.toml` (documented defaults for the dev stack) overridden by environment
//! variables. Every setting is checked at start-up; a bad one stops the service with a message that
//! names it (`ceph.secret_uuid: ...`).

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("setting {setting}: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
}

fn invalid(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        message: message.into(),
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub libvirt: LibvirtConfig,
    pub ceph: CephConfig,
    pub network: NetworkConfig,
    pub operations: OperationsConfig,
    pub auth: AuthConfig,
    pub rate_limit: RateLimitConfig,
    pub placement: PlacementConfig,
}

/// How instance create picks a host (`service::placement`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlacementConfig {
    /// vCPUs placed per host CPU (its `cpus`, or the `cpu_capacity` an admin set).
    pub cpu_allocation_ratio: f64,
    /// Guest memory placed per MiB of host memory (after `reserved_host_memory_mib`).
    pub memory_allocation_ratio: f64,
    /// Host memory kept for the host itself (not placed), MiB; not taken off a
    /// `memory_capacity_mib` an admin set.
    pub reserved_host_memory_mib: u64,
    /// `spread` (the host with the most free memory first) or `pack` (the least first).
    pub weigher: Weigher,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weigher {
    Spread,
    Pack,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        PlacementConfig {
            cpu_allocation_ratio: 16.0,
            memory_allocation_ratio: 1.5,
            reserved_host_memory_mib: 512,
            weigher: Weigher::Spread,
        }
    }
}

impl PlacementConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (r, name) in [
            (self.cpu_allocation_ratio, "placement.cpu_allocation_ratio"),
            (
                self.memory_allocation_ratio,
                "placement.memory_allocation_ratio",
            ),
        ] {
            ensure(
                r.is_finite() && (0.1..=1000.0).contains(&r),
                name,
                "must be between 0.1 and 1000",
            )?;
        }
        Ok(())
    }
}

/// Token buckets (api::limits): each credential and each client address may send `burst`
/// requests at once, then `per_sec` a second. 0 turns a limit off.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub per_credential_per_sec: u32,
    pub per_credential_burst: u32,
    pub per_address_per_sec: u32,
    pub per_address_burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_credential_per_sec: 50,
            per_credential_burst: 200,
            per_address_per_sec: 100,
            per_address_burst: 400,
        }
    }
}

impl RateLimitConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (rate, burst, name) in [
            (
                self.per_credential_per_sec,
                self.per_credential_burst,
                "rate_limit.per_credential_burst",
            ),
            (
                self.per_address_per_sec,
                self.per_address_burst,
                "rate_limit.per_address_burst",
            ),
        ] {
            ensure(
                rate == 0 || burst >= 1,
                name,
                "must be at least 1 when its per_sec is set",
            )?;
        }
        Ok(())
    }
}

/// Logins (service::auth): the signing of the tokens `POST /api/v1/auth/token` hands out.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HS256 signing key of login tokens (at least 32 characters). Empty: a random key per
    /// process, so tokens die with it and one replica's are refused by another.
    pub token_secret: String,
    /// How long a login token is valid.
    pub token_lifetime_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            token_secret: String::new(),
            token_lifetime_secs: 3600,
        }
    }
}

// Printed by `check-config`: never the secret.
impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field(
                "token_secret",
                &if self.token_secret.is_empty() {
                    "(none: random per process)"
                } else {
                    "(set, not shown)"
                },
            )
            .field("token_lifetime_secs", &self.token_lifetime_secs)
            .finish()
    }
}

impl AuthConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        ensure(
            self.token_secret.is_empty() || self.token_secret.len() >= 32,
            "auth.token_secret",
            "must be empty or at least 32 characters",
        )?;
        within(
            self.token_lifetime_secs,
            60,
            86_400,
            "auth.token_lifetime_secs",
        )
    }
}

/// Operations that survive their process (service::operations).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperationsConfig {
    /// How long an operation stays its owner's without renewal; the owner renews every third of
    /// it. A dead owner's operations are taken over at most this much (plus the interval) later.
    pub lease_secs: u64,
    /// How often each process looks for operations whose lease ran out.
    pub takeover_interval_secs: u64,
    /// On SIGTERM/SIGINT, how long to wait for this process's operations to finish.
    pub shutdown_grace_secs: u64,
    /// How often a reconciliation pass compares the rows with libvirt and Ceph.
    pub reconcile_interval_secs: u64,
    /// How long an orphan (a domain marked with this deployment, or an id-named RBD image,
    /// that no row names) must stay one before reconciliation removes it; 0 (the default)
    /// only reports orphans.
    pub orphan_grace_secs: u64,
}

impl Default for OperationsConfig {
    fn default() -> Self {
        OperationsConfig {
            lease_secs: 10,
            takeover_interval_secs: 2,
            shutdown_grace_secs: 60,
            reconcile_interval_secs: 5,
            orphan_grace_secs: 0,
        }
    }
}

impl OperationsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        within(self.lease_secs, 3, 3600, "operations.lease_secs")?;
        within(
            self.takeover_interval_secs,
            1,
            self.lease_secs,
            "operations.takeover_interval_secs",
        )?;
        within(
            self.shutdown_grace_secs,
            0,
            3600,
            "operations.shutdown_grace_secs",
        )?;
        within(
            self.reconcile_interval_secs,
            1,
            3600,
            "operations.reconcile_interval_secs",
        )?;
        within(
            self.orphan_grace_secs,
            0,
            30 * 86_400,
            "operations.orphan_grace_secs",
        )
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    pub workers: usize,
    pub body_limit: usize,
    /// Web origins (`scheme://host[:port]`) whose pages may call the API from a browser (CORS);
    /// none by default. Environment: `API_WEB_CORS_ORIGINS`, comma-separated.
    pub cors_origins: Vec<String>,
    /// A second address serving only `GET /metrics`, without credentials (for a scraper on a
    /// private network); empty: none, `/metrics` is on `listen` for admins only.
    pub metrics_listen: String,
}

#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    pub url: String,
    pub pool_size: u32,
    pub connect_timeout_secs: u64,
    pub migrate_on_start: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LibvirtConfig {
    pub uri: String,
    pub domain_type: String,
    pub host_ip: String,
    pub emulator: String,
    pub machine: String,
    pub template_dir: String,
    pub console_log_dir: String,
    pub shutdown_timeout_secs: u64,
    /// How often turnoff presses the ACPI button again while the guest still runs (a press
    /// during boot, before the guest listens, is lost).
    pub shutdown_retry_secs: u64,
    pub detach_timeout_secs: u64,
    /// A live migration still running after this long is aborted (the guest stays where it was).
    pub migration_timeout_secs: u64,
    /// Listen to libvirt's domain events (power changes reach rows within a second, unplugs
    /// are confirmed by DEVICE_REMOVED). Off: only the periodic pass and polls see changes.
    pub events: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CephConfig {
    pub conf: String,
    pub user: String,
    pub keyring: String,
    pub images_pool: String,
    pub volumes_pool: String,
    pub mon_hosts: Vec<String>,
    pub qemu_user: String,
    pub secret_uuid: String,
    pub op_timeout_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    pub default_bridge: String,
    pub bridges: Vec<String>,
    /// First three octets of generated MACs (locally administered, unicast).
    pub mac_prefix: String,
    /// Instance create makes one NIC on the default bridge when it is given none.
    pub auto_nic: bool,
    /// IPv4 address pools, at most one per bridge.
    pub pools: Vec<AddressPool>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressPool {
    pub bridge: String,
    /// First and last address handed out (inclusive).
    pub first: std::net::Ipv4Addr,
    pub last: std::net::Ipv4Addr,
    /// The network's prefix length: what the guest's config drive gives with each address.
    #[serde(default = "default_prefix")]
    pub prefix: u8,
    /// The default route given to guests (on their first NIC that has one); none: no route.
    #[serde(default)]
    pub gateway: Option<std::net::Ipv4Addr>,
    /// DNS servers given to guests with the addresses.
    #[serde(default)]
    pub nameservers: Vec<std::net::Ipv4Addr>,
}

fn default_prefix() -> u8 {
    24
}

impl AddressPool {
    /// The network's mask.
    pub fn mask(&self) -> u32 {
        match self.prefix {
            0 => 0,
            p => u32::MAX << (32 - u32::from(p.min(32))),
        }
    }
    fn same_network(&self, a: std::net::Ipv4Addr) -> bool {
        u32::from(a) & self.mask() == u32::from(self.first) & self.mask()
    }
}

impl NetworkConfig {
    pub fn pool_of(&self, bridge: &str) -> Option<&AddressPool> {
        self.pools.iter().find(|p| p.bridge == bridge)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:18080".into(),
            workers: 0,
            body_limit: 65536,
            cors_origins: vec![],
            metrics_listen: String::new(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "mysql://api_web:api_web@127.0.0.1:23306/api_web".into(),
            pool_size: 16,
            connect_timeout_secs: 2,
            migrate_on_start: true,
        }
    }
}

impl Default for LibvirtConfig {
    fn default() -> Self {
        LibvirtConfig {
            uri: "qemu:///system".into(),
            domain_type: "qemu".into(),
            host_ip: "127.0.0.1".into(),
            emulator: "/usr/bin/qemu-system-x86_64".into(),
            machine: "pc".into(),
            template_dir: "domain-templates".into(),
            console_log_dir: "/var/log/libvirt/qemu".into(),
            shutdown_timeout_secs: 30,
            shutdown_retry_secs: 5,
            detach_timeout_secs: 10,
            migration_timeout_secs: 300,
            events: true,
        }
    }
}

impl Default for CephConfig {
    fn default() -> Self {
        CephConfig {
            conf: ".dev-stack/ceph/ceph.conf".into(),
            user: "api-web".into(),
            keyring: String::new(),
            images_pool: "images".into(),
            volumes_pool: "volumes".into(),
            mon_hosts: vec!["127.0.0.1:16789".into()],
            qemu_user: "libvirt".into(),
            secret_uuid: "8d3b6f2a-51c4-4e0b-9c1f-a9e0c0de0a01".into(),
            op_timeout_secs: 10,
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            default_bridge: "apiwebbr0".into(),
            bridges: vec!["apiwebbr0".into()],
            mac_prefix: "0a:70:69".into(),
            auto_nic: true,
            pools: vec![AddressPool {
                bridge: "apiwebbr0".into(),
                first: std::net::Ipv4Addr::new(10, 77, 0, 10),
                last: std::net::Ipv4Addr::new(10, 77, 0, 250),
                prefix: 24,
                gateway: Some(std::net::Ipv4Addr::new(10, 77, 0, 1)),
                nameservers: vec![],
            }],
        }
    }
}

impl Config {
    /// Parses a config file's text (no environment, no validation).
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })
    }

    /// The configuration the service runs with: the file named by `path` (else `$API_WEB_CONFIG`,
    /// else `./config.toml` if present, else the defaults), then environment overrides, then checks.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let env_path = std::env::var_os("API_WEB_CONFIG").map(PathBuf::from);
        let explicit = path.map(Path::to_path_buf).or(env_path);
        let mut cfg = match explicit {
            Some(p) => Self::read_file(&p)?,
            None => {
                let p = PathBuf::from("config.toml");
                if p.exists() {
                    Self::read_file(&p)?
                } else {
                    Config::default()
                }
            }
        };
        cfg.apply_env(|k| std::env::var(k).ok())?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn read_file(p: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
            path: p.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, p)
    }

    /// Environment overrides; `get` is injectable so tests need not touch the process environment.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get("API_WEB_LISTEN") {
            self.server.listen = v;
        }
        if let Some(v) = get("API_WEB_METRICS_LISTEN") {
            self.server.metrics_listen = v;
        }
        if let Some(v) = get("API_WEB_CORS_ORIGINS") {
            self.server.cors_origins = v
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(v) = get("API_WEB_TOKEN_SECRET") {
            self.auth.token_secret = v;
        }
        if let Some(v) = get("DATABASE_URL") {
            self.database.url = v;
        }
        if let Some(v) = get("API_WEB_DB_POOL_SIZE") {
            self.database.pool_size = v
                .parse()
                .map_err(|_| invalid("API_WEB_DB_POOL_SIZE", format!("not a number: {v:?}")))?;
        }
        if let Some(v) = get("LIBVIRT_URI") {
            self.libvirt.uri = v;
        }
        if let Some(v) = get("API_WEB_LIBVIRT_EVENTS") {
            self.libvirt.events = v.parse().map_err(|_| {
                invalid(
                    "API_WEB_LIBVIRT_EVENTS",
                    format!("not true or false: {v:?}"),
                )
            })?;
        }
        if let Some(v) = get("API_WEB_DOMAIN_TYPE") {
            self.libvirt.domain_type = v;
        }
        if let Some(v) = get("API_WEB_HOST_IP") {
            self.libvirt.host_ip = v;
        }
        if let Some(v) = get("API_WEB_CONSOLE_LOG_DIR") {
            self.libvirt.console_log_dir = v;
        }
        if let Some(v) = get("CEPH_CONF") {
            self.ceph.conf = v;
        }
        if let Some(v) = get("CEPH_USER") {
            self.ceph.user = v;
        }
        if let Some(v) = get("CEPH_IMAGES_POOL") {
            self.ceph.images_pool = v;
        }
        if let Some(v) = get("CEPH_VOLUMES_POOL") {
            self.ceph.volumes_pool = v;
        }
        if let Some(v) = get("CEPH_MON_HOSTS") {
            self.ceph.mon_hosts = v.split(',').map(|s| s.trim().to_string()).collect();
        }
        if let Some(v) = get("CEPH_SECRET_UUID") {
            self.ceph.secret_uuid = v;
        }
        if let Some(v) = get("API_WEB_BRIDGE") {
            if !self.network.bridges.contains(&v) {
                self.network.bridges.push(v.clone());
            }
            self.network.default_bridge = v;
        }
        Ok(())
    }

    /// Checks every setting; the first bad one is reported by name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.database.validate()?;
        self.libvirt.validate()?;
        self.ceph.validate()?;
        self.network.validate()?;
        self.auth.validate()?;
        self.rate_limit.validate()?;
        self.placement.validate()?;
        self.operations.validate()
    }
}

/// `Ok` when `ok`, else the setting's error.
fn ensure(ok: bool, setting: &'static str, message: impl Into<String>) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(invalid(setting, message))
    }
}

/// A whole number setting within `lo..=hi`.
fn within<T: PartialOrd + std::fmt::Display>(
    value: T,
    lo: T,
    hi: T,
    setting: &'static str,
) -> Result<(), ConfigError> {
    ensure(
        lo <= value && value <= hi,
        setting,
        format!("must be between {lo} and {hi}"),
    )
}

fn absolute(path: &str, setting: &'static str) -> Result<(), ConfigError> {
    ensure(path.starts_with('/'), setting, "must be an absolute path")
}

fn not_empty(value: &str, setting: &'static str) -> Result<(), ConfigError> {
    ensure(!value.trim().is_empty(), setting, "must not be empty")
}

impl ServerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.listen
            .parse::<SocketAddr>()
            .map_err(|e| invalid("server.listen", format!("{:?}: {e}", self.listen)))?;
        if !self.metrics_listen.is_empty() {
            self.metrics_listen.parse::<SocketAddr>().map_err(|e| {
                invalid(
                    "server.metrics_listen",
                    format!("{:?}: {e}", self.metrics_listen),
                )
            })?;
        }
        for o in &self.cors_origins {
            // An origin is a scheme and a host (and a port), nothing after: what browsers send.
            let ok = (o.starts_with("http://") || o.starts_with("https://"))
                && o.split_once("://").is_some_and(|(_, rest)| {
                    !rest.is_empty() && !rest.contains('/') && !rest.contains('*')
                });
            ensure(
                ok,
                "server.cors_origins",
                format!("{o:?} is not an origin like https://portal.example.com[:port]"),
            )?;
        }
        ensure(
            self.body_limit >= 1024,
            "server.body_limit",
            "must be at least 1024 bytes",
        )
    }
}

/// `mysql://user:password@host/db` with the password left out (what logs and `check-config`
/// may show).
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

// Printed by `check-config`: never the password.
impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redacted_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("migrate_on_start", &self.migrate_on_start)
            .finish()
    }
}

impl DatabaseConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        ensure(
            self.url.starts_with("mysql://"),
            "database.url",
            "must be a mysql://user:password@host:port/database URL",
        )?;
        within(self.pool_size, 1, 1000, "database.pool_size")?;
        ensure(
            self.connect_timeout_secs >= 1,
            "database.connect_timeout_secs",
            "must be at least 1",
        )
    }
}

impl LibvirtConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        not_empty(&self.uri, "libvirt.uri")?;
        ensure(
            matches!(self.domain_type.as_str(), "qemu" | "kvm"),
            "libvirt.domain_type",
            format!("{:?}: must be \"qemu\" or \"kvm\"", self.domain_type),
        )?;
        not_empty(&self.host_ip, "libvirt.host_ip")?;
        absolute(&self.emulator, "libvirt.emulator")?;
        not_empty(&self.machine, "libvirt.machine")?;
        ensure(
            Path::new(&self.template_dir).is_dir(),
            "libvirt.template_dir",
            format!("{:?} is not a directory", self.template_dir),
        )?;
        absolute(&self.console_log_dir, "libvirt.console_log_dir")?;
        within(
            self.detach_timeout_secs,
            1,
            600,
            "libvirt.detach_timeout_secs",
        )?;
        within(
            self.shutdown_timeout_secs,
            1,
            3600,
            "libvirt.shutdown_timeout_secs",
        )?;
        within(
            self.shutdown_retry_secs,
            1,
            self.shutdown_timeout_secs.max(1),
            "libvirt.shutdown_retry_secs",
        )
    }
}

impl CephConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        ensure(
            Path::new(&self.conf).is_file(),
            "ceph.conf",
            format!(
                "{:?} is not a readable file (run scripts/dev-stack.sh up, or point CEPH_CONF at the cluster's ceph.conf)",
                self.conf
            ),
        )?;
        ensure(
            valid_ceph_name(&self.user),
            "ceph.user",
            "must be a cephx id like \"api-web\"",
        )?;
        ensure(
            self.keyring.is_empty() || Path::new(&self.keyring).is_file(),
            "ceph.keyring",
            format!("{:?} is not a readable file", self.keyring),
        )?;
        ensure(
            valid_ceph_name(&self.images_pool),
            "ceph.images_pool",
            "must be a pool name",
        )?;
        ensure(
            valid_ceph_name(&self.volumes_pool),
            "ceph.volumes_pool",
            "must be a pool name",
        )?;
        ensure(
            self.images_pool != self.volumes_pool,
            "ceph.volumes_pool",
            "must differ from ceph.images_pool (QEMU gets read-only access to images)",
        )?;
        ensure(
            !self.mon_hosts.is_empty(),
            "ceph.mon_hosts",
            "must name at least one host:port",
        )?;
        for h in &self.mon_hosts {
            ensure(
                parse_host_port(h).is_some(),
                "ceph.mon_hosts",
                format!("{h:?} is not host:port"),
            )?;
        }
        ensure(
            valid_ceph_name(&self.qemu_user),
            "ceph.qemu_user",
            "must be a cephx id like \"libvirt\"",
        )?;
        uuid::Uuid::parse_str(&self.secret_uuid)
            .map_err(|e| invalid("ceph.secret_uuid", format!("{:?}: {e}", self.secret_uuid)))?;
        ensure(
            self.op_timeout_secs >= 1,
            "ceph.op_timeout_secs",
            "must be at least 1",
        )
    }
}

impl NetworkConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for b in &self.bridges {
            ensure(
                valid_bridge_name(b),
                "network.bridges",
                format!(
                    "{b:?}: a bridge name has 1 to 15 characters and no '/', ':' or whitespace"
                ),
            )?;
        }
        ensure(
            parse_mac_prefix(&self.mac_prefix).is_some(),
            "network.mac_prefix",
            format!(
                "{:?}: three hex octets like \"0a:70:69\", the first locally administered (bit 1 set) and unicast (bit 0 clear)",
                self.mac_prefix
            ),
        )?;
        for (i, p) in self.pools.iter().enumerate() {
            self.validate_pool(i, p)?;
        }
        ensure(
            self.bridges.contains(&self.default_bridge),
            "network.default_bridge",
            format!("{:?} is not listed in network.bridges", self.default_bridge),
        )
    }

    fn validate_pool(&self, i: usize, p: &AddressPool) -> Result<(), ConfigError> {
        ensure(
            self.bridges.contains(&p.bridge),
            "network.pools",
            format!("pool {i}: bridge {:?} is not in network.bridges", p.bridge),
        )?;
        ensure(
            u32::from(p.first) <= u32::from(p.last),
            "network.pools",
            format!("pool {i}: first {} is after last {}", p.first, p.last),
        )?;
        ensure(
            (8..=30).contains(&p.prefix),
            "network.pools",
            format!("pool {i}: prefix {} is not between 8 and 30", p.prefix),
        )?;
        ensure(
            p.same_network(p.last),
            "network.pools",
            format!(
                "pool {i}: first {} and last {} are not in one /{} network",
                p.first, p.last, p.prefix
            ),
        )?;
        if let Some(g) = p.gateway {
            ensure(
                p.same_network(g),
                "network.pools",
                format!(
                    "pool {i}: gateway {g} is outside the pool's /{} network",
                    p.prefix
                ),
            )?;
            ensure(
                !(p.first..=p.last).contains(&g),
                "network.pools",
                format!(
                    "pool {i}: gateway {g} is inside first..last, so it could be given to a NIC"
                ),
            )?;
        }
        ensure(
            !self.pools[..i].iter().any(|q| q.bridge == p.bridge),
            "network.pools",
            format!("bridge {:?} has two pools", p.bridge),
        )
    }
}

fn valid_ceph_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The three octets of a MAC prefix, if it is locally administered unicast.
pub fn parse_mac_prefix(s: &str) -> Option<[u8; 3]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.len() != 2) {
        return None;
    }
    let mut out = [0u8; 3];
    for (o, p) in out.iter_mut().zip(parts) {
        *o = u8::from_str_radix(p, 16).ok()?;
    }
    (out[0] & 0b10 != 0 && out[0] & 0b01 == 0).then_some(out)
}

/// Linux interface names: at most 15 bytes (IFNAMSIZ - 1), no '/', ':' or whitespace.
pub fn valid_bridge_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_graphic() && c != '/' && c != ':')
}

/// `host:port` (port required); returns the two parts.
pub fn parse_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    if host.is_empty() || port == 0 {
        return None;
    }
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped config.toml parses and documents exactly the built-in defaults.
    #[test]
    fn shipped_config_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let cfg = Config::from_toml(&text, &path).unwrap();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn unknown_setting_is_named() {
        let err = Config::from_toml("[ceph]\npoool = 'x'\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("poool"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err =
            Config::from_toml("[database]\npool_size = 'many'\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("pool_size"), "{err}");
    }

    fn valid_base() -> Config {
        let mut c = Config::default();
        // validate() checks that files exist: point them at ones every machine has.
        c.ceph.conf = "/etc/hostname".into();
        c.libvirt.template_dir = "/etc".into();
        c
    }

    #[test]
    fn defaults_with_existing_ceph_conf_validate() {
        valid_base().validate().unwrap();
    }

    #[test]
    fn each_bad_setting_is_named() {
        type Mutation = Box<dyn Fn(&mut Config)>;
        let cases: Vec<(&str, Mutation)> = vec![
            (
                "server.listen",
                Box::new(|c| c.server.listen = "nowhere".into()),
            ),
            (
                "database.url",
                Box::new(|c| c.database.url = "postgres://x".into()),
            ),
            ("database.pool_size", Box::new(|c| c.database.pool_size = 0)),
            (
                "libvirt.domain_type",
                Box::new(|c| c.libvirt.domain_type = "xen".into()),
            ),
            (
                "libvirt.emulator",
                Box::new(|c| c.libvirt.emulator = "qemu".into()),
            ),
            (
                "ceph.conf",
                Box::new(|c| c.ceph.conf = "/nonexistent/ceph.conf".into()),
            ),
            ("ceph.user", Box::new(|c| c.ceph.user = "bad user".into())),
            (
                "ceph.images_pool",
                Box::new(|c| c.ceph.images_pool = String::new()),
            ),
            (
                "ceph.volumes_pool",
                Box::new(|c| c.ceph.volumes_pool = "images".into()),
            ),
            (
                "ceph.mon_hosts",
                Box::new(|c| c.ceph.mon_hosts = vec!["127.0.0.1".into()]),
            ),
            (
                "ceph.secret_uuid",
                Box::new(|c| c.ceph.secret_uuid = "not-a-uuid".into()),
            ),
            (
                "network.bridges",
                Box::new(|c| c.network.bridges = vec!["a bridge".into()]),
            ),
            (
                "network.default_bridge",
                Box::new(|c| c.network.default_bridge = "br9".into()),
            ),
        ];
        for (setting, mutate) in cases {
            let mut c = valid_base();
            mutate(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("setting {setting}:")),
                "{setting}: {err}"
            );
        }
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut c = Config::default();
        c.apply_env(|k| match k {
            "DATABASE_URL" => Some("mysql://u:p@db:3306/x".into()),
            "CEPH_MON_HOSTS" => Some("10.0.0.1:6789, 10.0.0.2:6789".into()),
            "API_WEB_BRIDGE" => Some("br1".into()),
            "API_WEB_LIBVIRT_EVENTS" => Some("false".into()),
            _ => None,
        })
        .unwrap();
        assert!(!c.libvirt.events);
        assert_eq!(c.database.url, "mysql://u:p@db:3306/x");
        assert_eq!(c.ceph.mon_hosts, vec!["10.0.0.1:6789", "10.0.0.2:6789"]);
        assert_eq!(c.network.default_bridge, "br1");
        assert!(c.network.bridges.contains(&"br1".to_string()));
        let err = c
            .apply_env(|k| (k == "API_WEB_DB_POOL_SIZE").then(|| "lots".into()))
            .unwrap_err();
        assert!(err.to_string().contains("API_WEB_DB_POOL_SIZE"));
        let err = c
            .apply_env(|k| (k == "API_WEB_LIBVIRT_EVENTS").then(|| "yes".into()))
            .unwrap_err();
        assert!(err.to_string().contains("API_WEB_LIBVIRT_EVENTS"));
    }

    #[test]
    fn cors_origins_from_the_environment_and_checked() {
        let mut c = Config::default();
        assert!(
            c.server.cors_origins.is_empty(),
            "nothing allowed by default"
        );
        c.apply_env(|k| {
            (k == "API_WEB_CORS_ORIGINS")
                .then(|| "https://portal.example.com, http://localhost:3000,".into())
        })
        .unwrap();
        assert_eq!(
            c.server.cors_origins,
            vec!["https://portal.example.com", "http://localhost:3000"]
        );
        c.validate().unwrap();
        for bad in [
            "*",
            "portal.example.com",
            "https://p.example.com/",
            "https://*.example.com",
        ] {
            c.server.cors_origins = vec![bad.into()];
            let err = c.validate().unwrap_err().to_string();
            assert!(
                err.starts_with("setting server.cors_origins:"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn secrets_stay_out_of_the_printed_config() {
        let mut c = Config::default();
        c.database.url = "mysql://api:s3cr3t-pw@db:3306/api_web".into();
        c.auth.token_secret = "t0ken-secret-t0ken-secret-t0ken-secret".into();
        let printed = format!("{c:#?}");
        assert!(!printed.contains("s3cr3t-pw"), "{printed}");
        assert!(!printed.contains("t0ken-secret"), "{printed}");
        assert!(
            printed.contains("mysql://api:***@db:3306/api_web"),
            "{printed}"
        );
        assert_eq!(redacted_url("mysql://u@h/x"), "mysql://u:***@h/x");
    }

    #[test]
    fn bridge_names() {
        assert!(valid_bridge_name("apiwebbr0"));
        assert!(valid_bridge_name("br-0123456789ab"));
        assert!(!valid_bridge_name("br-0123456789abc"));
        assert!(!valid_bridge_name("br 0"));
        assert!(!valid_bridge_name(""));
        assert!(!valid_bridge_name("a/b"));
    }
}
